"""The explanation stages as Celery tasks: each one calls one stage of
:mod:`styleprobe.explain.engine` and passes object keys, never arrays, to the next.

Every task takes the keys written so far and the job id, and returns the keys with its
own added. It is idempotent by job id: a stage whose record is already stored (a task
redelivered after its worker died) is not redone, and a job that has ended or was
cancelled stops the chain (its artifacts are removed). The job's state, stage, progress,
result keys and time per stage are recorded in Redis (:mod:`styleprobe.jobs`) as it goes.

Model backends, the store and the Redis client are made on first use in each worker
process, after the fork, never inherited. Transient failures (the model server, the
store or Redis unreachable) are retried with backoff; any other failure, or the last
retry, fails the job with its reason and removes its artifacts. A retry that cannot be
queued (Redis, the broker, is down) gives the task's message back instead, so it is
delivered again once the broker is back (Celery's own default drops it).

The direction is single-flight: concurrent jobs that need the same direction wait on one
Redis lock, and only the first probes it; the others find it stored. The lock is a lease
renewed while probing, so a prober killed mid-way blocks the others for seconds, not for
a whole task time limit.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any, NoReturn

import redis
from celery import Task
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded
from celery.signals import worker_process_init
from redis.exceptions import LockError

from styleprobe.backends import BackendError, ModelBackend, open_backend
from styleprobe.config import Settings
from styleprobe.explain import engine
from styleprobe.explain.artifacts import job_key
from styleprobe.explain.direction import ProbeSettings, check_nuisance_names, direction_key
from styleprobe.jobs import ACTIVE, CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, JobStore
from styleprobe.metrics import count_job
from styleprobe.storage import ArtifactStore, ObjectNotFound, StoreError, open_store
from styleprobe.worker.app import STAGES, app

log = logging.getLogger(__name__)
TRANSIENT = (BackendError, StoreError, redis.ConnectionError, redis.TimeoutError)
MAX_RETRIES = 3
DIRECTION_PROBED, DIRECTION_STORED = "direction probed", "direction found stored"
# The direction lock's lease, renewed at each probe chunk: a prober that dies holds it
# this long at most; one that stalls longer may see a second prober (same result).
DIRECTION_LEASE_S = 30
PROGRESS_EVERY_S = 0.5  # least time between two progress events of one stage
# Overall progress when each stage starts; a stage ends where the next begins.
STAGE_START = {"encode": 0.05, "direction": 0.15, "traverse": 0.6, "render": 0.8,
               "manifest": 0.95}
STAGE_END = {"encode": 0.15, "direction": 0.6, "traverse": 0.8, "render": 0.95, "manifest": 1.0}


class JobStopped(Exception):  # noqa: N818 (a signal, not an error)
    """The job was cancelled or has ended while a stage ran."""


class _Process:
    """What one worker process keeps: settings, store, job store and backends by model set."""

    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self._store: ArtifactStore | None = None
        self._jobs: JobStore | None = None
        self._backends: dict[str, ModelBackend] = {}

    @property
    def store(self) -> ArtifactStore:
        if self._store is None:
            self._store = open_store(self.settings)
        return self._store

    @property
    def jobs(self) -> JobStore:
        if self._jobs is None:
            self._jobs = JobStore(self.settings.redis_url, self.settings.job_ttl_s)
        return self._jobs

    def backend(self, model_set: str) -> ModelBackend:
        if model_set not in self._backends:
            self._backends[model_set] = open_backend(self.settings, model_set)
        return self._backends[model_set]


_process = _Process()


@worker_process_init.connect
def _fresh_clients(**_: Any) -> None:
    """A forked worker process makes its own clients (gRPC channels do not survive a fork)."""
    global _process
    _process = _Process()


def worker_process() -> _Process:
    """What this worker process keeps: settings, store, job store, backends."""
    return _process


class StageTask(Task):
    """A stage of a job: fails the job when the task fails for good."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...],
                   kwargs: dict[str, Any], einfo: Any) -> None:
        job_id, stage = args[-1], self.name.rsplit(".", 1)[-1]
        if isinstance(exc, SoftTimeLimitExceeded):
            limit = _process.settings.task_soft_time_limit_s
            reason = f"stage {stage} took longer than its time limit of {limit} s"
        else:
            reason = f"stage {stage} failed: {exc}"
        log.error("job failed", extra={"job_id": job_id, "stage": stage, "error": reason})
        failed = _process.jobs.transition(job_id, ACTIVE, state=FAILED, stage=stage,
                                          error=reason, message=reason)
        record = _process.jobs.get(job_id)
        if failed:
            count_job(record.kind, FAILED)
        if record.state in (FAILED, CANCELLED):  # cancelled meanwhile
            engine.delete_job(_process.store, job_id)


