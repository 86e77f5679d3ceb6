"""Job replies built once and shared: the cache of ended jobs' replies, and one feed of
events per watched job.

:class:`ReplyCache`: an ended job's reply (its explanation or cohort summary, with signed
artifact URLs) is built once — the manifest read from the store, every URL signed — and
served from memory until its URLs reach half their validity (then signed again), or the
job's record changes (a cancelled cohort's late summary, a deleted job): a GetJob reads
only the record's version (:func:`record_version`) to know. Concurrent requests for a
reply being built wait for that one build (single flight per job).

:class:`JobFeed`: every ``WatchJob`` stream of one job reads the same feed: one task per
watched job blocks on the job's Redis event stream (``XREAD BLOCK``, on an asyncio
client: no thread held while waiting), reads the job's record once per batch of events
and wakes every watcher at once. A Redis outage is waited out for ``outage_s``; longer,
the watchers get the error.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import cast

import redis
import redis.asyncio

from styleprobe.api import pb
from styleprobe.jobs import (
    ENDED,
    EVENTS_MAXLEN,
    PREFIX,
    Hash,
    JobEvent,
    JobNotFoundError,
    JobRecord,
    JobStore,
    StreamEntry,
)

MAX_REPLIES = 1024  # ended jobs' replies kept (least recently used dropped; ~20 KB each)
FEED_BLOCK_MS = 1000  # longest XREAD BLOCK of a feed (then it reads again)
OUTAGE_POLL_S = 0.25  # how often a feed retries Redis during an outage


@dataclass
class _Reply:
    record: JobRecord
    reply: pb.Job
    fresh_until: float
    version: str  # the record's updated_at when it was read ("" unknown)


def record_version(jobs: JobStore, job_id: str) -> str:
    """The job record's version: its ``updated_at``, which every change of the record
    sets (its state, keys, counts); "" for no such job (or one never changed)."""
    return cast(str | None, jobs.redis.hget(PREFIX + job_id, "updated_at")) or ""


class ReplyCache:
    """Replies of ended jobs by job id; ``url_validity_s``: how long a signed URL is valid
    (a reply is rebuilt when half of it has passed)."""

    def __init__(self, url_validity_s: float, max_replies: int = MAX_REPLIES) -> None:
        self.refresh_s = url_validity_s / 2
        self.max_replies = max_replies
        self._replies: OrderedDict[str, _Reply] = OrderedDict()
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}
        self.builds = 0  # replies built (not served from memory), for tests and benchmarks

    def lookup(self, job_id: str, version: str) -> pb.Job | None:
        """The reply of an ended job if it was built from the record of ``version`` (see
        :func:`record_version`) and its URLs are still fresh; None otherwise. A GetJob
        answered this way reads one field of the record, not all of it."""
        with self._lock:
            cached = self._replies.get(job_id)
            if (cached is None or cached.version != version
                    or time.monotonic() >= cached.fresh_until):
                return None
            self._replies.move_to_end(job_id)
            return cached.reply

    async def current(self, client: redis.asyncio.Redis, job_id: str) -> pb.Job | None:
        """:meth:`lookup` with the version read now on ``client`` (one field, on the event
        loop: no thread); None when not cached, and on a Redis error (the caller's full
        path reports it)."""
        if not job_id:
            return None
        try:
            version = cast(str | None, await client.hget(PREFIX + job_id, "updated_at"))
        except redis.RedisError:
            return None
        return self.lookup(job_id, version) if version else None

    def reply(self, record: JobRecord, build: Callable[[JobRecord], pb.Job],
              version: str = "") -> pb.Job:
        """``build(record)``, from memory when ``record`` has ended and its reply was built
        from the same record with URLs still fresh; ``version``: that of ``record`` (read
        before it), for :meth:`lookup`. The reply is shared: do not modify it."""
        if not record.ended:
            return build(record)
        cached = self._fresh(record, version)
        if cached is not None:
            return cached
        with self._lock:
            building = self._building.setdefault(record.job_id, threading.Lock())
        with building:  # one build per job; the others wait for it and take its reply
            cached = self._fresh(record, version)
            if cached is not None:
                return cached
            try:
                reply = build(record)
            except BaseException:  # the next request for this job tries anew
                with self._lock:
                    self._building.pop(record.job_id, None)
                raise
            self.builds += 1
            with self._lock:
                self._replies[record.job_id] = _Reply(record, reply,
                                                      time.monotonic() + self.refresh_s,
                                                      version)
                self._replies.move_to_end(record.job_id)
                while len(self._replies) > self.max_replies:
                    self._replies.popitem(last=False)
                self._building.pop(record.job_id, None)
            return reply

    def _fresh(self, record: JobRecord, version: str) -> pb.Job | None:
        """The reply built from a record equal to ``record`` (now of ``version``)."""
        with self._lock:
            cached = self._replies.get(record.job_id)
            if cached is None:
                return None
            if cached.record != record or time.monotonic() >= cached.fresh_until:
                del self._replies[record.job_id]
                return None
            cached.version = version or cached.version
            self._replies.move_to_end(record.job_id)
            return cached.reply


def _stream_id(event_id: str) -> tuple[int, int]:
    milliseconds, _, sequence = event_id.partition("-")
    return int(milliseconds), int(sequence or 0)


@dataclass
class _Feed:
    """What a feed has read of one job: its events (the newest ``EVENTS_MAXLEN``), its
    record as of the newest, or the error that ended it."""

    events: list[JobEvent] = field(default_factory=list)
    record: JobRecord | None = None
    error: BaseException | None = None
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    watchers: int = 0
    task: asyncio.Task[None] | None = None

    def newer(self, after: tuple[int, int]) -> list[JobEvent]:
        return [e for e in self.events if _stream_id(e.event_id) > after]

    def has_news(self, after: tuple[int, int]) -> bool:
        """Whether a watcher that has seen up to ``after`` has something to take."""
        return self.error is not None or bool(self.newer(after))


class JobFeed:
    """One reader of each watched job's events and record, shared by its watchers."""

    def __init__(self, client: redis.asyncio.Redis, outage_s: float,
                 block_ms: int = FEED_BLOCK_MS) -> None:
        self.client, self.outage_s, self.block_ms = client, outage_s, block_ms
        self._feeds: dict[str, _Feed] = {}

    async def follow(self, job_id: str, after: str
                     ) -> AsyncIterator[tuple[list[JobEvent], JobRecord]]:
        """Batches of the job's events newer than ``after``, each with the job's record as
        of its newest event, up to the batch whose newest event ends the job (an earlier
        end, of a run before a resume, does not). Raises
        ``redis.RedisError`` after an outage longer than ``outage_s``, and
        :class:`~styleprobe.jobs.JobNotFoundError` if the job disappears."""
        feed = self._feeds.get(job_id)
        if feed is None:
            feed = self._feeds[job_id] = _Feed()
            feed.task = asyncio.create_task(self._read(job_id, feed))
        feed.watchers += 1
        seen = _stream_id(after)
        try:
            while True:
                async with feed.changed:
                    await feed.changed.wait_for(partial(feed.has_news, seen))
                new = feed.newer(seen)
                if not new:
                    raise cast(BaseException, feed.error)
                seen = _stream_id(new[-1].event_id)
                assert feed.record is not None
                yield new, feed.record
                if new[-1].state in ENDED:
                    return
        finally:
            feed.watchers -= 1
            if feed.watchers == 0 and self._feeds.get(job_id) is feed:
                del self._feeds[job_id]
                if feed.task is not None:
                    feed.task.cancel()

    async def _read(self, job_id: str, feed: _Feed) -> None:
        """Read the job's events as they come (from the first), and its record with each
        batch, until it ends or an error ends the feed."""
        key, last = PREFIX + job_id, "0-0"
        failing_since: float | None = None
        while True:
            try:
                answer = cast(list[tuple[str, list[StreamEntry]]], await self.client.xread(
                    {key + ":events": last}, block=self.block_ms))
                if not answer:
                    continue
                raw = cast(Hash, await self.client.hgetall(key))
                if not raw:
                    raise JobNotFoundError(job_id)
                record = JobRecord.from_hash(raw)
            except redis.RedisError as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since < self.outage_s:
                    await asyncio.sleep(OUTAGE_POLL_S)
                    continue
                await self._end(feed, exc)
                return
            except JobNotFoundError as exc:
                await self._end(feed, exc)
                return
            failing_since = None
            entries = answer[0][1]
            last = entries[-1][0]
            events = [_event(entry) for entry in entries]
            async with feed.changed:
                feed.events = (feed.events + events)[-EVENTS_MAXLEN:]
                feed.record = record
                feed.changed.notify_all()
            # the end is the newest event saying so: the record may have ended before its
            # event is read (the next read has it), and a resumed job's stream holds the
            # end of its earlier run
            if events[-1].state in ENDED:
                return

    @staticmethod
    async def _end(feed: _Feed, error: BaseException) -> None:
        async with feed.changed:
            feed.error = error
            feed.changed.notify_all()

    async def close(self) -> None:
        """Stop every feed and close the client."""
        for feed in list(self._feeds.values()):
            if feed.task is not None:
                feed.task.cancel()
        self._feeds.clear()
        await self.client.aclose()


def _event(entry: StreamEntry) -> JobEvent:
    event_id, f = entry
    return JobEvent(event_id=event_id, state=f["state"], stage=f["stage"],
                    progress=float(f["progress"]), message=f["message"], time=float(f["time"]))
