"""A cohort's tasks: prepare, its chunks, and the summary.

- ``prepare`` (gpu queue) probes the direction once (single flight, as an explain job's
  direction stage), records the indices of the cohort's chunks in the Redis set
  ``styleprobe:job:<id>:chunks`` and then queues one ``chunk`` task per
  :data:`~styleprobe.cohort.ledger.DEFAULT_CHUNK_SIZE` images or a few more (even chunks,
  none short: :func:`~styleprobe.cohort.runner.even_chunks`).
- ``chunk`` (gpu queue) runs the stages that call models for the images of its chunk
  that have no row in the cohort's ledger yet, each as a single-image job, each model
  call batched across the chunk (:class:`~styleprobe.cohort.runner.CohortRunner`); an
  image that cannot be read gets a failed row with its reason. It then queues the
  chunk's ``outputs`` task.
- ``outputs`` (cpu queue) renders those images and writes their manifests and rows. Each
  finished image is counted once on the job (:meth:`~styleprobe.jobs.JobStore.
  count_image`), which also tells a task that the cohort was cancelled. A chunk whose
  images all have rows removes its index from the set; the one that empties it queues
  the summary.
- ``summary`` (cpu queue) writes ``summary.csv``, ``summary.parquet`` and ``report.html``
  from the rows and ends the job; after a cancel it writes the summary of what finished.

A cohort that failed or was cancelled can be resumed under its id
(:func:`styleprobe.orchestrator.cohorts.resume_cohort`): the job is queued again with its
run counted up, ``prepare`` runs again and queues the chunks with that run, and a chunk
task of an earlier run is skipped. A task's job is ``paused`` while the store or Triton is
waited for (:mod:`~styleprobe.worker.pausing`); paused is a working state here.

Every task may run twice (its worker died before acknowledging it: ``acks_late``): the
ledger skips finished images, rows are keyed by image, counts are per image, the chunk
set is a set, the summary is the same when written twice and the job ends once.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Task, shared_task
from celery.exceptions import Ignore, SoftTimeLimitExceeded

from styleprobe.cohort.ledger import CohortLedger
from styleprobe.cohort.rows import ImageRow
from styleprobe.cohort.runner import CohortRunner, even_chunks
from styleprobe.cohort.summary import write_summary
from styleprobe.explain.artifacts import get_json
from styleprobe.explain.engine import JobKeys
from styleprobe.jobs import (
    ACTIVE,
    CANCELLED,
    FAILED,
    PREFIX,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    WORKING,
    JobNotFoundError,
)
from styleprobe.logs import log_context
from styleprobe.metrics import count_job
from styleprobe.worker import cleanup
from styleprobe.worker.app import COHORT_TASKS, cohort_task
from styleprobe.worker.tasks import (
    TRANSIENT,
    JobStopped,
    direction_lock,
    retry,
    worker_process,
)

log = logging.getLogger(__name__)


def chunks_key(job_id: str) -> str:
    """The Redis set of a cohort's chunks not finished yet."""
    return f"{PREFIX}{job_id}:chunks"


