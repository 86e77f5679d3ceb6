"""The orchestrator's health checker: SERVING only while every dependency answers, and
the readiness of each dependency as a metric."""

from __future__ import annotations

import asyncio

from grpc_health.v1 import health, health_pb2
from prometheus_client import REGISTRY

from styleprobe.api import SERVICE_NAME
from styleprobe.orchestrator.health import HealthChecker

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def ready(dependency: str) -> float | None:
    return REGISTRY.get_sample_value("styleprobe_dependency_ready", {"dependency": dependency})


def test_status_and_readiness_follow_the_checks() -> None:
    s3_up = [False]

    def s3() -> None:
        if not s3_up[0]:
            raise ConnectionRefusedError("S3 is down")

    async def rounds() -> list[tuple]:
        servicer = health.aio.HealthServicer()
        checker = HealthChecker(servicer, {"redis": lambda: None, "s3": s3}, interval_s=1)
        seen = []
        for up in (False, True):
            s3_up[0] = up
            failing = await checker.check_once()
            statuses = [(await servicer.Check(health_pb2.HealthCheckRequest(service=name),
                                              None)).status for name in ("", SERVICE_NAME)]
            seen.append((*statuses, failing, ready("redis"), ready("s3")))
        return seen

    down, up = asyncio.run(rounds())
    assert down == (NOT_SERVING, NOT_SERVING, {"s3": "ConnectionRefusedError: S3 is down"},
                    1.0, 0.0)
    assert up == (SERVING, SERVING, {}, 1.0, 1.0)