def _run_stage(task: Task, job_id: str, stage: str, keys: dict[str, Any],
               work: Callable[[dict[str, Any], Callable[[float], None]], dict[str, Any]]
               ) -> dict[str, Any]:
    """Run ``work(request, progress)`` as ``stage`` of the job; the keys with its own added."""
    jobs = _process.jobs
    record = jobs.get(job_id)
    if not jobs.transition(job_id, ACTIVE, state=RUNNING, stage=stage,
                           progress=STAGE_START[stage], worker=task.request.hostname or "",
                           message=f"stage {stage} started"):
        _stop(job_id, record.state)
    if record.state == QUEUED:
        count_job(record.kind, RUNNING)
    last = [0.0]

    def progress(fraction: float) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        overall = STAGE_START[stage] + fraction * (STAGE_END[stage] - STAGE_START[stage])
        if not jobs.transition(job_id, [RUNNING], progress=overall,
                               message=f"stage {stage} {fraction:.0%}"):
            raise JobStopped(job_id)

    started = time.perf_counter()
    try:
        added = work(record.request, progress)
    except JobStopped:
        _stop(job_id, jobs.get(job_id).state)
    except TRANSIENT as exc:
        retry(task, exc, job_id=job_id, stage=stage)
    seconds = time.perf_counter() - started
    final = stage == "manifest"
    if not jobs.transition(job_id, [RUNNING], state=SUCCEEDED if final else None,
                           progress=STAGE_END[stage], keys=added,
                           stage_seconds={stage: seconds},
                           counts={"done": 1} if final else None,
                           message="job succeeded" if final else f"stage {stage} done"):
        _stop(job_id, jobs.get(job_id).state)
    if final:
        count_job(record.kind, SUCCEEDED)
    log.info("stage done", extra={"job_id": job_id, "stage": stage, "seconds": seconds})
    return {**keys, **added}


def retry(task: Task, exc: Exception, **context: str) -> NoReturn:
    """Retry ``task`` after the transient failure ``exc`` with backoff; re-raise ``exc``
    when it is not worth retrying (a missing object) or the retries are spent. If the retry
    cannot be queued (the broker is down), reject the message with requeue: it stays
    unacknowledged in Redis until it is given back (at once, or by the visibility
    timeout's sweep), never lost. ``context`` goes into the log line."""
    if isinstance(exc, ObjectNotFound) or task.request.retries >= MAX_RETRIES:
        raise exc
    log.warning("task retried", extra={**context, "task": task.name, "error": str(exc)})
    try:
        raise task.retry(exc=exc, countdown=2 ** task.request.retries,
                         max_retries=MAX_RETRIES) from exc
    except Reject as lost:
        log.warning("retry not queued; task given back", extra={"error": str(lost.reason)})
        raise Reject(lost.reason, requeue=True) from exc


def _stop(job_id: str, state: str) -> None:
    """End the chain of a job that is no longer running; a cancelled job loses its files."""
    if state == CANCELLED:
        engine.delete_job(_process.store, job_id)
    log.info("chain stopped", extra={"job_id": job_id, "state": state})
    raise Ignore()


def _probe_settings(request: dict[str, Any]) -> ProbeSettings:
    return ProbeSettings(**request["probe"])


def _stage(name: str) -> Callable[..., Any]:
    task_name, _ = STAGES[name]
    return app.task(name=task_name, base=StageTask, bind=True)


