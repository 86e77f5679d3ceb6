"""Job records in Redis: state, progress, timestamps, error, result keys and events.

A job is the hash ``styleprobe:job:<id>`` and its event stream
``styleprobe:job:<id>:events`` (a Redis stream, so a watcher that connects late, or a
restarted orchestrator, reads what it missed). Both expire ``ttl_s`` after the last
change. Every change of state goes through one Lua script that checks the current state
and writes the fields and the event together, so a job ends exactly once: a job that was
cancelled does not later succeed, and a task run twice does not end it twice.

States: ``queued -> running -> succeeded | failed | cancelled`` (``queued`` may go
straight to ``failed`` or ``cancelled``). A running job is ``paused`` while a dependency it
calls (Triton, S3) is unreachable and is waited for, with ``pause_reason`` saying which and
since when; it runs again when the dependency answers (:meth:`JobStore.pause`,
:meth:`JobStore.unpause`), and may end from ``paused`` like from ``running``. A cohort that
failed or was cancelled can be queued again under its id (:meth:`JobStore.reopen`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import redis
from redis.typing import EncodableT, FieldT

from styleprobe.explain.spec import JobSpec

QUEUED, RUNNING, PAUSED, SUCCEEDED, FAILED, CANCELLED = (
    "queued", "running", "paused", "succeeded", "failed", "cancelled")
WORKING = (RUNNING, PAUSED)  # started and not ended: its tasks go on
ACTIVE = (QUEUED, *WORKING)
ENDED = (SUCCEEDED, FAILED, CANCELLED)
PAUSE_FIELDS = ("pause_reason", "paused_at")  # removed when a job leaves ``paused``
PREFIX = "styleprobe:job:"
# Every job's id scored by its creation time, written with the job (ListJobs reads it:
# :mod:`styleprobe.orchestrator.listing`, which also drops the ids of expired jobs).
INDEX = "styleprobe:jobs:by-created"
EVENTS_MAXLEN = 1000  # events kept per job (approximately)

# Fields as written to a hash or a stream; and as read back: the connection decodes every
# reply (decode_responses=True, RESP2), so a hash is str to str and a stream entry is
# (id, fields), where redis-py's types allow bytes too.
Fields = dict[FieldT, EncodableT]
Hash = dict[str, str]
StreamEntry = tuple[str, Hash]
ResultKeys = str | dict[str, str]  # one object's key, or keys by name

# KEYS: job hash, event stream. ARGV: allowed states (JSON list), fields to set (JSON
# object), fields to set only if absent (JSON object), event (JSON object), ttl seconds,
# events kept, fields to remove (JSON list). Returns 1 if applied, 0 if the state did
# not allow it, -1 if there is no such job.
_TRANSITION = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
local allowed = cjson.decode(ARGV[1])
local ok = false
for _, s in ipairs(allowed) do if s == state then ok = true end end
if not ok then return 0 end
for k, v in pairs(cjson.decode(ARGV[2])) do redis.call('HSET', KEYS[1], k, v) end
for k, v in pairs(cjson.decode(ARGV[3])) do redis.call('HSETNX', KEYS[1], k, v) end
for _, k in ipairs(cjson.decode(ARGV[7])) do redis.call('HDEL', KEYS[1], k) end
local event = cjson.decode(ARGV[4])
local flat = {}
for k, v in pairs(event) do table.insert(flat, k); table.insert(flat, v) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', unpack(flat))
redis.call('EXPIRE', KEYS[1], ARGV[5])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return 1
"""

# A cohort image finished. KEYS: job hash, event stream, set of the images counted.
# ARGV: image, outcome (done | failed), event message, time, ttl seconds, events kept.
# Counts the image once however often it is reported (a redelivered chunk), while the
# job runs (or is paused: another worker waits for a dependency); progress is the share
# of images finished. Returns 1 if the job is running or paused (counted now or before),
# 0 if not, -1 if there is no such job.
_COUNT_IMAGE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return -1 end
if state ~= 'running' and state ~= 'paused' then return 0 end
if redis.call('SADD', KEYS[3], ARGV[1]) == 0 then return 1 end
local field = 'count.' .. ARGV[2]
redis.call('HINCRBY', KEYS[1], field, 1)
local finished = tonumber(redis.call('HGET', KEYS[1], 'count.done') or '0')
    + tonumber(redis.call('HGET', KEYS[1], 'count.failed') or '0')
