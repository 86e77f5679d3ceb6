"""Workers' liveness beats on a real Redis broker: an unacknowledged task of a worker that
no longer beats goes back to its queue at the next beat of another, once; a living
worker's stays where it is (issue 17; the e2e test kills both workers of a cohort)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import required
from styleprobe.config import Settings
from styleprobe.explain.spec import JobSpec
from styleprobe.jobs import JobRequest, new_job_id
from styleprobe.storage.local import LocalStore
from styleprobe.testing.redis import redis_server
from styleprobe.worker import cleanup
from styleprobe.worker.app import GPU_QUEUE, make_app, priority_lists
from styleprobe.worker.liveness import RECEIVED, Liveness


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    required.program("redis-server")
    server, url = redis_server(tmp_path)
    server.start()
    yield Settings(redis_url=url, worker_heartbeat_s=0.5)
    server.stop()


def taken_without_ack(channel: Any) -> str:
    """A message taken from the gpu queue by a consumer that then dies: its delivery tag."""
    message = channel.basic_get(GPU_QUEUE, no_ack=False)
    assert message is not None
    channel.qos._delivered.clear()  # a dead consumer gives nothing back on its way out
    return str(message.delivery_tag)


def waiting(client: Any) -> int:
    """Messages waiting in the gpu queue, at any priority."""
    return sum(client.llen(name) for name in priority_lists(GPU_QUEUE))


def test_tasks_of_a_worker_that_stopped_beating_are_handed_out_again(
        settings: Settings) -> None:
    app = make_app(settings)
    for number in range(2):
        app.signature("styleprobe.cohort.chunk", args=("job", number, [])).apply_async()
    watcher = Liveness(settings, app, "watcher")
    alive, dead = Liveness(settings, app, "alive"), Liveness(settings, app, "dead")
    alive.beat()
    with app.connection_for_write() as connection:
        channel = connection.channel()
        kept, lost = taken_without_ack(channel), taken_without_ack(channel)
        alive.received(kept)
        dead.received(lost)
        client = watcher.jobs.redis
        assert waiting(client) == 0
        assert client.hlen(channel.unacked_key) == 2

        assert watcher.revive() == 1
        assert watcher.revive() == 0  # once
        assert waiting(client) == 1
        assert set(client.hkeys(channel.unacked_key)) == {kept}
        assert client.hgetall(RECEIVED) == {kept: "alive"}
        again = channel.basic_get(GPU_QUEUE, no_ack=True)
        assert again is not None and again.headers["id"]
        channel.qos._delivered.clear()
    watcher.jobs.close()


def test_a_heartbeat_must_be_positive(settings: Settings) -> None:
    with pytest.raises(ValueError, match="STYLEPROBE_WORKER_HEARTBEAT_S must be > 0"):
        Liveness(Settings(redis_url=settings.redis_url, worker_heartbeat_s=0),
                 make_app(settings), "x")


def test_each_beat_removes_what_failed_jobs_left_while_the_store_was_down(
        settings: Settings, tmp_path: Path) -> None:
    local = Settings(redis_url=settings.redis_url, worker_heartbeat_s=0.5, store="local",
                     store_dir=str(tmp_path / "store"))
    liveness = Liveness(local, make_app(local), "sweeper")
    jobs, store = liveness.jobs, LocalStore(tmp_path / "store")
    job_id = new_job_id()
    jobs.create(job_id, "explain", JobRequest(JobSpec(model_set="tiny", target="sick")))
    jobs.transition(job_id, ["queued"], state="failed", error="S3 down")
    store.put(f"jobs/{job_id}/input.npy", b"x")
    jobs.redis.sadd(cleanup.PENDING, f"explain:{job_id}")  # as discard() notes it
    liveness.once()
    assert store.list("jobs/") == []
    assert not jobs.redis.scard(cleanup.PENDING)
    assert jobs.redis.exists("styleprobe:worker:alive:sweeper")
    jobs.close()
