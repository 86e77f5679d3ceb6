"""DeleteJob: a job's objects and its record removed at once, on request.

A job that has not ended is cancelled first (its workers stop at their next step). Then
every object of the job goes (:func:`styleprobe.reaper.job_object_keys`: ``jobs/<id>/``;
for a cohort also ``cohorts/<id>/`` and its images' job folders), then its record. The
objects are the job's own: a probed direction (shared, no patient data) and an upload a
job named by key (``inputs/...``: the client's, removed by retention) are kept. Objects a
stage was writing at that moment form a folder without a record, which the reaper's next
round removes. A job whose record has expired but whose objects remain is deleted all the
same; an id with neither is NOT_FOUND. The job's idempotency key is forgotten with it: a
request that sends it again creates a new job.
"""

from __future__ import annotations

import logging

import grpc

from styleprobe.api import pb
from styleprobe.explain.engine import check_job_id
from styleprobe.explain.spec import JobSpecError
from styleprobe.jobs import ACTIVE, CANCELLED, JobNotFoundError, JobStore
from styleprobe.metrics import count_job
from styleprobe.orchestrator.idempotency import release_job
from styleprobe.orchestrator.requests import RequestError, invalid
from styleprobe.reaper import remove_job_objects
from styleprobe.storage import ArtifactStore

log = logging.getLogger(__name__)


def delete_job(store: ArtifactStore, jobs: JobStore, job_id: str) -> pb.DeleteJobResponse:
    """Cancel ``job_id`` if it has not ended, remove its objects and its record."""
    if not job_id:
        raise invalid("job_id is required")
    try:
        check_job_id(job_id)
    except JobSpecError as exc:
        raise invalid(f"job_id: {exc}") from exc
    try:
        record = jobs.get(job_id)
    except JobNotFoundError:
        record = None
    if record is not None and jobs.transition(job_id, ACTIVE, state=CANCELLED,
                                              message="job cancelled to be deleted"):
        count_job(record.kind, CANCELLED)
    removed = remove_job_objects(store, job_id)
    if record is None and not removed:
        raise RequestError(grpc.StatusCode.NOT_FOUND,
                           f"no job {job_id!r}: no record and no stored object")
    jobs.delete(job_id)
    if record is not None and record.idempotency_key:
        release_job(jobs, record.idempotency_key, job_id)
    log.info("job deleted", extra={"job_id": job_id, "objects": removed,
                                   "was": record.state if record else "expired"})
    return pb.DeleteJobResponse(job_id=job_id, objects_deleted=removed)