class CohortTask(Task):
    """A task of a cohort: fails the cohort when the task fails for good (its finished
    images are kept); stops quietly, and removes what it wrote, when the cohort was
    deleted meanwhile."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except JobNotFoundError:  # deleted (DeleteJob) while the task ran
            cleanup.forget_deleted(worker_process().store, args[0])
            raise Ignore() from None

    def on_failure(self, exc: BaseException, task_id: str, args: tuple[Any, ...],
                   kwargs: dict[str, Any], einfo: Any) -> None:
        job_id, step = args[0], self.name.rsplit(".", 1)[-1]
        process = worker_process()
        if isinstance(exc, SoftTimeLimitExceeded):
            reason = (f"cohort {step} took longer than its time limit of "
                      f"{process.settings.task_soft_time_limit_s} s")
        else:
            reason = f"cohort {step} failed: {exc}"
        log.error("cohort failed", extra={"job_id": job_id, "stage": step, "error": reason})
        if process.jobs.transition(job_id, ACTIVE, state=FAILED, error=reason, message=reason):
            count_job("cohort", FAILED)
        if process.jobs.get(job_id).state in (FAILED, CANCELLED):
            cleanup.discard(process.store, process.jobs, "cohort", job_id)


def _task(name: str) -> Any:
    return shared_task(name=COHORT_TASKS[name][0], base=CohortTask, bind=True)


def _runner(job_id: str) -> CohortRunner:
    """The cohort's runner in this worker process (the store's objects as its images)."""
    process = worker_process()
    store = process.store
    ledger = CohortLedger(store, job_id)
    return CohortRunner(store, ledger, store.get,
                        lambda: process.backend(ledger.spec().job.model_set),
                        single_flight=direction_lock)


@_task("prepare")
def prepare(self: Task, job_id: str) -> None:
    """Probe the cohort's direction once, then queue its chunks."""
    process = worker_process()
    jobs, store = process.jobs, process.store
    record = jobs.get(job_id)
    with log_context(job_id=job_id):
        if not jobs.transition(job_id, ACTIVE, state=RUNNING, stage="prepare",
                               worker=self.request.hostname or "",
                               message="cohort started: the direction is prepared"):
            log.info("cohort not started", extra={"state": record.state})
            raise Ignore()
        if record.state == QUEUED:
            count_job("cohort", RUNNING)
        request = record.request
        started = time.perf_counter()
        try:
            with process.pauser.working_on(job_id):
                runner = _runner(job_id)
                key, probed = runner.prepare(runner.spec)
                images = get_json(store, request.images_key)["images"]
        except TRANSIENT as exc:
            retry(self, exc, job_id=job_id)
        chunks = even_chunks(images, request.chunk_size)
        with jobs.redis.pipeline() as pipe:  # recorded before any chunk can finish
            pipe.sadd(chunks_key(job_id), *range(len(chunks)))
            pipe.expire(chunks_key(job_id), jobs.ttl_s)
            pipe.execute()
        for index, images_of_chunk in enumerate(chunks):
            cohort_task(self.app, "chunk", job_id, index, images_of_chunk, record.run,
                        task_id=_task_id(job_id, "chunk", index, record.run)).apply_async()
        seconds = time.perf_counter() - started
        jobs.transition(job_id, WORKING, stage="images", keys={"direction": key},
                        stage_seconds={"prepare": seconds},
                        message=f"direction {'probed' if probed else 'found stored'}; "
                                f"{len(chunks)} chunk(s) of {len(images)} images queued")
        log.info("cohort prepared", extra={"chunks": len(chunks), "seconds": seconds})


@_task("chunk")
def chunk(self: Task, job_id: str, index: int, images: list[str], run: int = 0) -> None:
    """Run the model stages of the chunk's unfinished images, then queue their outputs."""
    process = worker_process()
    jobs = process.jobs
    with log_context(job_id=job_id), process.pauser.working_on(job_id):
        _running(job_id, index, run)
        runner = _runner(job_id)
        ready: list[tuple[str, dict[str, Any]]] = []
        try:
            for image, started in zip(images, runner.run_models(images), strict=True):
                if isinstance(started, JobKeys):
                    ready.append((image, started.to_dict()))
                else:
                    _count(job_id, started or runner.ledger.row(image))
        except JobStopped:
            log.info("chunk stopped", extra={"chunk": index, "state": jobs.get(job_id).state})
            raise Ignore() from None
        except TRANSIENT as exc:
            retry(self, exc, job_id=job_id)
        if ready:
            cohort_task(self.app, "outputs", job_id, index, ready, run,
                        task_id=_task_id(job_id, "outputs", index, run)).apply_async()
        else:
            _chunk_done(self, job_id, index)


