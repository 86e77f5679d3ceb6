"""The background health checker behind the standard ``grpc.health.v1`` service.

Every ``interval_s`` it checks what the service needs (Redis, the object store, Triton when
the backend is Triton) and reports SERVING for the server (``""``) and for the StyleProbe
service only while every check passes; NOT_SERVING otherwise (and until the first round
has run). A change is logged with the failing checks and their causes. Each round also
sets the metrics ``styleprobe_dependency_ready`` (one per check) and
``styleprobe_queue_depth`` (the Celery queues' lengths in Redis, read by the Redis check).

With the Triton backend the orchestrator also owns what Triton serves:
:func:`sync_model_sets` loads, at the same interval, the model sets of the repository that
Triton does not serve yet (a set an operator added while the service runs).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from grpc_health.v1 import health, health_pb2

from styleprobe.api import SERVICE_NAME
from styleprobe.config import Settings
from styleprobe.jobs import JobStore
from styleprobe.metrics import set_dependency_ready, set_queue_depth
from styleprobe.serving.loader import ModelSetLoader
from styleprobe.storage import ArtifactStore
from styleprobe.worker.app import QUEUES, priority_lists

log = logging.getLogger(__name__)
CHECK_TIMEOUT_S = 5.0
Check = Callable[[], None]


def service_checks(settings: Settings, jobs: JobStore, store: ArtifactStore) -> dict[str, Check]:
    """The checks for this configuration, by name; each raises when its server is down."""

    def redis_and_queues() -> None:
        jobs.ping()
        for queue in QUEUES:  # a Redis list per priority (styleprobe.worker.app)
            with jobs.redis.pipeline(transaction=False) as pipe:
                for name in priority_lists(queue):
                    pipe.llen(name)
                set_queue_depth(queue, sum(int(n) for n in pipe.execute()))

    checks: dict[str, Check] = {"redis": redis_and_queues}
    if store.dependency:
        checks[store.dependency] = store.check
    if settings.backend == "triton":
        from styleprobe.backends.triton import triton_client
        from styleprobe.tls import triton_tls

        # bounded reconnect backoff: with gRPC's default (growing to two minutes) the check
        # reported a restarted Triton down for 11-17 s after it was ready
        client = triton_client(settings.triton_url, **triton_tls(settings))

        def triton_ready() -> None:
            if not client.is_server_ready(client_timeout=CHECK_TIMEOUT_S):
                raise RuntimeError(f"Triton at {settings.triton_url} is not ready")

        checks["triton"] = triton_ready
    return checks


class HealthChecker:
    """Runs the checks in threads and sets the health servicer's status from them."""

    def __init__(self, servicer: health.aio.HealthServicer, checks: dict[str, Check],
                 interval_s: float) -> None:
        self.servicer, self.checks, self.interval_s = servicer, checks, interval_s
        self.failing: dict[str, str] | None = None  # check name -> cause; None: not yet run

    async def check_once(self) -> dict[str, str]:
        """Run every check once, set the status, and return the failing ones."""
        results = await asyncio.gather(*(self._run(name, check)
                                         for name, check in self.checks.items()))
        failing = {name: cause for name, cause in results if cause}
        for name in self.checks:
            set_dependency_ready(name, name not in failing)
        status = (health_pb2.HealthCheckResponse.NOT_SERVING if failing
                  else health_pb2.HealthCheckResponse.SERVING)
        for service in ("", SERVICE_NAME):
            await self.servicer.set(service, status)
        if failing != self.failing:
            if failing:
                log.warning("not serving", extra={"failing": failing})
            else:
                log.info("serving", extra={"checks": sorted(self.checks)})
        self.failing = failing
        return failing

    async def run(self) -> None:
        """Check forever, every ``interval_s``."""
        while True:
            await self.check_once()
            await asyncio.sleep(self.interval_s)

    @staticmethod
    async def _run(name: str, check: Check) -> tuple[str, str]:
        try:
            await asyncio.wait_for(asyncio.to_thread(check), CHECK_TIMEOUT_S)
        except Exception as exc:  # any failure of a check means: not serving
            return name, f"{type(exc).__name__}: {exc}"
        return name, ""


async def sync_model_sets(loader: ModelSetLoader, interval_s: float) -> None:
    """Forever, every ``interval_s``: load the sets that Triton does not serve yet.

    A load runs in a thread and may take minutes (GPU warmup); the health checks go on
    meanwhile. While Triton does not answer, the ``triton`` check reports it.
    """
    while True:
        try:
            await asyncio.to_thread(loader.sync)
        except Exception as exc:  # Triton down or restarting: try again next round
            log.debug("model sets not synced", extra={"error": str(exc)})
        await asyncio.sleep(interval_s)
