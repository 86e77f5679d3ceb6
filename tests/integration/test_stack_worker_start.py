"""``ServiceStack.start_worker()`` after a Redis restart: it raised ``ConnectionError:
Connection closed by server`` (its readiness ping reused a pooled broker connection that
the restart had closed); it starts the worker now (issue 17)."""

from __future__ import annotations

from pathlib import Path

import required
from styleprobe.testing.redis import redis_server
from styleprobe.testing.stack import ServiceStack


def test_start_worker_after_a_redis_restart(tiny_repository: Path, tmp_path: Path) -> None:
    required.program("redis-server")
    stack = ServiceStack(tmp_path, tiny_repository, workers=0, persistent_redis=True)
    stack.redis, redis_url = redis_server(tmp_path, persistent=True)
    stack.redis.start()
    # no S3 needed: a worker opens its store on its first task
    stack.env = stack._environment(redis_url, "127.0.0.1:9")
    try:
        first = stack.start_worker("before")
        stack.redis.stop()
        stack.redis.start()
        second = stack.start_worker("after")  # raised ConnectionError before the fix
        assert first.running() and second.running()
    finally:
        stack.stop()
