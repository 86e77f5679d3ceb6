"""``python -m styleprobe.healthcheck``: the containers' health checks, against real servers.

The orchestrator check talks to a real grpc.health.v1 server; the worker check pings a
real Celery worker (in a thread, on a Redis database of its own) over the machine's Redis.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from celery import Celery
from celery.contrib.testing.worker import start_worker
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import required
from styleprobe.healthcheck import listen_port, run
from styleprobe.testing.ports import free_port

REDIS_URL = "redis://127.0.0.1:6379/14"


@pytest.fixture()
def health_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[health.HealthServicer]:
    """A gRPC health service on a free port that STYLEPROBE_GRPC_LISTEN names."""
    port = free_port()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    monkeypatch.setenv("STYLEPROBE_GRPC_LISTEN", f"0.0.0.0:{port}")
    yield servicer
    server.stop(None)


def test_orchestrator_is_healthy_only_while_serving(
        health_server: health.HealthServicer, capsys: pytest.CaptureFixture[str]) -> None:
    health_server.set("", health_pb2.HealthCheckResponse.SERVING)
    assert run(["orchestrator"]) == 0
    health_server.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert run(["orchestrator"]) == 1
    assert "is not SERVING" in capsys.readouterr().err


def test_orchestrator_that_does_not_listen_is_unhealthy(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STYLEPROBE_GRPC_LISTEN", f"0.0.0.0:{free_port()}")
    assert run(["orchestrator"]) == 1
    monkeypatch.setenv("STYLEPROBE_GRPC_LISTEN", "no-port")
    assert run(["orchestrator"]) == 1
    assert "is not host:port" in capsys.readouterr().err


def test_listen_port() -> None:
    assert listen_port("0.0.0.0:50051") == 50051
    assert listen_port("[::]:7000") == 7000


def test_worker_is_healthy_while_its_node_answers(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STYLEPROBE_REDIS_URL", required.running_redis(REDIS_URL))
    app = Celery("healthcheck-test", broker=REDIS_URL)
    with start_worker(app, pool="solo", perform_ping_check=False, loglevel="WARNING",
                      hostname=f"gpu@{socket.gethostname()}"):
        assert run(["worker", "--name", "gpu@%h", "--timeout", "3"]) == 0
        assert run(["worker", "--name", "cpu@%h", "--timeout", "0.5"]) == 1
    assert "did not answer a ping" in capsys.readouterr().err


def test_worker_without_a_broker_is_unhealthy(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STYLEPROBE_REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    assert run(["worker", "--timeout", "0.5"]) == 1
    assert "unhealthy:" in capsys.readouterr().err
