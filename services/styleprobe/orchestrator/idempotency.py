"""Idempotency keys: a request that carries a key already seen returns the existing job.

A client's key (``idempotency_key`` of Explain and SubmitCohort) is claimed in Redis with
one ``SET NX`` of ``styleprobe:idempotency:<sha256 of the key>`` to ``<job id> <time>``
before anything is stored, so of two concurrent retries exactly one creates the job; the
other waits for that job's record to appear and returns it. A claim whose request is then
refused (or fails) is released, so a corrected retry can create the job. The claim expires
with the job record (both ``job_ttl_s``). A claim left by a job that was deleted, older
than :data:`PENDING_S`, is taken over.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import grpc

from styleprobe.jobs import JobNotFoundError, JobRecord, JobStore, new_job_id
from styleprobe.orchestrator.requests import RequestError, invalid

KEY_PREFIX = "styleprobe:idempotency:"
MAX_KEY_CHARS = 200
PENDING_S = 30.0  # longest a claimed request takes to write its job record
POLL_S = 0.05

# KEYS: the claim. ARGV: the claim's expected value. Deletes it only if it still holds that
# value (a request releases its own claim, never a later one).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def check_key(key: str) -> str:
    """``key`` if usable (printable, at most :data:`MAX_KEY_CHARS` characters; "" for
    none); else INVALID_ARGUMENT."""
    if len(key) > MAX_KEY_CHARS:
        raise invalid(f"idempotency_key is {len(key)} characters long; at most "
                      f"{MAX_KEY_CHARS} are allowed")
    if not key.isprintable() or (key and not key.strip()):
        raise invalid("idempotency_key must consist of printable characters (no control "
                      "characters, not only spaces)")
    return key


def claim_name(key: str) -> str:
    """The Redis key of the claim of ``key``."""
    return KEY_PREFIX + hashlib.sha256(key.encode()).hexdigest()


def job_of_key(jobs: JobStore, key: str) -> JobRecord | None:
    """The job created under ``key``, if its record exists."""
    value = jobs.redis.get(claim_name(key))
    if not value:
        return None
    try:
        return jobs.get(str(value).split(" ", 1)[0])
    except JobNotFoundError:
        return None


def submit_once(jobs: JobStore, key: str, kind: str, submit: Callable[[str], JobRecord],
                wait_s: float = PENDING_S) -> JobRecord:
    """``submit(job_id)`` (which checks, stores and queues a ``kind`` job under that id)
    unless a job was created under ``key`` already: then that job (ALREADY_EXISTS if it is
    of another kind). Without a key, just submit."""
    if not check_key(key):
        return submit(new_job_id())
    name = claim_name(key)
    deadline = time.monotonic() + wait_s
    while True:
        job_id = new_job_id()
        mine = f"{job_id} {time.time()!r}"
        if jobs.redis.set(name, mine, nx=True, ex=jobs.ttl_s):
            try:
                return submit(job_id)
            except BaseException:
                jobs.redis.eval(_RELEASE, 1, name, mine)
                raise
        existing = _claimed_job(jobs, name)
        if existing is not None:
            if existing.kind != kind:
                raise RequestError(grpc.StatusCode.ALREADY_EXISTS,
                                   f"idempotency_key already names {existing.kind} job "
                                   f"{existing.job_id}")
            return existing
        if time.monotonic() > deadline:
            raise RequestError(grpc.StatusCode.ABORTED,
                               "a request with this idempotency_key is still being "
                               "accepted; retry it")
        time.sleep(POLL_S)


def release_job(jobs: JobStore, key: str, job_id: str) -> None:
    """Forget ``key`` if its claim names ``job_id`` (the job was deleted): the next request
    with that key creates a new job at once."""
    name = claim_name(key)
    value = jobs.redis.get(name)
    if value and str(value).partition(" ")[0] == job_id:
        jobs.redis.eval(_RELEASE, 1, name, str(value))


def _claimed_job(jobs: JobStore, name: str) -> JobRecord | None:
    """The job of a claim; None while it is being created (or the claim went away). A
    claim whose job is gone long after it was made is released."""
    value = jobs.redis.get(name)
    if not value:
        return None
    job_id, _, claimed_at = str(value).partition(" ")
    try:
        return jobs.get(job_id)
    except JobNotFoundError:
        if time.time() - float(claimed_at or 0) > PENDING_S:
            jobs.redis.eval(_RELEASE, 1, name, str(value))
        return None
