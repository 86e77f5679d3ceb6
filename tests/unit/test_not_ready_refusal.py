"""While the health checker's last round found a dependency down, Explain and SubmitCohort
are refused with UNAVAILABLE at once; nothing is stored or queued (issue 17)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any, cast

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2
from PIL import Image

from styleprobe.api import SERVICE_NAME, pb
from styleprobe.config import Settings
from styleprobe.jobs import JobStore
from styleprobe.orchestrator.health import HealthChecker
from styleprobe.orchestrator.service import StyleProbeService
from styleprobe.storage.local import LocalStore


class AbortedError(Exception):
    pass


class Context:
    """The part of a servicer context that Explain and SubmitCohort use."""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise AbortedError(code, details)

    def time_remaining(self) -> float | None:
        return None


def png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def triton_down() -> None:
    raise ConnectionRefusedError("Triton is down")


@pytest.mark.parametrize("call", ["Explain", "SubmitCohort"])
def test_new_jobs_are_refused_while_a_dependency_is_down(tiny_repository: Path, tmp_path: Path,
                                                         call: str) -> None:
    store = LocalStore(tmp_path)
    service = StyleProbeService(Settings(model_repository=str(tiny_repository)), store,
                                cast(JobStore, None))  # refused before Redis is touched
    servicer = health.aio.HealthServicer()
    service.checker = HealthChecker(servicer, {"redis": lambda: None, "triton": triton_down},
                                    interval_s=2)
    request: Any = (pb.ExplainRequest(image_bytes=png(), model_set="tiny") if call == "Explain"
                    else pb.SubmitCohortRequest(prefix="inputs/", model_set="tiny"))

    async def refused() -> tuple[Any, Any]:
        await service.checker.check_once()  # type: ignore[union-attr]
        status = (await servicer.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                                       None)).status
        with pytest.raises(AbortedError) as error:
            await getattr(service, call)(request, Context())
        return status, error.value.args

    status, (code, details) = asyncio.run(refused())
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert code == grpc.StatusCode.UNAVAILABLE
    assert details == "the service is not ready: triton is unreachable; retry later"
    assert store.list() == []


def test_new_jobs_are_accepted_again_once_health_passes(tiny_repository: Path,
                                                        tmp_path: Path) -> None:
    service = StyleProbeService(Settings(model_repository=str(tiny_repository)),
                                LocalStore(tmp_path), cast(JobStore, None))
    up = [False]

    def triton() -> None:
        if not up[0]:
            raise ConnectionRefusedError("Triton is down")

    service.checker = HealthChecker(health.aio.HealthServicer(), {"triton": triton}, 2)

    async def rounds() -> list[str]:
        seen = []
        for state in (False, True):
            up[0] = state
            await service.checker.check_once()  # type: ignore[union-attr]
            try:
                await service._refuse_unless_ready(cast(Any, Context()))
                seen.append("accepted")
            except AbortedError:
                seen.append("refused")
        return seen

    assert asyncio.run(rounds()) == ["refused", "accepted"]
