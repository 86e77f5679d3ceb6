"""An open WatchJob stream waits out a Redis outage, up to ``watch_outage_s``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
import redis

from styleprobe.config import Settings
from styleprobe.jobs import JobStore
from styleprobe.orchestrator.service import StyleProbeService
from styleprobe.storage.local import LocalStore


class AbortError(Exception):
    pass


class RecordingContext:
    """What ``_serve`` uses of a ServicerContext: abort, which raises."""

    def __init__(self) -> None:
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise AbortError(details)


def service(outage_s: float, folder: Path) -> StyleProbeService:
    settings = Settings(watch_outage_s=outage_s)
    return StyleProbeService(settings, LocalStore(folder), JobStore(settings.redis_url))


async def watching(service: StyleProbeService, context: RecordingContext,
                   work: Callable[[], list[str]]) -> list[str]:
    """``work`` served as WatchJob serves its Redis reads."""
    return await service._serve(context, work,
                                redis_outage_s=service.settings.watch_outage_s)


def test_a_short_outage_is_waited_out(tmp_path: Path) -> None:
    calls = []

    def events() -> list[str]:
        calls.append(1)
        if len(calls) <= 3:
            raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379")
        return ["event"]

    context = RecordingContext()
    answer = asyncio.run(watching(service(10.0, tmp_path), context, events))
    assert answer == ["event"] and len(calls) == 4 and context.aborted is None


def test_a_long_outage_ends_the_stream_with_unavailable(tmp_path: Path) -> None:
    def events() -> list[str]:
        raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:6379")

    context = RecordingContext()
    with pytest.raises(AbortError):
        asyncio.run(watching(service(0.6, tmp_path), context, events))
    assert context.aborted is not None
    code, details = context.aborted
    assert code == grpc.StatusCode.UNAVAILABLE and "retry later" in details
