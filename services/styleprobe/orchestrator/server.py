"""The orchestrator process: the StyleProbe service, health, reflection (v1 and v1alpha);
a graceful stop.

Limits: requests and responses up to ``grpc_max_message_bytes`` (16 MiB by default: a
large DICOM fits; a larger message is refused with RESOURCE_EXHAUSTED before any handler
runs). On SIGTERM or SIGINT the health status turns NOT_SERVING, new calls are refused,
and calls in flight get ``grpc_grace_s`` seconds to finish before they are cancelled.
It starts whether or not Redis, S3 and Triton answer yet: the health status is
NOT_SERVING until they all do (see :mod:`.health`). With the Triton backend it loads the
model sets added to the model repository onto Triton while it runs
(:func:`.health.sync_model_sets`). With ``metrics_port`` set it serves ``/metrics``
(:mod:`styleprobe.metrics`). Every ``reaper_interval_s`` it removes objects past the
retention period and partial job folders (:mod:`styleprobe.reaper`).

TLS (:mod:`styleprobe.tls`): with ``grpc_tls_cert`` and ``grpc_tls_key`` it serves TLS
only (mTLS with ``grpc_tls_client_ca``); tokens over plaintext are refused unless it
listens on loopback or ``grpc_plaintext_tokens`` allows them. ``grpc_health_listen`` adds
a plaintext listener serving only the health service, for probes that cannot speak TLS.
Refused calls are limited and logged as counts (:mod:`.refusals`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from styleprobe.api import SERVICE_NAME, rpc
from styleprobe.config import Settings
from styleprobe.jobs import JobStore
from styleprobe.metrics import start_metrics_server
from styleprobe.orchestrator.health import HealthChecker, service_checks, sync_model_sets
from styleprobe.orchestrator.interceptors import AuthInterceptor, RequestInterceptor, parse_tokens
from styleprobe.orchestrator.reflection import enable_reflection
from styleprobe.orchestrator.refusals import RefusalLimiter
from styleprobe.orchestrator.service import StyleProbeService
from styleprobe.reaper import Reaper, reap_periodically
from styleprobe.serving.loader import ModelSetLoader
from styleprobe.storage import open_store
from styleprobe.tls import redis_ssl, server_credentials, tokens_need_tls, triton_tls

log = logging.getLogger(__name__)


class Orchestrator:
    """The gRPC server and its health checker, built from ``settings``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        credentials = server_credentials(settings)  # before anything connects: bad files
        self.limiter = RefusalLimiter(settings.auth_refusals_per_s,
                                      settings.auth_refusal_burst,
                                      settings.auth_refusal_delay_s,
                                      settings.auth_log_interval_s)
        auth = AuthInterceptor(parse_tokens(settings.api_tokens),
                               require_tls=tokens_need_tls(settings), limiter=self.limiter)
        # S3 may come up after the orchestrator: the health checker creates the bucket and
        # reports NOT_SERVING until it can.
        self.store = open_store(settings, check=False)
        self.jobs = JobStore(settings.redis_url, settings.job_ttl_s, **redis_ssl(settings))
        size = settings.grpc_max_message_bytes
        self.server = grpc.aio.server(
            interceptors=[RequestInterceptor(), auth],
            options=[("grpc.max_receive_message_length", size),
                     ("grpc.max_send_message_length", size)])
        service = StyleProbeService(settings, self.store, self.jobs)
        rpc.add_StyleProbeServicer_to_server(service, self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_reflection(
            [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name],
            self.server)
        self.tls = credentials is not None
        self.port = (self.server.add_secure_port(settings.grpc_listen, credentials)
                     if credentials else self.server.add_insecure_port(settings.grpc_listen))
        if not self.port:
            raise OSError(f"cannot listen on {settings.grpc_listen}")
        if auth.require_tls and not self.tls:
            log.warning("plaintext on a non-loopback address: every call with a token is "
                        "refused (set STYLEPROBE_GRPC_TLS_CERT and _KEY, or "
                        "STYLEPROBE_GRPC_PLAINTEXT_TOKENS behind a TLS proxy)",
                        extra={"address": settings.grpc_listen})
        self.health_server: grpc.aio.Server | None = None
        if settings.grpc_health_listen:
            self.health_server = grpc.aio.server()
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self.health_server)
            if not self.health_server.add_insecure_port(settings.grpc_health_listen):
                raise OSError(f"cannot listen on {settings.grpc_health_listen}")
        self.checker = HealthChecker(self.health,
                                     service_checks(settings, self.jobs, self.store),
                                     settings.health_interval_s)
        service.checker = self.checker  # Explain and SubmitCohort refused while it fails
        self.loader = (ModelSetLoader(Path(settings.model_repository), settings.triton_url,
                                      triton_tls(settings))
                       if settings.backend == "triton" else None)
        self.reaper = (Reaper.from_settings(settings, self.store, self.jobs)
                       if settings.reaper_interval_s > 0 else None)

    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then stop gracefully."""
        for service in ("", SERVICE_NAME):
            await self.health.set(service, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.server.start()
        if self.health_server:
            await self.health_server.start()
        background = [asyncio.create_task(self.checker.run()),
                      asyncio.create_task(self.limiter.report_every_interval())]
        if self.loader:
            background.append(asyncio.create_task(
                sync_model_sets(self.loader, self.settings.health_interval_s)))
        if self.reaper:
            background.append(asyncio.create_task(
                reap_periodically(self.reaper, self.settings.reaper_interval_s)))
        log.info("orchestrator listening", extra={"address": self.settings.grpc_listen,
                                                  "port": self.port, "tls": self.tls})
        await stop.wait()
        log.info("orchestrator stopping", extra={"grace_s": self.settings.grpc_grace_s})
        await self.health.enter_graceful_shutdown()
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.server.stop(self.settings.grpc_grace_s)
        if self.health_server:
            await self.health_server.stop(None)
        self.jobs.close()
        if self.loader:
            self.loader.close()
        log.info("orchestrator stopped")


def serve(settings: Settings) -> None:
    """Run the orchestrator until SIGTERM or SIGINT."""
    if settings.metrics_port:
        start_metrics_server(settings.metrics_port, settings.metrics_host)

    async def main() -> None:
        orchestrator = Orchestrator(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await orchestrator.run(stop)

    asyncio.run(main())