@_stage("encode")
def encode(self: Task, keys: dict[str, Any], job_id: str) -> dict[str, Any]:
    """``w = E(x)``, the reconstruction and the quality verdict."""
    def work(request: dict[str, Any], _: Callable[[float], None]) -> dict[str, Any]:
        done = job_key(job_id, "encoding.json")
        if not _process.store.exists(done):
            engine.encode(_process.backend(request["model_set"]), _process.store, job_id,
                          request["input_key"], request["target"])
        return {"input": request["input_key"], "encoding": done}
    return _run_stage(self, job_id, "encode", keys, work)


@_stage("direction")
def direction(self: Task, keys: dict[str, Any], job_id: str) -> dict[str, Any]:
    """The stored direction for the job's settings, probed once across all jobs."""
    def work(request: dict[str, Any], progress: Callable[[float], None]) -> dict[str, Any]:
        backend = _process.backend(request["model_set"])
        key, probed = probe_once(backend, request["target"], _probe_settings(request),
                                 request["orthogonalize"], progress)
        _process.jobs.transition(job_id, [RUNNING], message=DIRECTION_PROBED if probed
                                 else DIRECTION_STORED)
        return {"direction": key}
    return _run_stage(self, job_id, "direction", keys, work)


def probe_once(backend: ModelBackend, target: str, probe: ProbeSettings,
               orthogonalize: list[str], progress: Callable[[float], None]
               ) -> tuple[str, bool]:
    """The key of the stored direction for these settings, and whether this call probed
    it: single flight across workers, behind a Redis lock whose lease is renewed while
    probing."""
    names = check_nuisance_names(backend.model_set, orthogonalize)
    key = direction_key(backend.model_set, target, probe, names)
    if _process.store.exists(key):
        return key, False
    lock = _process.jobs.redis.lock(f"styleprobe:lock:{key}", timeout=DIRECTION_LEASE_S,
                                    blocking_timeout=_process.settings.task_time_limit_s)

    def probing(_stage: str, fraction: float) -> None:
        with contextlib.suppress(LockError):  # lapsed: someone else may probe too
            lock.reacquire()  # renew the lease while probing; it lapses if we die
        progress(fraction)

    # single flight: whoever waited here finds the direction stored
    if not lock.acquire():
        raise LockError(f"waited {_process.settings.task_time_limit_s} s for another "
                        f"job to probe direction {key}")
    try:
        probed = not _process.store.exists(key)
        engine.ensure_direction(backend, _process.store, target, probe, names, probing)
    finally:
        with contextlib.suppress(LockError):
            lock.release()
    return key, probed


@_stage("traverse")
def traverse(self: Task, keys: dict[str, Any], job_id: str) -> dict[str, Any]:
    """Decode and classify the λ grid (the ensemble), and search the flip."""
    def work(request: dict[str, Any], _: Callable[[float], None]) -> dict[str, Any]:
        done = job_key(job_id, "traversal.json")
        if not _process.store.exists(done):
            engine.traverse(_process.backend(request["model_set"]), _process.store, job_id,
                            keys["encoding"], keys["direction"], request["lambdas"],
                            request["search_rounds"], request["search_points"])
        return {"traversal": done}
    return _run_stage(self, job_id, "traverse", keys, work)


@_stage("render")
def render(self: Task, keys: dict[str, Any], job_id: str) -> dict[str, Any]:
    """Frames, animation, strip, plot, differences and report (CPU only)."""
    def work(_request: dict[str, Any], _: Callable[[float], None]) -> dict[str, Any]:
        outputs = engine.render(_process.store, job_id, keys["input"], keys["encoding"],
                                keys["direction"], keys["traversal"])
        return {"outputs": outputs}
    return _run_stage(self, job_id, "render", keys, work)


@_stage("manifest")
def manifest(self: Task, keys: dict[str, Any], job_id: str) -> dict[str, Any]:
    """``manifest.json``, the job's last object; the job succeeds with it."""
    def work(_request: dict[str, Any], _: Callable[[float], None]) -> dict[str, Any]:
        key = engine.write_manifest(_process.store, job_id, keys["input"], keys["encoding"],
                                    keys["direction"], keys["traversal"], keys["outputs"])
        return {"manifest": key}
    return _run_stage(self, job_id, "manifest", keys, work)
