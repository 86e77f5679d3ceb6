"""A fresh ``redis-server`` on a free port."""

from __future__ import annotations

from pathlib import Path

from styleprobe.testing.ports import free_port
from styleprobe.testing.process import ServerProcess, venv_program


def redis_server(workdir: Path, persistent: bool = False) -> tuple[ServerProcess, str]:
    """A fresh ``redis-server`` and its URL; ``persistent``: every write is in its
    append-only file in ``workdir`` before it is answered, so a restart keeps everything."""
    port = free_port()
    appendonly = ["yes", "--appendfsync", "always"] if persistent else ["no"]
    command = [venv_program("redis-server"), "--port", str(port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", *appendonly, "--dir", str(workdir)]

    def ready() -> bool:
        import redis

        try:
            return bool(redis.Redis(port=port, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    return (ServerProcess("redis-server", command, ready, workdir / "redis.log"),
            f"redis://127.0.0.1:{port}/0")
