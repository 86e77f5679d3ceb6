"""ListJobs: jobs by idempotency key, state, kind and creation time, newest first, paged.

Every job's id is scored by its creation time in the sorted set :data:`~styleprobe.jobs.INDEX`
(written with the job record, :meth:`~styleprobe.jobs.JobStore.create`). A page walks
the index from its cursor down, reads the records in batches and keeps those that match;
an id whose record has expired is dropped from the index as it is met, so the index
follows the records' expiry. Only the state and kind of each id are read to filter; the
whole records only of the jobs returned. A page may hold fewer than ``page_size`` jobs with a next
page token when few jobs match: at most :data:`MAX_SCANNED` ids are read per call. The
page token is opaque to clients: the creation time and id of the last job read.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from styleprobe.api import pb
from styleprobe.jobs import INDEX, PREFIX, Hash, JobRecord, JobStore
from styleprobe.orchestrator import messages
from styleprobe.orchestrator.idempotency import check_key, job_of_key
from styleprobe.orchestrator.requests import invalid

DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 100, 1000
BATCH = 200  # ids read from the index at once
MAX_SCANNED = 5000  # ids read in one call, matching or not
KINDS = ("explain", "cohort")
STATE_NAMES = {value: name for name, value in messages.STATES.items()}


@dataclass(frozen=True)
class Cursor:
    """Where a page ends: the creation time and id of the last job read."""

    created: float
    job_id: str

    def token(self) -> str:
        raw = json.dumps({"c": self.created, "j": self.job_id}).encode()
        return base64.urlsafe_b64encode(raw).decode()

    @classmethod
    def parse(cls, token: str) -> Cursor:
        try:
            raw = json.loads(base64.urlsafe_b64decode(token.encode()))
            return cls(float(raw["c"]), str(raw["j"]))
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise invalid("page_token is not one this service gave: pass a "
                          "next_page_token unchanged") from None


@dataclass(frozen=True)
class Filters:
    """A checked ListJobs request."""

    key: str
    states: frozenset[str]
    kind: str
    after: float  # created at or after (Unix seconds); 0: any
    before: float  # created before; 0: any
    page_size: int
    cursor: Cursor | None

    def match(self, state: str, kind: str) -> bool:
        """Whether a job of ``state`` and ``kind`` passes the state and kind filters (the
        index's range has applied the time filters)."""
        return (not self.states or state in self.states) and (not self.kind or kind == self.kind)

    def match_record(self, record: JobRecord) -> bool:
        return (self.match(record.state, record.kind)
                and (not self.key or record.idempotency_key == self.key)
                and record.created_at >= self.after
                and (not self.before or record.created_at < self.before))


def check_list(request: pb.ListJobsRequest) -> Filters:
    """The request's filters; INVALID_ARGUMENT naming a field out of range."""
    if request.page_size < 0 or request.page_size > MAX_PAGE_SIZE:
        raise invalid(f"page_size must be in 1..{MAX_PAGE_SIZE} (0: {DEFAULT_PAGE_SIZE}), got "
                      f"{request.page_size}")
    if request.kind and request.kind not in KINDS:
        raise invalid(f"kind must be {' or '.join(KINDS)} (or empty), got {request.kind!r}")
    states = set()
    for state in request.states:
        if state not in STATE_NAMES:
            raise invalid(f"states: {state} is not a job state to list")
        states.add(STATE_NAMES[state])
    after = _seconds(request, "created_after")
    before = _seconds(request, "created_before")
    return Filters(key=check_key(request.idempotency_key), states=frozenset(states),
                   kind=request.kind, after=after, before=before,
                   page_size=request.page_size or DEFAULT_PAGE_SIZE,
                   cursor=Cursor.parse(request.page_token) if request.page_token else None)


def _seconds(request: pb.ListJobsRequest, name: str) -> float:
    if not request.HasField(name):
        return 0.0
    return float(getattr(request, name).ToNanoseconds()) / 1e9


def list_jobs(jobs: JobStore, request: pb.ListJobsRequest) -> pb.ListJobsResponse:
    """One page of the jobs that match ``request``, newest first."""
    filters = check_list(request)
    if filters.key:  # one job at most: found through its key's claim
        record = job_of_key(jobs, filters.key)
        found = [record] if record is not None and filters.match_record(record) else []
        return pb.ListJobsResponse(jobs=[messages.job_message(r) for r in found])
    page: list[str] = []
    last: Cursor | None = None
    scanned = 0
    for job_id, matches, cursor in _walk(jobs, filters):
        scanned, last = scanned + 1, cursor
        if matches:
            page.append(job_id)
            if len(page) == filters.page_size:
                break
        if scanned >= MAX_SCANNED:
            break
    more = last is not None and _has_older(jobs, filters, last)
    return pb.ListJobsResponse(jobs=[messages.job_message(r) for r in _records(jobs, page)],
                               next_page_token=last.token() if more and last else "")


def _records(jobs: JobStore, job_ids: list[str]) -> list[JobRecord]:
    """The records of ``job_ids``, in order (one that expired meanwhile left out)."""
    with jobs.redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hgetall(PREFIX + job_id)
        hashes = cast(list[Hash], pipe.execute())
    return [JobRecord.from_hash(raw) for raw in hashes if raw]


def _walk(jobs: JobStore, filters: Filters) -> Iterator[tuple[str, bool, Cursor]]:
    """The index from the filters' cursor (or newest) down to ``after``: each id, whether
    its job passes the filters (not one that expired: its id is dropped from the index),
    and its cursor."""
    cursor = filters.cursor
    top: str = f"({filters.before!r}" if filters.before else "+inf"
    # unfiltered, a page needs its size, and one more: the cursor's own id comes first
    batch = BATCH if filters.states or filters.kind else filters.page_size + 1
    while True:
        if cursor is not None:
            top = repr(cursor.created)
        entries = cast(list[tuple[str, float]], jobs.redis.zrevrangebyscore(
            INDEX, top, repr(filters.after) if filters.after else "-inf", start=0,
            num=batch, withscores=True))
        if cursor is not None:  # ties: ids at the cursor's time come in descending order
            entries = [(job_id, score) for job_id, score in entries
                       if score < cursor.created or job_id < cursor.job_id]
        if not entries:
            return
        with jobs.redis.pipeline(transaction=False) as pipe:
            for job_id, _ in entries:
                pipe.hmget(PREFIX + job_id, ["state", "kind"])
            fields = cast(list[list[str | None]], pipe.execute())
        expired = [job_id for (job_id, _), (state, _) in zip(entries, fields, strict=True)
                   if state is None]
        if expired:
            jobs.redis.zrem(INDEX, *expired)
        for (job_id, score), (state, kind) in zip(entries, fields, strict=True):
            cursor = Cursor(score, job_id)
            yield job_id, state is not None and filters.match(state, kind or ""), cursor


def _has_older(jobs: JobStore, filters: Filters, last: Cursor) -> bool:
    """Whether the index holds an id after ``last`` within the filters' time range."""
    older = cast(list[tuple[str, float]], jobs.redis.zrevrangebyscore(
        INDEX, repr(last.created), repr(filters.after) if filters.after else "-inf",
        start=0, num=BATCH, withscores=True))
    return any(score < last.created or job_id < last.job_id for job_id, score in older)
