"""The explanation stages as Celery tasks: one task per stage of
:data:`styleprobe.explain.engine.STAGES`, each running that stage and passing object
keys (:class:`~styleprobe.explain.engine.JobKeys`), never arrays, to the next.

Every task takes the keys written so far and the job id, and returns the keys with its
own added. It is idempotent by job id: a stage whose record is already stored (a task
redelivered after its worker died) is not redone, and a job that has ended or was
cancelled stops the chain (its artifacts are removed). The job's state, stage, progress,
result keys and time per stage are recorded in Redis (:mod:`styleprobe.jobs`) as it goes.

Model backends, the store and the Redis client are made on first use in each worker
process, after the fork, never inherited. The store and the Triton backends wait out an
outage of S3 or Triton for their time budgets (``STYLEPROBE_S3_RETRY_S``,
``STYLEPROBE_TRITON_RETRY_S``) while the job shows ``paused`` with the reason
(:mod:`~styleprobe.worker.pausing`). Transient failures that remain (the budget spent,
Redis unreachable) are retried with backoff; any other failure, or the last retry, fails
the job with its reason and removes its artifacts (or, the store being down, leaves them
to :mod:`~styleprobe.worker.cleanup` once it is back). A retry that cannot be
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
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import redis
from celery import Task, shared_task
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded
from celery.signals import worker_process_init
from redis.exceptions import LockError

from styleprobe.backends import BackendError, ModelBackend, open_backend
from styleprobe.config import Settings
from styleprobe.explain import engine
from styleprobe.explain.engine import STAGES, JobKeys, Stage, StageContext
from styleprobe.jobs import (
    ACTIVE,
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    WORKING,
    JobNotFoundError,
    JobStore,
)
from styleprobe.metrics import count_job
from styleprobe.storage import ArtifactStore, ObjectNotFound, StoreError, open_store
from styleprobe.tls import redis_ssl
from styleprobe.worker import cleanup
from styleprobe.worker.app import task_name
from styleprobe.worker.pausing import JobPauser

log = logging.getLogger(__name__)
TRANSIENT = (BackendError, StoreError, redis.ConnectionError, redis.TimeoutError)
MAX_RETRIES = 3
# The direction lock's lease, renewed at each probe chunk: a prober that dies holds it
# this long at most; one that stalls longer may see a second prober (same result).
DIRECTION_LEASE_S = 30
PROGRESS_EVERY_S = 0.5  # least time between two progress events of one stage


class JobStopped(Exception):  # noqa: N818 (a signal, not an error)
    """The job was cancelled or has ended while a stage ran."""


class _Process:
    """What one worker process keeps: settings, store, job store and backends by model set."""

    def __init__(self) -> None:
        self.settings = Settings.from_env()
        self._store: ArtifactStore | None = None
        self._jobs: JobStore | None = None
        self._backends: dict[str, ModelBackend] = {}
        self.pauser = JobPauser(lambda: self.jobs)

    @property
    def store(self) -> ArtifactStore:
        if self._store is None:
            self._store = open_store(self.settings, listener=self.pauser)
        return self._store

    @property
    def jobs(self) -> JobStore:
        if self._jobs is None:
            self._jobs = JobStore(self.settings.redis_url, self.settings.job_ttl_s,
                                  **redis_ssl(self.settings))
        return self._jobs

    def backend(self, model_set: str) -> ModelBackend:
        if model_set not in self._backends:
            self._backends[model_set] = open_backend(self.settings, model_set,
                                                     listener=self.pauser)
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
    """A stage of a job: fails the job when the task fails for good; stops quietly, and
    removes what it wrote, when the job was deleted meanwhile."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except JobNotFoundError:  # deleted (DeleteJob) while the stage ran
            cleanup.forget_deleted(_process.store, args[-1])
            raise Ignore() from None

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
            cleanup.discard(_process.store, _process.jobs, "explain", job_id)


