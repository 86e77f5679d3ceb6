"""A fresh ``redis-server`` on a free port (over TLS when given a certificate)."""

from __future__ import annotations

from pathlib import Path

from styleprobe.testing.ports import free_port
from styleprobe.testing.process import ServerProcess, venv_program


def redis_server(workdir: Path, persistent: bool = False,
                 tls: tuple[Path, Path, Path] | None = None) -> tuple[ServerProcess, str]:
    """A fresh ``redis-server`` and its URL; ``persistent``: every write is in its
    append-only file in ``workdir`` before it is answered, so a restart keeps everything.
    ``tls``: (certificate, key, CA bundle) PEM files; it then speaks only TLS (no client
    certificates asked) and its URL is ``rediss://``."""
    port = free_port()
    appendonly = ["yes", "--appendfsync", "always"] if persistent else ["no"]
    listen = ["--port", str(port)]
    if tls:
        cert, key, ca = tls
        listen = ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert),
                  "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
                  "--tls-auth-clients", "no"]
    command = [venv_program("redis-server"), *listen, "--bind", "127.0.0.1",
               "--save", "", "--appendonly", *appendonly, "--dir", str(workdir)]

    def ready() -> bool:
        import redis

        try:
            return bool(redis.Redis(port=port, socket_timeout=1, ssl=tls is not None,
                                    ssl_ca_certs=str(tls[2]) if tls else None).ping())
        except redis.RedisError:
            return False

    scheme = "rediss" if tls else "redis"
    return (ServerProcess("redis-server", command, ready, workdir / "redis.log"),
            f"{scheme}://127.0.0.1:{port}/0")
