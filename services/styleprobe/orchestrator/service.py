"""The StyleProbe service: the RPCs of protos/styleprobe/v1 over Redis, the store and Celery.

Blocking work (Redis, S3, image decoding, Celery publishing) runs in threads so the event
loop keeps serving. Explain checks the whole request first (:mod:`.requests`); only then
does it store the preprocessed input, write the job record and queue the chain, undoing
what it did if a later step fails, so a refused request leaves nothing behind.
While the health checker's last round found a required dependency down (Redis, the store,
Triton), Explain and SubmitCohort are refused with UNAVAILABLE at once (no extra call per
request) rather than queued to fail later.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import grpc
import redis
import redis.asyncio

from styleprobe.api import pb, rpc
from styleprobe.config import Settings
from styleprobe.data.codecs import dicom_reference
from styleprobe.explain import engine
from styleprobe.explain.direction import Direction, direction_key
from styleprobe.explain.result import ExplanationResult
from styleprobe.explain.spec import AttributeSettings
from styleprobe.jobs import (
    ACTIVE,
    CANCELLED,
    QUEUED,
    JobNotFoundError,
    JobRecord,
    JobRequest,
    JobStore,
)
from styleprobe.metrics import count_job
from styleprobe.modelset import ModelSetError, list_model_sets, load_model_set
from styleprobe.orchestrator import messages
from styleprobe.orchestrator.artifacts import open_artifact
from styleprobe.orchestrator.attributes import attribute_settings, with_attributes
from styleprobe.orchestrator.cohorts import resume_cohort, submit_cohort
from styleprobe.orchestrator.deletion import delete_job
from styleprobe.orchestrator.health import HealthChecker
from styleprobe.orchestrator.idempotency import submit_once
from styleprobe.orchestrator.listing import list_jobs
from styleprobe.orchestrator.replies import JobFeed, ReplyCache, record_version
from styleprobe.orchestrator.requests import (
    RequestError,
    check_explain,
    invalid,
    model_set_named,
    spec_of,
)
from styleprobe.storage import ArtifactStore, ObjectNotFound, StoreError, validate_key
from styleprobe.tls import redis_ssl
from styleprobe.worker.app import cohort_task, explain_chain, make_app

log = logging.getLogger(__name__)
T = TypeVar("T")
WATCH_POLL_S = 0.25  # how often a watch looks for new events
MIN_DEADLINE_S = 0.5  # a call with less time left than this is not started
UNAVAILABLE_ERRORS = (redis.RedisError, StoreError)


class StyleProbeService(rpc.StyleProbeServicer):
    """The servicer; ``store`` holds artifacts, ``jobs`` the job records."""

    def __init__(self, settings: Settings, store: ArtifactStore, jobs: JobStore) -> None:
        self.settings, self.store, self.jobs = settings, store, jobs
        self.repository = Path(settings.model_repository)
        self.celery = make_app(settings)
        self.checker: HealthChecker | None = None  # set by the orchestrator: new jobs wait for it
        self.replies = ReplyCache(settings.presign_expiry_s)  # ended jobs' replies, built once
        self.feed = JobFeed(redis.asyncio.Redis.from_url(
            settings.redis_url, decode_responses=True, socket_connect_timeout=5,
            **redis_ssl(settings)), settings.watch_outage_s)  # one reader per watched job

    # --- RPCs -------------------------------------------------------------------------------

    async def Explain(self, request: pb.ExplainRequest,  # noqa: N802 (gRPC's name)
                      context: grpc.aio.ServicerContext) -> pb.Job:
        await self._refuse_unless_ready(context)
        return await self._serve(context, self._explain, request, context)

    async def FindAttributes(self, request: pb.FindAttributesRequest,  # noqa: N802
                             context: grpc.aio.ServicerContext) -> pb.Job:
        await self._refuse_unless_ready(context)
        return await self._serve(context, self._find_attributes, request, context)

    async def SubmitCohort(self, request: pb.SubmitCohortRequest,  # noqa: N802
                           context: grpc.aio.ServicerContext) -> pb.Job:
        await self._refuse_unless_ready(context)
        return await self._serve(context, self._submit_cohort, request)

    async def ResumeCohort(self, request: pb.ResumeCohortRequest,  # noqa: N802
                           context: grpc.aio.ServicerContext) -> pb.Job:
        await self._refuse_unless_ready(context)
        return await self._serve(context, lambda: messages.job_message(resume_cohort(
            request.job_id, self.store, self.jobs, self.celery)))

    async def GetJob(self, request: pb.GetJobRequest,  # noqa: N802
                     context: grpc.aio.ServicerContext) -> pb.Job:
        cached = await self.replies.current(self.feed.client, request.job_id)
        if cached is not None:  # an ended job's reply, its record unchanged
            return cached
        return await self._serve(context, self._get_job, request.job_id)

    async def CancelJob(self, request: pb.CancelJobRequest,  # noqa: N802
                        context: grpc.aio.ServicerContext) -> pb.Job:
        return await self._serve(context, self._cancel_job, request.job_id)

    async def DeleteJob(self, request: pb.DeleteJobRequest,  # noqa: N802
                        context: grpc.aio.ServicerContext) -> pb.DeleteJobResponse:
        return await self._serve(context, delete_job, self.store, self.jobs, request.job_id)

    async def GetArtifact(self, request: pb.GetArtifactRequest,  # noqa: N802
                          context: grpc.aio.ServicerContext
                          ) -> AsyncIterator[pb.ArtifactChunk]:
        artifact = await self._serve(context, open_artifact, self.store, self.jobs,
                                     request.job_id, request.name)
        while (chunk := await self._serve(context, artifact.next_message)) is not None:
            yield chunk

    async def ListModelSets(self, request: pb.ListModelSetsRequest,  # noqa: N802
                            context: grpc.aio.ServicerContext) -> pb.ListModelSetsResponse:
        return await self._serve(context, self._list_model_sets)

    async def GetDirection(self, request: pb.GetDirectionRequest,  # noqa: N802
                           context: grpc.aio.ServicerContext) -> pb.Direction:
        return await self._serve(context, self._get_direction, request)

    async def ListJobs(self, request: pb.ListJobsRequest,  # noqa: N802
                       context: grpc.aio.ServicerContext) -> pb.ListJobsResponse:
        return await self._serve(context, list_jobs, self.jobs, request)

    async def WatchJob(self, request: pb.WatchJobRequest,  # noqa: N802
                       context: grpc.aio.ServicerContext) -> AsyncIterator[pb.JobEvent]:
        job_id = request.job_id
        after, record = await self._serve(context, self._watch_start, job_id)
        yield pb.JobEvent(job=await self._serve(context, self._job, record),
                          message=f"job {record.state}")
        if record.ended:
            return
        try:
            async for events, record in self.feed.follow(job_id, after):  # shared reads
                job = messages.job_message(record)
                for event in events[:-1]:
                    yield messages.event_message(job, event)
                # the last with the job now: its explanation once it has succeeded
                job = await self._serve(context, self._job, record)
                yield messages.event_message(job, events[-1])
        except redis.RedisError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"a backing service is unavailable, retry later: {exc}")
        except JobNotFoundError:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"job {job_id!r} is gone (deleted)")

    # --- the work, in threads -----------------------------------------------------------------

    def _explain(self, request: pb.ExplainRequest, context: grpc.aio.ServicerContext) -> pb.Job:
        """A new job, or the one created under the request's idempotency key."""
        return messages.job_message(submit_once(
            self.jobs, request.idempotency_key, "explain",
            lambda job_id: self._queue_explain(job_id, request, context)))

    def _find_attributes(self, request: pb.FindAttributesRequest,
                         context: grpc.aio.ServicerContext) -> pb.Job:
        """An explain job that also finds attributes (:mod:`.attributes`)."""
        settings = attribute_settings(request.attributes)
        return messages.job_message(submit_once(
            self.jobs, request.explain.idempotency_key, "explain",
            lambda job_id: self._queue_explain(job_id, request.explain, context, settings)))

    def _queue_explain(self, job_id: str, request: pb.ExplainRequest,
                       context: grpc.aio.ServicerContext,
                       attributes: AttributeSettings | None = None) -> JobRecord:
        checked = check_explain(request, self.repository, self.store,
                                self.settings.probe_samples)
        if attributes is not None:
            checked = replace(checked, spec=with_attributes(checked.spec, self.repository,
                                                            attributes))
        remaining = context.time_remaining()
        if remaining is not None and remaining < MIN_DEADLINE_S:
            raise RequestError(grpc.StatusCode.DEADLINE_EXCEEDED,
                               "the call's deadline passed before the job could be queued; "
                               "nothing was stored")
        input_key = engine.store_input(self.store, job_id, checked.image)
        try:
            record = self.jobs.create(job_id, "explain", JobRequest(checked.spec, input_key),
                                      idempotency_key=request.idempotency_key,
                                      dicom=dicom_reference(checked.image.description))
            try:
                explain_chain(self.celery, job_id).apply_async()
            except BaseException:
                self.jobs.delete(job_id)
                raise
        except BaseException:
            engine.delete_job(self.store, job_id)
            raise
        count_job("explain", QUEUED)
        log.info("job queued", extra={"job_id": job_id, "model_set": checked.spec.model_set,
                                      "target": checked.spec.target})
        return record

    def _submit_cohort(self, request: pb.SubmitCohortRequest) -> pb.Job:
        return messages.job_message(submit_once(
            self.jobs, request.idempotency_key, "cohort",
            lambda job_id: submit_cohort(request, self.settings, self.store, self.jobs,
                                         self.celery, job_id)))

    def _record(self, job_id: str) -> JobRecord:
        if not job_id:
            raise invalid("job_id is required")
        try:
            return self.jobs.get(job_id)
        except JobNotFoundError:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"no job {job_id!r} (unknown, or expired after "
                               f"{self.settings.job_ttl_s // 3600} h)") from None

    def _job(self, record: JobRecord) -> pb.Job:
        """The job message, with the explanation (or the cohort's summary) once written;
        an ended job's from :attr:`replies` (built once)."""
        return self.replies.reply(record, self._build_job)

    def _build_job(self, record: JobRecord) -> pb.Job:
        if record.kind == "cohort":
            url = self.store.presigned_url
            return messages.job_message(record, cohort=messages.cohort_message(record, url))
        manifest = record.object_key("manifest")
        if record.state != "succeeded" or not manifest:
            return messages.job_message(record)
        try:
            result = ExplanationResult.from_json(self.store.get(manifest))
        except ObjectNotFound:  # removed by retention (the bucket's rules) or by hand
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"job {record.job_id}'s results are no longer stored") from None
        return messages.job_message(
            record, messages.explanation_message(result, self.store.presigned_url))

    def _get_job(self, job_id: str) -> pb.Job:
        version = record_version(self.jobs, job_id) if job_id else ""
        cached = self.replies.lookup(job_id, version) if version else None
        if cached is not None:
            return cached
        record = self._record(job_id)
        return self.replies.reply(record, self._build_job, version)

    def _watch_start(self, job_id: str) -> tuple[str, JobRecord]:
        self._record(job_id)  # NOT_FOUND before anything else
        after = self.jobs.last_event_id(job_id)
        return after, self._record(job_id)

    def _cancel_job(self, job_id: str) -> pb.Job:
        record = self._record(job_id)
        if not self.jobs.transition(job_id, ACTIVE, state=CANCELLED,
                                    message="job cancelled on request"):
            ended = self._record(job_id)
            raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"job {job_id} has already {ended.state} and cannot be "
                               "cancelled")
        count_job(record.kind, CANCELLED)
        if record.kind == "cohort":  # the summary of the images that finished
            cohort_task(self.celery, "summary", job_id).apply_async()
        log.info("job cancelled", extra={"job_id": job_id, "was": record.state})
        return messages.job_message(self._record(job_id))

    def _list_model_sets(self) -> pb.ListModelSetsResponse:
        sets = []
        for name in list_model_sets(self.repository):
            try:
                sets.append(messages.model_set_message(load_model_set(self.repository, name)))
            except ModelSetError as exc:
                log.warning("model set skipped", extra={"model_set": name, "error": str(exc)})
        return pb.ListModelSetsResponse(model_sets=sets)

    def _get_direction(self, request: pb.GetDirectionRequest) -> pb.Direction:
        if request.key:
            key = request.key
            try:
                validate_key(key)
            except StoreError as exc:
                raise invalid(str(exc)) from exc
            if not key.startswith("directions/"):
                raise invalid(f"{key!r} is not a direction key (directions/<sha256>.json)")
        else:
            model_set = model_set_named(self.repository, request.model_set)
            spec = spec_of(model_set, request.target, list(request.orthogonalize),
                           request.probe, self.settings.probe_samples, "")
            key = direction_key(model_set, spec.target, spec.probe, list(spec.orthogonalize))
        try:
            raw = json.loads(self.store.get(key))
        except ObjectNotFound:
            raise RequestError(grpc.StatusCode.NOT_FOUND,
                               f"direction {key} has not been probed yet (an Explain with "
                               "these settings probes it)") from None
        return messages.direction_message(Direction(**raw))

    # --- errors -------------------------------------------------------------------------------

    async def _refuse_unless_ready(self, context: grpc.aio.ServicerContext) -> None:
        """UNAVAILABLE while the health checker's last round found a dependency down."""
        failing = self.checker.failing if self.checker else None
        if failing:
            names = sorted(failing)
            verb = "is" if len(names) == 1 else "are"
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"the service is not ready: {' and '.join(names)} {verb} "
                                "unreachable; retry later")

    async def _serve(self, context: grpc.aio.ServicerContext, work: Callable[..., T],
                     *args: Any, redis_outage_s: float = 0.0) -> T:
        """``work(*args)`` in a thread; its RequestError, or an outage, as a gRPC status.
        A Redis outage (a restart, a failover) is waited out for ``redis_outage_s`` first:
        open streams pass ``watch_outage_s``."""
        deadline, waiting = time.monotonic() + redis_outage_s, False
        while True:
            try:
                return await asyncio.to_thread(work, *args)
            except RequestError as exc:
                await context.abort(exc.code, str(exc))
            except UNAVAILABLE_ERRORS as exc:
                if isinstance(exc, redis.RedisError) and time.monotonic() < deadline:
                    if not waiting:
                        log.warning("redis unavailable, waiting", extra={
                            "error": str(exc), "wait_s": redis_outage_s})
                    waiting = True
                    await asyncio.sleep(WATCH_POLL_S)
                    continue
                log.error("backing service unavailable", extra={"error": str(exc)})
                await context.abort(grpc.StatusCode.UNAVAILABLE,
                                    f"a backing service is unavailable, retry later: {exc}")
            raise AssertionError("abort returns only by raising")  # pragma: no cover

