"""The orchestrator starts while S3 is down: it answers health checks with NOT_SERVING
(and its metrics say S3 is not ready), and turns SERVING once S3 comes up."""

from __future__ import annotations

import os
import secrets
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

import required
from styleprobe.config import Settings
from styleprobe.testing.ports import free_port
from styleprobe.testing.process import ServerProcess
from styleprobe.testing.s3 import S3_ACCESS_KEY, s3_server

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def health(address: str) -> int | None:
    """The server's health status, None if it does not answer."""
    with grpc.insecure_channel(address) as channel:
        try:
            return health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1).status
        except grpc.RpcError:
            return None


def s3_ready(metrics_url: str) -> float | None:
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        page = response.read().decode()
    for family in text_string_to_metric_families(page):
        for sample in family.samples:
            if (sample.name == "styleprobe_dependency_ready"
                    and sample.labels == {"dependency": "s3"}):
                return sample.value
    return None


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def test_orchestrator_starts_with_s3_down_and_serves_once_it_is_up(
        tiny_repository: Path, tmp_path: Path) -> None:
    program = required.program("styleprobe")
    required.program("weed")
    (tmp_path / "s3").mkdir()
    secret = secrets.token_urlsafe(16)
    s3, endpoint = s3_server(tmp_path / "s3", secret)  # not started yet
    address, metrics_port = f"127.0.0.1:{free_port()}", free_port()
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    redis_url = required.running_redis(Settings.from_env().redis_url)
    env = {key: value for key, value in os.environ.items() if not key.startswith("STYLEPROBE_")}
    env.update({
        "STYLEPROBE_REDIS_URL": redis_url, "STYLEPROBE_STORE": "s3",
        "STYLEPROBE_S3_ENDPOINT": endpoint, "STYLEPROBE_S3_ACCESS_KEY": S3_ACCESS_KEY,
        "STYLEPROBE_S3_SECRET_KEY": secret, "STYLEPROBE_S3_BUCKET": "health-test",
        "STYLEPROBE_MODEL_REPOSITORY": str(tiny_repository), "STYLEPROBE_API_TOKENS": "t",
        "STYLEPROBE_GRPC_LISTEN": address, "STYLEPROBE_HEALTH_INTERVAL_S": "0.5",
        "STYLEPROBE_METRICS_PORT": str(metrics_port), "STYLEPROBE_METRICS_HOST": "127.0.0.1",
    })
    orchestrator = ServerProcess(
        "orchestrator", [program, "--log-level", "INFO", "serve", "orchestrator"],
        lambda: health(address) is not None, tmp_path / "orchestrator.log", env)
    orchestrator.start(timeout_s=120)
    try:
        wait_for(lambda: s3_ready(metrics_url) == 0, "the first health round")
        assert health(address) == NOT_SERVING
        assert orchestrator.running()
        s3.start(timeout_s=90)
        wait_for(lambda: health(address) == SERVING, "SERVING once S3 is up")
        assert s3_ready(metrics_url) == 1
    finally:
        orchestrator.stop()
        s3.stop()
