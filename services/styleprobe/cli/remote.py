"""The command line's client of the orchestrator: its server options (address, token,
TLS), a channel and a stub, job watching that rides out a dropped stream, and downloads
of presigned URLs."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from styleprobe.cli.common import UserError

if TYPE_CHECKING:
    from styleprobe.api import pb, rpc
    from styleprobe.tls import ClientTLS

RECONNECT_S = 120.0  # how long a watch reopens a stream the service dropped
RECONNECT_PAUSE_S = 1.0
DROPPED = ("UNAVAILABLE", "CANCELLED")  # how a stream ends when its server stops or dies
# the channel tries to reconnect at most this far apart (gRPC's default grows to 120 s)
CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 500),
                   ("grpc.max_reconnect_backoff_ms", 4000))


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that reach a service: ``--server``, ``--token``, and TLS (``--tls``,
    ``--ca``; ``--cert`` and ``--key`` for mTLS)."""
    parser.add_argument("--server", default="127.0.0.1:50051", help="the orchestrator's address")
    parser.add_argument("--token", default=os.environ.get("STYLEPROBE_TOKEN", ""),
                        help="bearer token (default: STYLEPROBE_TOKEN)")
    parser.add_argument("--tls", action="store_true",
                        help="connect over TLS (implied by --ca, --cert and --key)")
    parser.add_argument("--ca", default="",
                        help="PEM CA bundle the server's certificate is checked against "
                             "(default: the system's roots)")
    parser.add_argument("--cert", default="", help="PEM client certificate, for mTLS")
    parser.add_argument("--key", default="", help="PEM key of --cert")


def client_tls(args: argparse.Namespace) -> ClientTLS | None:
    """The TLS of ``args`` (:func:`add_server_arguments`); ``None``: plaintext."""
    from styleprobe.tls import ClientTLS

    if not (args.tls or args.ca or args.cert or args.key):
        return None
    return ClientTLS(ca=args.ca, cert=args.cert, key=args.key)


@contextmanager
def service(args: argparse.Namespace) -> Iterator[tuple[rpc.StyleProbeStub, tuple]]:
    """A stub of the service at ``args.server`` (over TLS as ``args`` say) and the call
    metadata (``args.token`` as the bearer token); a TLS file that cannot be read, or an
    error the service answers, becomes one line and exit code 2."""
    import grpc

    from styleprobe.api import rpc
    from styleprobe.tls import TLSConfigError, open_channel

    metadata = (("authorization", f"Bearer {args.token}"),)
    try:
        channel = open_channel(args.server, client_tls(args), CHANNEL_OPTIONS)
    except TLSConfigError as exc:
        raise UserError(str(exc)) from exc
    with channel:
        try:
            yield rpc.StyleProbeStub(channel), metadata
        except grpc.RpcError as exc:
            raise UserError(f"{exc.code().name}: {exc.details()}") from exc


def download(url: str, args: argparse.Namespace, timeout_s: float) -> bytes:
    """The bytes at a presigned ``url``. Over HTTPS the server's certificate is checked
    against the system's roots and, with ``--ca``, that CA too (a hospital's CA that signed
    S3's certificate as well as the orchestrator's)."""
    import ssl
    import urllib.request

    context = ssl.create_default_context()
    if args.ca:
        context.load_verify_locations(args.ca)
    with urllib.request.urlopen(url, timeout=timeout_s, context=context) as response:
        data: bytes = response.read()
    return data


def watch_job(stub: rpc.StyleProbeStub, metadata: tuple, job_id: str,
              timeout_s: float | None) -> Iterator[pb.JobEvent]:
    """WatchJob's events until the job ends. A stream the service dropped (an
    orchestrator restart, a rolling update, a crash) is reopened for up to
    :data:`RECONNECT_S`; the first event of a new stream is the job as it stands."""
    import grpc

    from styleprobe.api import pb

    lost_at: float | None = None
    while True:
        try:
            for event in stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=metadata,
                                       timeout=timeout_s):
                lost_at = None
                yield event
            return  # the service ends the stream when the job has ended
        except grpc.RpcError as exc:
            if exc.code().name not in DROPPED:
                raise
            if lost_at is None:
                lost_at = time.monotonic()
                print(f"lost the stream of job {job_id} ({exc.details()}); reopening it for "
                      f"up to {RECONNECT_S:.0f} s", file=sys.stderr)
            elif time.monotonic() - lost_at > RECONNECT_S:
                raise
            time.sleep(RECONNECT_PAUSE_S)
