"""SubmitCohort: checking a cohort request, recording the cohort and queueing its work.

The images are named by a prefix of the bucket, a list of object keys, or sent inline (a
small batch, stored under ``cohorts/<id>/inputs/``). Nothing is decoded here: an image
that cannot be read is counted failed by the worker, with its reason, and the cohort goes
on. What is recorded before the job is queued, all under ``cohorts/<job id>/``: the
inline images, ``images.json`` (the cohort's object keys, in order) and ``cohort.json``
(:class:`~styleprobe.cohort.ledger.CohortSpec`). If any step fails, they are removed
again, so a refused or failed request leaves nothing behind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import grpc
from celery import Celery

from styleprobe.api import pb
from styleprobe.cohort.ledger import (
    DEFAULT_CHUNK_SIZE,
    CohortError,
    CohortLedger,
    CohortSpec,
    cohort_key,
)
from styleprobe.config import Settings
from styleprobe.explain.artifacts import put_json
from styleprobe.explain.spec import JobSpec
from styleprobe.jobs import (
    CANCELLED,
    FAILED,
    QUEUED,
    JobNotFoundError,
    JobRecord,
    JobRequest,
    JobStore,
    new_job_id,
)
from styleprobe.metrics import count_job
from styleprobe.orchestrator.attributes import attribute_settings, with_attributes
from styleprobe.orchestrator.requests import RequestError, invalid, job_spec, model_set_named
from styleprobe.storage import ArtifactStore, StoreError, validate_key
from styleprobe.worker.app import cohort_task

log = logging.getLogger(__name__)
MAX_IMAGES = 100_000  # images in one cohort
MAX_INLINE_IMAGES = 64  # an inline batch: more, or more bytes, go through the bucket
MAX_INLINE_BYTES = 8 * 1024 * 1024
RESERVED_PREFIXES = ("jobs/", "cohorts/", "directions/")  # the service's own objects


@dataclass
class CohortJob:
    """A checked SubmitCohort request: its settings, images and inline images to store."""

    spec: JobSpec
    threshold: float
    images: list[str]
    inline: dict[str, bytes] = field(default_factory=dict)

    def cohort_spec(self, cohort_id: str) -> CohortSpec:
        return CohortSpec(cohort_id=cohort_id, job=self.spec, threshold=self.threshold)


def images_key(cohort_id: str) -> str:
    """The key of the cohort's list of images."""
    return cohort_key(cohort_id, "images.json")


def _own_key(key: str, what: str) -> str:
    try:
        validate_key(key)
    except StoreError as exc:
        raise invalid(f"{what}: {exc}") from exc
    if key.startswith(RESERVED_PREFIXES):
        raise invalid(f"{what} {key!r} lies under {', '.join(RESERVED_PREFIXES)}: the "
                      "service's own objects are not cohort images")
    return key


def _prefix_images(prefix: str, store: ArtifactStore) -> list[str]:
    if not prefix:
        raise invalid("prefix is empty: name a folder of the bucket, e.g. 'inputs/study-7/'")
    try:
        validate_key(prefix.rstrip("/") or prefix)
    except StoreError as exc:
        raise invalid(f"prefix: {exc}") from exc
    if any(prefix.startswith(own) or own.startswith(prefix) for own in RESERVED_PREFIXES):
        raise invalid(f"prefix {prefix!r} covers objects under "
                      f"{', '.join(RESERVED_PREFIXES)}: the service's own objects are not "
                      "cohort images")
    try:
        images = store.list(prefix)
    except StoreError as exc:
        raise RequestError(grpc.StatusCode.UNAVAILABLE,
                           f"the object store cannot be listed: {exc}") from exc
    if not images:
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"no objects under prefix {prefix!r}")
    return images


def _listed_images(keys: list[str]) -> list[str]:
    if not keys:
        raise invalid("keys is empty: list at least one object key")
    seen: set[str] = set()
    for key in keys:
        _own_key(key, "image key")
        if key in seen:
            raise invalid(f"image key {key!r} is listed twice")
        seen.add(key)
    return keys


def _inline_images(batch: pb.InlineImages, cohort_id: str) -> dict[str, bytes]:
    images = list(batch.images)
    if not images:
        raise invalid("inline holds no image")
    size = sum(len(image.data) for image in images)
    if len(images) > MAX_INLINE_IMAGES or size > MAX_INLINE_BYTES:
        raise invalid(f"an inline batch holds at most {MAX_INLINE_IMAGES} images and "
                      f"{MAX_INLINE_BYTES >> 20} MiB, got {len(images)} images and "
                      f"{size / 2**20:.1f} MiB; upload larger cohorts to the bucket and "
                      "submit their prefix")
    stored: dict[str, bytes] = {}
    for index, image in enumerate(images):
        name = image.filename or f"image-{index:04d}"
        if "/" in name:
            raise invalid(f"inline filename {name!r} must not contain '/'")
        key = cohort_key(cohort_id, f"inputs/{name}")
        try:
            validate_key(key)
        except StoreError as exc:
            raise invalid(f"inline filename {name!r} cannot be used: {exc}") from exc
        if key in stored:
            raise invalid(f"inline filename {name!r} is used twice")
        stored[key] = image.data
    return stored