local total = tonumber(redis.call('HGET', KEYS[1], 'count.total') or '1')
local progress = tostring(finished / math.max(total, 1))
redis.call('HSET', KEYS[1], 'progress', progress, 'updated_at', ARGV[4])
local stage = redis.call('HGET', KEYS[1], 'stage') or ''
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'state', state, 'stage', stage,
           'progress', progress, 'message', ARGV[3], 'time', ARGV[4])
for i = 1, 3 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return 1
"""


class JobNotFoundError(KeyError):
    """No job with that id (never created, or expired)."""


@dataclass(frozen=True)
class JobRequest:
    """What a job was asked to do: its spec and its images — the stored input of an
    explain job, or the key of a cohort's list of images and its chunk size."""

    spec: JobSpec
    input_key: str = ""  # explain: the stored input's record
    images_key: str = ""  # cohort: the list of its images' keys
    chunk_size: int = 0  # cohort: images per chunk task

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec.to_dict(), "input_key": self.input_key,
                "images_key": self.images_key, "chunk_size": self.chunk_size}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> JobRequest:
        return cls(spec=JobSpec.from_dict(raw["spec"]), input_key=raw["input_key"],
                   images_key=raw["images_key"], chunk_size=raw["chunk_size"])


@dataclass
class JobRecord:
    """One job as stored; times are Unix seconds (0: not yet)."""

    job_id: str
    kind: str
    state: str
    request: JobRequest
    stage: str = ""
    progress: float = 0.0
    created_at: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    error: str = ""
    worker: str = ""  # the worker that ran the latest stage
    # result keys by name: a stage's record, or (an explain job's outputs) keys by name
    keys: dict[str, ResultKeys] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # total, done, failed
    stage_seconds: dict[str, float] = field(default_factory=dict)
    idempotency_key: str = ""  # the client's key of the request, if it had one
    dicom: dict[str, Any] = field(default_factory=dict)  # the DICOM input's reference
    pause_reason: str = ""  # while paused: the dependency waited for, and since when
    run: int = 0  # times the job was queued again (a resumed cohort): its tasks carry it

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def object_key(self, name: str) -> str:
        """The object key recorded as ``name``; "" if there is none."""
        key = self.keys.get(name, "")
        return key if isinstance(key, str) else ""

    @classmethod
    def from_hash(cls, raw: Hash) -> JobRecord:
        return cls(
            job_id=raw["job_id"], kind=raw["kind"], state=raw["state"],
            request=JobRequest.from_dict(json.loads(raw["request"])),
            stage=raw.get("stage", ""),
            progress=float(raw.get("progress", 0)),
            created_at=float(raw.get("created_at", 0)),
            started_at=float(raw.get("started_at", 0)),
            finished_at=float(raw.get("finished_at", 0)), error=raw.get("error", ""),
            worker=raw.get("worker", ""),
            keys={k[len("key."):]: json.loads(v) for k, v in raw.items() if k.startswith("key.")},
            counts={k[len("count."):]: int(v) for k, v in raw.items() if k.startswith("count.")},
            stage_seconds={k[len("seconds."):]: float(v) for k, v in raw.items()
                           if k.startswith("seconds.")},
            idempotency_key=raw.get("idempotency_key", ""),
            dicom=json.loads(raw.get("dicom", "{}")),
            pause_reason=raw.get("pause_reason", ""),
            run=int(raw.get("run", 0)),
        )


@dataclass
class JobEvent:
    """One entry of a job's event stream."""

    event_id: str
    state: str
    stage: str
    progress: float
    message: str
    time: float


def new_job_id() -> str:
    """A fresh job id: 32 hexadecimal digits."""
    return uuid.uuid4().hex


