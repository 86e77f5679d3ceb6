"""A worker process's job paused while a dependency it calls is waited for.

The process's S3 store and Triton backends wait out an outage for their time budgets
(:mod:`styleprobe.outages`) and tell this process's :class:`JobPauser`, which marks the
job the process works on ``paused`` with the reason (the dependency and since when) when
the first call starts waiting, and ``running`` again once every dependency it waited for
answers (or when a task retried after a call gave up waiting has done its work). The
job's state changes are the job store's atomic transitions: a job that ended
or was cancelled meanwhile is left as it is. Redis being down too only costs the mark.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

import redis

from styleprobe.jobs import JobNotFoundError, JobStore
from styleprobe.outages import DEPENDENCY_NAMES

log = logging.getLogger(__name__)


def pause_reason(dependency: str, budget_s: float, since: float | None = None) -> str:
    """The reason a job waits, e.g. "S3 unreachable since 21:55:03 UTC (waited for up to
    120 s)"."""
    stamp = time.strftime("%H:%M:%S", time.gmtime(time.time() if since is None else since))
    name = DEPENDENCY_NAMES.get(dependency, dependency)
    return f"{name} unreachable since {stamp} UTC (waited for up to {budget_s:g} s)"


class JobPauser:
    """An :class:`~styleprobe.outages.OutageListener` that pauses the job this process works
    on (:meth:`working_on`); calls may come from several threads at once."""

    def __init__(self, jobs: Callable[[], JobStore]) -> None:
        self._jobs = jobs
        self._lock = threading.Lock()
        self._job_id = ""
        self._down: set[str] = set()

    @contextlib.contextmanager
    def working_on(self, job_id: str) -> Iterator[None]:
        """Outages reported inside this block pause ``job_id``. A block that ends without
        an error and waits for nothing runs the job again if it is still paused: a task
        retried after an attempt that gave up waiting (here or in another worker)."""
        with self._lock:
            self._job_id, self._down = job_id, set()
        try:
            yield
            with self._lock:
                clear = not self._down
            if clear:
                self._mark(job_id, lambda jobs: jobs.unpause(
                    job_id, "running again: its work goes on"))
        finally:
            with self._lock:
                self._job_id, self._down = "", set()

    def waiting(self, dependency: str, budget_s: float) -> None:
        with self._lock:
            first = not self._down
            self._down.add(dependency)
            job_id = self._job_id
        if job_id and first:
            self._mark(job_id, lambda jobs: jobs.pause(job_id, pause_reason(dependency,
                                                                             budget_s)))

    def back(self, dependency: str) -> None:
        with self._lock:
            was_down = dependency in self._down
            self._down.discard(dependency)
            job_id, clear = self._job_id, not self._down
        if job_id and was_down and clear:
            name = DEPENDENCY_NAMES.get(dependency, dependency)
            self._mark(job_id, lambda jobs: jobs.unpause(
                job_id, f"running again: {name} answers"))

    def _mark(self, job_id: str, change: Callable[[JobStore], bool]) -> None:
        try:
            if change(self._jobs()):
                log.info("job state follows a dependency", extra={
                    "job_id": job_id, "state": self._jobs().get(job_id).state})
        except (redis.RedisError, JobNotFoundError) as exc:
            log.warning("job not marked", extra={"job_id": job_id, "error": str(exc)})