def check_cohort(request: pb.SubmitCohortRequest, repository: Path, store: ArtifactStore,
                 default_samples: int, cohort_id: str) -> CohortJob:
    """Check every field of a SubmitCohort request (the images are listed, not read)."""
    model_set = model_set_named(repository, request.model_set)
    spec = job_spec(model_set, request, default_samples)
    if request.HasField("attributes"):
        spec = with_attributes(spec, repository, attribute_settings(request.attributes))
    which = request.WhichOneof("images")
    inline: dict[str, bytes] = {}
    if which == "prefix":
        images = _prefix_images(request.prefix, store)
    elif which == "keys":
        images = _listed_images(list(request.keys.keys))
    elif which == "inline":
        inline = _inline_images(request.inline, cohort_id)
        images = list(inline)
    else:
        raise invalid("the images are missing: set prefix (a folder of the bucket), keys "
                      "(object keys) or inline (a small batch of files)")
    if len(images) > MAX_IMAGES:
        raise invalid(f"a cohort holds at most {MAX_IMAGES} images, got {len(images)}")
    return CohortJob(spec=spec, threshold=model_set.classifier.threshold,
                     images=images, inline=inline)


def submit_cohort(request: pb.SubmitCohortRequest, settings: Settings, store: ArtifactStore,
                  jobs: JobStore, celery: Celery, job_id: str = "") -> JobRecord:
    """Check, record and queue a cohort (under ``job_id``, default a new one); its job
    record (QUEUED)."""
    job_id = job_id or new_job_id()
    checked = check_cohort(request, Path(settings.model_repository), store,
                           settings.probe_samples, job_id)
    try:
        for key, data in checked.inline.items():
            store.put(key, data)
        put_json(store, images_key(job_id), {"images": checked.images})
        render = (request.render_images if request.HasField("render_images")
                  else settings.cohort_render)
        CohortLedger(store, job_id).start(replace(checked.cohort_spec(job_id), render=render))
        request_record = JobRequest(checked.spec, images_key=images_key(job_id),
                                    chunk_size=DEFAULT_CHUNK_SIZE)
        record = jobs.create(job_id, "cohort", request_record, total=len(checked.images),
                             idempotency_key=request.idempotency_key)
        try:
            cohort_task(celery, "prepare", job_id, task_id=f"{job_id}-prepare").apply_async()
        except BaseException:
            jobs.delete(job_id)
            raise
    except BaseException:
        for key in store.list(cohort_key(job_id, "")):
            store.delete(key)
        raise
    count_job("cohort", QUEUED)
    log.info("cohort queued", extra={"job_id": job_id, "images": len(checked.images),
                                     "model_set": checked.spec.model_set,
                                     "target": checked.spec.target})
    return record


RESUMABLE = (FAILED, CANCELLED)
SUMMARY_KEYS = ("csv", "parquet", "report")  # a cancelled cohort's summary, rewritten


def resume_cohort(job_id: str, store: ArtifactStore, jobs: JobStore, celery: Celery
                  ) -> JobRecord:
    """Queue a cohort that failed or was cancelled again under its id; its job record
    (QUEUED). Its finished images keep their rows and counts and are skipped; the others
    are explained again; the summary is written anew at the end. NOT_FOUND for an unknown
    job, FAILED_PRECONDITION for one that is not a failed or cancelled cohort."""
    if not job_id:
        raise invalid("job_id is required")
    try:
        record = jobs.get(job_id)
    except JobNotFoundError:
        raise RequestError(grpc.StatusCode.NOT_FOUND, f"no job {job_id!r}") from None
    if record.kind != "cohort":
        raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                           f"job {job_id} is an {record.kind} job: only a cohort can be "
                           "resumed (submit the image again)")
    if record.state not in RESUMABLE:
        raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                           f"cohort {job_id} is {record.state}: only a failed or cancelled "
                           "cohort can be resumed")
    ledger = CohortLedger(store, job_id)
    try:
        ledger.spec()
        finished = ledger.finished_count()
    except CohortError:
        raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                           f"cohort {job_id} has no record in the store any more (removed "
                           "after the retention period?): submit it again") from None
    total = record.counts.get("total", 0)
    if not jobs.reopen(job_id, RESUMABLE, keys=SUMMARY_KEYS,
                       message=f"cohort resumed: {finished} of {total} images finished "
                               "before are kept"):
        raise RequestError(grpc.StatusCode.FAILED_PRECONDITION,
                           f"cohort {job_id} changed meanwhile (resumed twice at once?)")
    run = jobs.get(job_id).run
    try:
        cohort_task(celery, "prepare", job_id,
                    task_id=f"{job_id}-prepare-run{run}").apply_async()
    except BaseException:
        jobs.transition(job_id, [QUEUED], state=record.state, error=record.error,
                        message="the resumed cohort could not be queued")
        raise
    count_job("cohort", QUEUED)
    log.info("cohort resumed", extra={"job_id": job_id, "run": run, "finished": finished,
                                      "total": total})
    return jobs.get(job_id)
