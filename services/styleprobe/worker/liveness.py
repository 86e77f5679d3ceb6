"""The tasks of a dead worker handed out again within seconds, not a visibility timeout.

A task is acknowledged only when it has finished (``acks_late``): until then its message
waits in the broker's ``unacked`` hash (kombu's Redis transport), and if its worker dies
with it, the broker gives it back only after ``STYLEPROBE_VISIBILITY_TIMEOUT_S`` (900 s),
which must exceed the longest task. (A pool process that dies under a living worker is
handled by Celery at once: ``task_reject_on_worker_lost``.) So each worker also says that
it is alive, and watches the others:

- every worker instance (its main process) beats: ``styleprobe:worker:alive:<instance>``
  set every ``STYLEPROBE_WORKER_HEARTBEAT_S`` seconds, expiring after
  :data:`DEAD_AFTER_BEATS` beats;
- each message it receives is noted in the hash :data:`RECEIVED` (delivery tag -> instance),
  a task waiting for its countdown included;
- at each beat, a worker gives back to its queue (kombu's own ``restore_by_tag``, one
  Redis transaction: a message is restored once, whoever tries) every unacknowledged
  message whose instance no longer beats, and forgets notes of messages acknowledged since.

A worker found dead too early (a pause longer than four beats) only costs a task run twice,
which the tasks allow (they are idempotent). The same loop removes the objects of failed
jobs that waited for the store to come back (:func:`~styleprobe.worker.cleanup.sweep_pending`).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import uuid
from typing import Any, cast

import redis
from celery import Celery
from celery.signals import task_received, worker_ready, worker_shutdown
from kombu.exceptions import OperationalError

from styleprobe.config import Settings
from styleprobe.jobs import JobStore
from styleprobe.storage import ArtifactStore, StoreError, open_store
from styleprobe.tls import redis_ssl
from styleprobe.worker import cleanup

log = logging.getLogger(__name__)
ALIVE_PREFIX = "styleprobe:worker:alive:"
RECEIVED = "styleprobe:worker:received"  # delivery tag -> the instance that received it
DEAD_AFTER_BEATS = 4


def alive_key(instance: str) -> str:
    return ALIVE_PREFIX + instance


class Liveness:
    """One worker instance's beats and its watch over the others."""

    def __init__(self, settings: Settings, app: Celery, instance: str) -> None:
        if settings.worker_heartbeat_s <= 0:
            raise ValueError("STYLEPROBE_WORKER_HEARTBEAT_S must be > 0 seconds, got "
                             f"{settings.worker_heartbeat_s}")
        self.settings, self.app, self.instance = settings, app, instance
        self.jobs = JobStore(settings.redis_url, settings.job_ttl_s, **redis_ssl(settings))
        self.beat_s = settings.worker_heartbeat_s
        self._store: ArtifactStore | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def received(self, delivery_tag: str) -> None:
        """Note a message this instance received."""
        self.jobs.redis.hset(RECEIVED, delivery_tag, self.instance)

    def beat(self) -> None:
        """Say this instance is alive for :data:`DEAD_AFTER_BEATS` beats."""
        self.jobs.redis.set(alive_key(self.instance), "1",
                            ex=max(1, math.ceil(DEAD_AFTER_BEATS * self.beat_s)))

    def revive(self) -> int:
        """Give back the unacknowledged messages of instances that no longer beat; how many."""
        client = self.jobs.redis
        received = cast(dict[str, str], client.hgetall(RECEIVED))  # before the unacked ones
        with self.app.connection_for_write() as connection:
            channel: Any = connection.default_channel
            unacked = set(cast(list[str], client.hkeys(channel.unacked_key)))
            restored = 0
            for tag, instance in received.items():
                if tag in unacked:
                    if instance == self.instance or client.exists(alive_key(instance)):
                        continue
                    channel.qos.restore_by_tag(tag)
                    restored += 1
                    log.warning("task of a dead worker handed out again",
                                extra={"worker": instance})
                client.hdel(RECEIVED, tag)
        return restored

    def sweep(self) -> int:
        """Remove what failed jobs left while the store was down, once it answers."""
        if not self.jobs.redis.scard(cleanup.PENDING):
            return 0
        if self._store is None:
            self._store = open_store(self.settings, check=False)
        return cleanup.sweep_pending(self._store, self.jobs)

    def once(self) -> None:
        """One beat: alive, revive, sweep; a Redis or store outage only skips it."""
        try:
            self.beat()
            self.revive()
            self.sweep()
        except (redis.RedisError, OperationalError, StoreError, OSError) as exc:
            log.warning("liveness beat skipped", extra={"error": str(exc)})

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="styleprobe-liveness",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        with contextlib.suppress(redis.RedisError):  # else it expires
            self.jobs.redis.delete(alive_key(self.instance))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.once()
            self._stop.wait(self.beat_s)


_liveness: Liveness | None = None


@worker_ready.connect
def _start(sender: Any = None, **_: Any) -> None:
    """The worker's main process starts beating once it consumes."""
    global _liveness
    instance = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    _liveness = Liveness(Settings.from_env(), sender.app, instance)
    _liveness.beat()
    _liveness.start()
    log.info("worker beats", extra={"worker": instance, "every_s": _liveness.beat_s})


@task_received.connect
def _received(request: Any = None, **_: Any) -> None:
    if _liveness is not None and request is not None:
        try:
            _liveness.received(str(request.message.delivery_tag))
        except redis.RedisError as exc:  # the visibility timeout still gives it back
            log.warning("received task not noted", extra={"error": str(exc)})


@worker_shutdown.connect
def _stop(**_: Any) -> None:
    if _liveness is not None:
        _liveness.stop()
