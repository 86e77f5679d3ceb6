"""Dependency outages waited out: who is told when a client starts and stops waiting.

A client of a server that may restart (the S3 store, the Triton backend) retries a call
that finds it unreachable for a time budget (``STYLEPROBE_S3_RETRY_S``,
``STYLEPROBE_TRITON_RETRY_S``). It tells its :class:`OutageListener`, if it has one, when
it starts waiting and when the server answers again: a worker marks the job it runs
``paused`` meanwhile (:class:`styleprobe.worker.pausing.JobPauser`).
"""

from __future__ import annotations

from typing import Protocol

DEPENDENCY_NAMES = {"s3": "S3", "triton": "Triton", "redis": "Redis"}


class OutageListener(Protocol):
    """Told when a client starts waiting for ``dependency`` and when it answers again."""

    def waiting(self, dependency: str, budget_s: float) -> None:
        """A call found ``dependency`` unreachable and is retried for up to ``budget_s``."""
        ...

    def back(self, dependency: str) -> None:
        """A call that waited for ``dependency`` got its answer."""
        ...