@_task("outputs")
def outputs(self: Task, job_id: str, index: int, ready: list[tuple[str, dict[str, Any]]],
            run: int = 0) -> None:
    """Render the chunk's explained images and record their rows; queue the summary after
    the cohort's last chunk."""
    process = worker_process()
    jobs = process.jobs
    with log_context(job_id=job_id), process.pauser.working_on(job_id):
        _running(job_id, index, run)
        runner = _runner(job_id)
        try:
            for image, keys in ready:
                row = (runner.ledger.row(image) if runner.ledger.is_finished(image)
                       else runner.run_outputs(image, JobKeys.from_dict(keys)))
                _count(job_id, row)
        except JobStopped:
            log.info("chunk stopped", extra={"chunk": index, "state": jobs.get(job_id).state})
            raise Ignore() from None
        except TRANSIENT as exc:
            retry(self, exc, job_id=job_id)
        _chunk_done(self, job_id, index)


def _task_id(job_id: str, step: str, index: int, run: int) -> str:
    """A chunk task's id: ``<job>-<step>-<index>``, with ``-run<n>`` in a resumed run."""
    return f"{job_id}-{step}-{index}" + (f"-run{run}" if run else "")


def _running(job_id: str, index: int, run: int) -> None:
    """Go on only while the cohort runs or is paused, in the run that queued the task (a
    task left from before a resume is skipped); Ignore otherwise."""
    record = worker_process().jobs.get(job_id)
    if record.state not in WORKING or record.run != run:
        log.info("chunk skipped", extra={"chunk": index, "state": record.state,
                                         "run": run, "job_run": record.run})
        raise Ignore()


def _count(job_id: str, row: ImageRow) -> None:
    """Count a finished image on the job, once; JobStopped if the cohort stopped running."""
    message = f"image {row.image} {row.status}" + (f": {row.error}" if row.error else "")
    if not worker_process().jobs.count_image(job_id, row.image, row.status, message):
        raise JobStopped(job_id)


def _chunk_done(task: Task, job_id: str, index: int) -> None:
    """Mark the chunk finished; the task that finishes the last chunk queues the summary."""
    jobs = worker_process().jobs
    with jobs.redis.pipeline() as pipe:
        pipe.srem(chunks_key(job_id), index)
        pipe.scard(chunks_key(job_id))
        _, remaining = pipe.execute()
    log.info("chunk done", extra={"chunk": index, "chunks_left": remaining})
    if remaining == 0:
        cohort_task(task.app, "summary", job_id).apply_async()


@_task("summary")
def summary(self: Task, job_id: str) -> None:
    """Write the cohort's summary from its rows; the job succeeds with it (a cancelled
    job keeps its state and gets the summary of what finished)."""
    process = worker_process()
    jobs, store = process.jobs, process.store
    record = jobs.get(job_id)
    with log_context(job_id=job_id):
        pending_chunks = jobs.redis.scard(chunks_key(job_id))
        if record.state not in (*WORKING, CANCELLED) or (record.state in WORKING
                                                          and pending_chunks):
            log.info("summary not due", extra={"state": record.state,
                                               "chunks_left": pending_chunks})
            raise Ignore()
        started = time.perf_counter()
        try:
            with process.pauser.working_on(job_id):
                written = write_summary(CohortLedger(store, job_id),
                                        get_json(store, record.request.images_key)["images"])
        except TRANSIENT as exc:
            retry(self, exc, job_id=job_id)
        counts = {"done": written.done, "failed": written.failed,
                  "unreliable": written.unreliable, "flipped": written.flipped}
        seconds = {"summary": time.perf_counter() - started}
        if jobs.transition(job_id, WORKING, state=SUCCEEDED, stage="summary", progress=1.0,
                           keys=written.outputs, counts=counts, stage_seconds=seconds,
                           message=f"cohort succeeded: {written.done} explained, "
                                   f"{written.failed} failed"):
            count_job("cohort", SUCCEEDED)
        else:
            jobs.transition(job_id, [CANCELLED], keys=written.outputs, counts=counts,
                            stage_seconds=seconds,
                            message=f"summary of the cancelled cohort: {written.done} "
                                    f"explained, {written.failed} failed, "
                                    f"{written.pending} not done")
        log.info("cohort summary written", extra={"total": written.total})