class JobStore:
    """Job records over one Redis connection pool (thread-safe, usable across threads)."""

    def __init__(self, url: str, ttl_s: int = 7 * 24 * 3600, **connection: Any) -> None:
        """``connection``: more redis-py options (for ``rediss://``, the verified TLS of
        :func:`styleprobe.tls.redis_ssl`)."""
        self.redis = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10,
                                          socket_connect_timeout=5, health_check_interval=30,
                                          **connection)
        self.ttl_s = ttl_s
        self._transition = self.redis.register_script(_TRANSITION)
        self._count_image = self.redis.register_script(_COUNT_IMAGE)

    def ping(self) -> None:
        """Raise ``redis.RedisError`` unless Redis answers."""
        self.redis.ping()

    def create(self, job_id: str, kind: str, request: JobRequest, total: int = 1,
               idempotency_key: str = "", dicom: Mapping[str, Any] | None = None) -> JobRecord:
        """Store a new ``queued`` job (ids are random: see :func:`new_job_id`) and index it
        by its creation time, at once."""
        now = time.time()
        record: Fields = {"job_id": job_id, "kind": kind, "state": QUEUED,
                          "request": json.dumps(request.to_dict()), "created_at": repr(now),
                          "progress": "0", "count.total": str(total), "count.done": "0",
                          "count.failed": "0"}
        if idempotency_key:
            record["idempotency_key"] = idempotency_key
        if dicom:
            record["dicom"] = json.dumps(dict(dicom))
        key = PREFIX + job_id
        with self.redis.pipeline() as pipe:
            pipe.hset(key, mapping=record)
            pipe.expire(key, self.ttl_s)
            pipe.zadd(INDEX, {job_id: now})
            # ids of records long expired (a record lives ttl_s after its last change)
            pipe.zremrangebyscore(INDEX, "-inf", now - 2 * self.ttl_s)
            pipe.xadd(key + ":events", _event_fields(QUEUED, "", 0.0, "job queued", now),
                      maxlen=EVENTS_MAXLEN, approximate=True)
            pipe.expire(key + ":events", self.ttl_s)
            pipe.execute()
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        raw = cast(Hash, self.redis.hgetall(PREFIX + job_id))
        if not raw:
            raise JobNotFoundError(job_id)
        return JobRecord.from_hash(raw)

    def delete(self, job_id: str) -> None:
        """Remove a job and its events (used when a job could not be queued at all)."""
        with self.redis.pipeline() as pipe:
            pipe.delete(PREFIX + job_id, PREFIX + job_id + ":events",
                        PREFIX + job_id + ":counted")
            pipe.zrem(INDEX, job_id)
            pipe.execute()

    def transition(self, job_id: str, allowed: Iterable[str], state: str | None = None,
                   message: str = "", stage: str | None = None, progress: float | None = None,
                   error: str | None = None, keys: Mapping[str, ResultKeys] | None = None,
                   stage_seconds: dict[str, float] | None = None,
                   counts: dict[str, int] | None = None, worker: str | None = None,
                   remove: Iterable[str] = (), pause_reason: str | None = None,
                   run: int | None = None) -> bool:
        """Apply a change if the job is in one of ``allowed`` states; whether it was applied.

        ``state`` None keeps the state (a progress update); a job leaving ``paused`` loses
        its pause reason; ``remove`` names more fields to remove. Raises
        :class:`JobNotFoundError`.
        """
        now = time.time()
        updates: dict[str, str] = {"updated_at": repr(now)}
        once: dict[str, str] = {}
        removed = list(remove)
        if state is not None:
            updates["state"] = state
            if state == RUNNING:
                once["started_at"] = repr(now)
            if state in ENDED:
                updates["finished_at"] = repr(now)
            if state == PAUSED:
                updates["paused_at"] = repr(now)
            else:
                removed += PAUSE_FIELDS
        if pause_reason is not None:
            updates["pause_reason"] = pause_reason
        if run is not None:
            updates["run"] = str(run)
        if stage is not None:
            updates["stage"] = stage
        if progress is not None:
            updates["progress"] = repr(float(progress))
        if error is not None:
            updates["error"] = error
        if worker is not None:
            updates["worker"] = worker
        for name, value in (keys or {}).items():
            updates[f"key.{name}"] = json.dumps(value)
        for name, seconds in (stage_seconds or {}).items():
            updates[f"seconds.{name}"] = repr(float(seconds))
        for name, count in (counts or {}).items():
            updates[f"count.{name}"] = str(int(count))
        key = PREFIX + job_id
        snapshot = self.get(job_id)
        event = _event_fields(state or snapshot.state,
                              stage if stage is not None else snapshot.stage,
                              progress if progress is not None else snapshot.progress,
                              message, now)
        applied = self._transition(keys=[key, key + ":events"], args=[
            json.dumps(list(allowed)), json.dumps(updates), json.dumps(once),
            json.dumps(event), self.ttl_s, EVENTS_MAXLEN, json.dumps(removed)])
        if applied == -1:
            raise JobNotFoundError(job_id)
        return applied == 1

    def pause(self, job_id: str, reason: str) -> bool:
        """A running job waits for a dependency: ``paused`` with ``reason``; whether it was
        running (a job already paused keeps its first reason)."""
        return self.transition(job_id, [RUNNING], state=PAUSED, message=f"paused: {reason}",
                               pause_reason=reason)

    def unpause(self, job_id: str, message: str) -> bool:
        """A paused job runs again (its dependency answers); whether it was paused."""
        return self.transition(job_id, [PAUSED], state=RUNNING, message=message)

    def reopen(self, job_id: str, allowed: Iterable[str], message: str,
               keys: Iterable[str] = ()) -> bool:
        """Queue an ended job again under its id (a resumed cohort): ``queued``, its run
        counted one up, without its error, end time and the result ``keys`` named; whether
        its state allowed it (only one of concurrent calls does)."""
        return self.transition(job_id, allowed, state=QUEUED, message=message, error="",
                               run=self.get(job_id).run + 1,
                               remove=["finished_at", *(f"key.{name}" for name in keys)])

    def count_image(self, job_id: str, image: str, outcome: str, message: str) -> bool:
        """Count a finished image of a running cohort as ``outcome`` (done or failed), once
        per image, with the event ``message``; False if the job is not running (any more).
        Raises :class:`JobNotFoundError`."""
        if outcome not in ("done", "failed"):
            raise ValueError(f"outcome must be done or failed, got {outcome!r}")
        key = PREFIX + job_id
        answer = self._count_image(keys=[key, key + ":events", key + ":counted"], args=[
            image, outcome, message, repr(time.time()), self.ttl_s, EVENTS_MAXLEN])
        if answer == -1:
            raise JobNotFoundError(job_id)
        return answer == 1

    def last_event_id(self, job_id: str) -> str:
        """Id of the newest event ("0-0" if none)."""
        newest = cast(list[StreamEntry],
                      self.redis.xrevrange(PREFIX + job_id + ":events", count=1))
        return newest[0][0] if newest else "0-0"

    def events(self, job_id: str, after: str, block_ms: int | None = None) -> list[JobEvent]:
        """Events newer than ``after``; with ``block_ms``, waiting that long for one."""
        # RESP2: [[stream, its entries]], one stream here
        answer = cast(list[tuple[str, list[StreamEntry]]],
                      self.redis.xread({PREFIX + job_id + ":events": after}, block=block_ms))
        if not answer:
            return []
        return [JobEvent(event_id=entry_id, state=f["state"], stage=f["stage"],
                         progress=float(f["progress"]), message=f["message"],
                         time=float(f["time"]))
                for entry_id, f in answer[0][1]]

    def close(self) -> None:
        self.redis.close()


def _event_fields(state: str, stage: str, progress: float, message: str,
                  now: float) -> Fields:
    return {"state": state, "stage": stage, "progress": repr(float(progress)),
            "message": message, "time": repr(now)}