def _span(stage: Stage) -> tuple[float, float]:
    """The job's overall progress when ``stage`` starts and when it ends."""
    index = STAGES.index(stage)
    return index / len(STAGES), (index + 1) / len(STAGES)


def _run_stage(task: Task, job_id: str, stage: Stage, keys: dict[str, Any]) -> dict[str, Any]:
    """Run ``stage`` of the job; the job's keys with the stage's record added."""
    jobs = _process.jobs
    record = jobs.get(job_id)
    start, end = _span(stage)
    if not jobs.transition(job_id, ACTIVE, state=RUNNING, stage=stage.name, progress=start,
                           worker=task.request.hostname or "",
                           message=f"stage {stage.name} started"):
        _stop(job_id, record.state)
    if record.state == QUEUED:
        count_job(record.kind, RUNNING)
    last = [0.0]

    def progress(fraction: float) -> None:
        now = time.monotonic()
        if now - last[0] < PROGRESS_EVERY_S:
            return
        last[0] = now
        if not jobs.transition(job_id, WORKING, progress=start + fraction * (end - start),
                               message=f"stage {stage.name} {fraction:.0%}"):
            raise JobStopped(job_id)

    def note(message: str) -> None:
        jobs.transition(job_id, WORKING, message=message)

    spec = record.request.spec
    context = StageContext(job_id, spec, _process.store,
                           lambda: _process.backend(spec.model_set), progress,
                           single_flight=direction_lock, note=note)
    started = time.perf_counter()
    try:
        with _process.pauser.working_on(job_id):
            done = engine.run_stage(
                stage, context, JobKeys.from_dict(keys or {"input": record.request.input_key}))
    except JobStopped:
        _stop(job_id, jobs.get(job_id).state)
    except TRANSIENT as exc:
        retry(task, exc, job_id=job_id, stage=stage.name)
    seconds = time.perf_counter() - started
    final = stage == STAGES[-1]
    if not jobs.transition(job_id, WORKING, state=SUCCEEDED if final else RUNNING,
                           progress=end, keys=done.to_dict(),
                           stage_seconds={stage.name: seconds},
                           counts={"done": 1} if final else None,
                           message="job succeeded" if final else f"stage {stage.name} done"):
        _stop(job_id, jobs.get(job_id).state)
    if final:
        count_job(record.kind, SUCCEEDED)
    log.info("stage done", extra={"job_id": job_id, "stage": stage.name, "seconds": seconds})
    return done.to_dict()


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
        cleanup.discard(_process.store, _process.jobs, "explain", job_id)
    log.info("chain stopped", extra={"job_id": job_id, "state": state})
    raise Ignore()


@contextlib.contextmanager
def direction_lock(key: str) -> Iterator[Callable[[], None]]:
    """Single flight for probing the direction ``key`` across workers: a Redis lock whose
    lease (:data:`DIRECTION_LEASE_S`) the prober renews with the function it yields, so a
    prober that dies blocks the others for seconds, not for a whole task time limit."""
    limit = _process.settings.task_time_limit_s
    lock = _process.jobs.redis.lock(f"styleprobe:lock:{key}", timeout=DIRECTION_LEASE_S,
                                    blocking_timeout=limit)
    if not lock.acquire():
        raise LockError(f"waited {limit} s for another job to probe direction {key}")

    def renew() -> None:
        with contextlib.suppress(LockError):  # lapsed: someone else may probe too
            lock.reacquire()

    try:
        yield renew
    finally:
        with contextlib.suppress(LockError):
            lock.release()


def _stage_task(stage: Stage) -> Task:
    """The Celery task ``styleprobe.<stage>`` that runs ``stage`` of a job."""

    @shared_task(name=task_name(stage), base=StageTask, bind=True)
    def run(self: Task, keys: dict[str, Any], job_id: str) -> dict[str, Any]:
        return _run_stage(self, job_id, stage, keys)

    run.__doc__ = f"Stage {stage.name} of an explain job."
    return run


STAGE_TASKS = {stage.name: _stage_task(stage) for stage in STAGES}
