"""Redis over TLS verifies the server's certificate (issue 18: kombu's default for
``rediss://`` did not). A real ``redis-server`` speaking only TLS with a certificate from a
CA made in the test: the job store and the Celery broker connection refuse it when they
trust another CA, or only the system's roots, and work with the right CA bundle."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from styleprobe.config import Settings
from styleprobe.jobs import JobStore
from styleprobe.testing.certs import TestCA
from styleprobe.testing.redis import redis_server
from styleprobe.tls import redis_ssl
from styleprobe.worker.app import make_app


@pytest.fixture(scope="module")
def cas(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TestCA]:
    folder = tmp_path_factory.mktemp("certs")
    return {"redis": TestCA(folder, "redis"), "other": TestCA(folder, "other")}


@pytest.fixture(scope="module")
def tls_redis(cas: dict[str, TestCA], tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[str]:
    issued = cas["redis"].issue("redis-server")
    server, url = redis_server(tmp_path_factory.mktemp("redis"),
                               tls=(issued.cert, issued.key, cas["redis"].cert))
    server.start()
    try:
        yield url
    finally:
        server.stop()


def settings(url: str, bundle: Path | None) -> Settings:
    return Settings(redis_url=url, tls_ca_bundle=str(bundle) if bundle else "")


def broker_connects(config: Settings) -> None:
    app = make_app(config)
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)
        connection.default_channel.client.ping()


def test_the_job_store_verifies_redis(tls_redis: str, cas: dict[str, TestCA]) -> None:
    assert tls_redis.startswith("rediss://")
    for bundle in (cas["other"].cert, None):  # another CA; the system's roots
        config = settings(tls_redis, bundle)
        with pytest.raises(redis.ConnectionError, match="certificate verify failed"):
            JobStore(config.redis_url, **redis_ssl(config)).ping()
    config = settings(tls_redis, cas["redis"].cert)
    jobs = JobStore(config.redis_url, **redis_ssl(config))
    jobs.ping()
    jobs.redis.set("tls-check", "1")
    assert jobs.redis.get("tls-check") == "1"


def test_the_celery_broker_verifies_redis(tls_redis: str, cas: dict[str, TestCA]) -> None:
    with pytest.raises(Exception, match="certificate verify failed"):
        broker_connects(settings(tls_redis, cas["other"].cert))
    broker_connects(settings(tls_redis, cas["redis"].cert))


def test_plain_redis_needs_no_tls_options() -> None:
    assert redis_ssl(Settings(redis_url="redis://127.0.0.1:6379/0")) == {}
