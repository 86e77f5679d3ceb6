"""Removing what a failed or cancelled job left in the store, now or once the store is back.

A job that fails or is cancelled loses its folder ``jobs/<id>/`` (a cohort keeps its
finished images; only the folders of the images it was explaining, which have no
manifest, go). When the store is down at that moment, the job is noted in the Redis set
:data:`PENDING` and :func:`sweep_pending` removes its objects once the store answers
again: each worker's liveness loop (:mod:`~styleprobe.worker.liveness`) calls it every
beat while the set is not empty. The retention reaper (:mod:`styleprobe.reaper`) is the
backstop: it removes partial folders of ended jobs once untouched for the task time limit.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from typing import cast

from styleprobe.jobs import CANCELLED, FAILED, JobNotFoundError, JobStore
from styleprobe.reaper import MANIFEST, remove_job_objects, remove_objects
from styleprobe.storage.base import ArtifactStore, StoreError

log = logging.getLogger(__name__)
PENDING = "styleprobe:cleanup:pending"  # "<kind>:<job id>" of jobs whose objects must go


def remove_partial_images(store: ArtifactStore, cohort_id: str) -> int:
    """Remove the folders of a cohort's images that have no manifest (explained when the
    cohort stopped); finished images keep theirs. How many objects were removed."""
    folders: dict[str, list[str]] = defaultdict(list)
    for key in store.list(f"jobs/{cohort_id}-"):
        folder = key.split("/")[1]
        folders[folder].append(key)
    partial = [keys for folder, keys in folders.items()
               if f"jobs/{folder}/{MANIFEST}" not in keys]
    return sum(remove_objects(store, keys) for keys in partial)


def discard(store: ArtifactStore, jobs: JobStore, kind: str, job_id: str) -> int:
    """Remove what a failed or cancelled job left (see the module); the number of objects
    removed now (0 when the store is down and the job is left to :func:`sweep_pending`)."""
    try:
        return _remove(store, kind, job_id)
    except StoreError as exc:
        jobs.redis.sadd(PENDING, f"{kind}:{job_id}")
        log.warning("job objects left for later", extra={
            "job_id": job_id, "error": type(exc).__name__})
        return 0


def forget_deleted(store: ArtifactStore, job_id: str) -> None:
    """Remove every object of a job deleted (DeleteJob) while one of its tasks ran: what
    the task wrote after the deletion. If the store is down, the reaper's rounds take them
    (a folder without a record)."""
    try:
        removed = remove_job_objects(store, job_id)
    except StoreError as exc:
        log.warning("deleted job's objects left to the reaper", extra={
            "job_id": job_id, "error": type(exc).__name__})
        return
    log.info("task of a deleted job stopped", extra={"job_id": job_id, "objects": removed})


def sweep_pending(store: ArtifactStore, jobs: JobStore) -> int:
    """Remove the objects of the jobs noted while the store was down (those that are still
    failed or cancelled: a cohort resumed meanwhile keeps its work); the number of objects
    removed. Stops at the first store error (still down), leaving the rest noted."""
    removed = 0
    for member in sorted(cast(set[str], jobs.redis.smembers(PENDING))):
        kind, _, job_id = member.partition(":")
        try:
            state = jobs.get(job_id).state
        except JobNotFoundError:
            state = FAILED  # expired: nothing will resume it
        try:
            if state in (FAILED, CANCELLED):
                removed += _remove(store, kind, job_id)
        except StoreError as exc:
            log.info("store still down; cleanup waits", extra={"error": type(exc).__name__})
            break
        jobs.redis.srem(PENDING, member)
        log.info("job objects removed after the store came back", extra={"job_id": job_id})
    return removed


def _remove(store: ArtifactStore, kind: str, job_id: str) -> int:
    return (remove_partial_images(store, job_id) if kind == "cohort"
            else remove_job_objects(store, job_id))
