"""Container health checks: ``python -m styleprobe.healthcheck orchestrator|worker``.

Exit code 0 when healthy, 1 otherwise, with one line on stderr saying why. The image's
``HEALTHCHECK``, docker-compose.yml and the Helm chart's worker probes run it.

- ``orchestrator``: the standard ``grpc.health.v1`` service on this host, at the port of
  ``STYLEPROBE_GRPC_HEALTH_LISTEN`` if set, else ``STYLEPROBE_GRPC_LISTEN``, answers
  SERVING (so Redis, the object store and Triton are reachable too: the orchestrator's
  own checker decides).
- ``worker --name NODE``: the Celery worker node ``NODE`` answers a ping over the broker
  (``STYLEPROBE_REDIS_URL``). ``%h`` in the name stands for this host's name, as in
  ``styleprobe serve worker --name``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from styleprobe.config import Settings

DEFAULT_NODE = "celery@%h"


def listen_port(listen: str) -> int:
    """The port of a ``host:port`` (or ``[v6]:port``) listen address."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"STYLEPROBE_GRPC_LISTEN={listen!r} is not host:port")
    return int(port)


def grpc_serving(address: str) -> bool:
    """Whether the gRPC health service at ``address`` answers SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            # types-grpcio-health-checking declares HealthStub without its methods
            answer = health_pb2_grpc.HealthStub(channel).Check(  # type: ignore[attr-defined]
                health_pb2.HealthCheckRequest(service=""), timeout=1)
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


def check_orchestrator(settings: Settings) -> str:
    """Empty when the local orchestrator is SERVING; otherwise why not. It asks the
    plaintext health listener (``STYLEPROBE_GRPC_HEALTH_LISTEN``) where there is one."""
    listen = settings.grpc_health_listen or settings.grpc_listen
    address = f"127.0.0.1:{listen_port(listen)}"
    if grpc_serving(address):
        return ""
    return f"the orchestrator at {address} is not SERVING (or does not answer)"


def check_worker(settings: Settings, node: str, timeout_s: float) -> str:
    """Empty when the Celery worker ``node`` answers a ping; otherwise why not."""
    from celery import Celery
    from celery.utils.nodenames import host_format

    name = host_format(node)
    from styleprobe.tls import redis_ssl

    control = Celery("styleprobe-healthcheck", broker=settings.redis_url)
    tls = redis_ssl(settings)
    if tls:
        control.conf.broker_use_ssl = tls
    try:
        replies = control.control.ping(destination=[name], timeout=timeout_s)
    except Exception as exc:  # the broker is down or refuses us: unhealthy, say why
        return f"cannot reach the broker at {settings.redis_url}: {exc}"
    finally:
        control.close()
    if any(name in reply for reply in replies):
        return ""
    return f"worker {name} did not answer a ping within {timeout_s:g} s"


def run(argv: Sequence[str] | None = None) -> int:
    """Run one check; the exit code."""
    parser = argparse.ArgumentParser(prog="python -m styleprobe.healthcheck",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("role", choices=["orchestrator", "worker"])
    parser.add_argument("--name", default=DEFAULT_NODE,
                        help=f"the worker's node name (default {DEFAULT_NODE})")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait")
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env()
        problem = (check_orchestrator(settings) if args.role == "orchestrator"
                   else check_worker(settings, args.name, args.timeout))
    except ValueError as exc:
        problem = str(exc)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(run())
