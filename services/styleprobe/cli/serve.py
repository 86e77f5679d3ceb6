"""``styleprobe serve orchestrator|worker|dicom-gateway``: run the service's processes
(the client that calls them is :mod:`styleprobe.cli.client`).

Every setting comes from ``STYLEPROBE_*`` (see :mod:`styleprobe.config`): Redis, the S3
store, the backend, tokens, limits. The gRPC and Celery libraries are imported only when
one of these commands runs. A worker with ``STYLEPROBE_WORKER_METRICS_PORT`` serves the
metrics of all its pool processes (prometheus-client's multiprocess mode: see
:mod:`styleprobe.metrics`).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import replace
from pathlib import Path

from styleprobe.cli.common import UserError
from styleprobe.config import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # read by prometheus-client at its import


def register(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser("serve", help="run a service process (orchestrator, worker or "
                                         "DICOM gateway)")
    which = serve.add_subparsers(dest="process", required=True)
    orchestrator = which.add_parser("orchestrator", help="the gRPC API server")
    orchestrator.add_argument("--listen", default=None,
                              help="host:port (default STYLEPROBE_GRPC_LISTEN)")
    orchestrator.set_defaults(func=_orchestrator)
    worker = which.add_parser("worker", help="a Celery worker for the gpu and/or cpu queue")
    worker.add_argument("--queues", default="gpu,cpu",
                        help="comma-separated: gpu (model calls), cpu (rendering)")
    worker.add_argument("--concurrency", type=int, default=1,
                        help="worker processes (one model backend each)")
    worker.add_argument("--name", default=None, help="worker node name (default: host name)")
    worker.set_defaults(func=_worker)
    gateway = which.add_parser(
        "dicom-gateway", help="the DICOM gateway: C-STORE in, explanations back as DICOM")
    gateway.add_argument("--listen", default=None,
                         help="host:port of its C-STORE SCP (default STYLEPROBE_GATEWAY_LISTEN)")
    gateway.add_argument("--ae-title", default=None,
                         help="its AE title (default STYLEPROBE_GATEWAY_AE_TITLE)")
    gateway.set_defaults(func=_dicom_gateway)


def _orchestrator(args: argparse.Namespace) -> None:
    prepare_metrics_folder(fresh=False)
    from styleprobe.orchestrator.interceptors import parse_tokens
    from styleprobe.orchestrator.server import serve

    settings = Settings.from_env()
    if args.listen:
        settings = replace(settings, grpc_listen=args.listen)
    if not parse_tokens(settings.api_tokens):
        raise UserError("no API tokens: set STYLEPROBE_API_TOKENS or STYLEPROBE_API_TOKENS_FILE")
    serve(settings)


def _worker(args: argparse.Namespace) -> None:
    settings = Settings.from_env()
    prepare_metrics_folder(fresh=bool(settings.worker_metrics_port))
    from styleprobe.metrics import connect_celery_worker
    from styleprobe.worker.app import QUEUES, make_app

    queues = [q.strip() for q in args.queues.split(",") if q.strip()]
    unknown = sorted(set(queues) - set(QUEUES))
    if not queues or unknown:
        raise UserError(f"--queues takes {' and/or '.join(QUEUES)}, got {args.queues!r}")
    if args.concurrency < 1:
        raise UserError("--concurrency must be at least 1")
    try:
        app = make_app(settings)
    except ValueError as exc:  # inconsistent time limits
        raise UserError(str(exc)) from exc
    connect_celery_worker(settings.worker_metrics_port, settings.metrics_host)
    argv = ["worker", "--queues", ",".join(queues), "--concurrency", str(args.concurrency),
            "--pool", "prefork", "--loglevel", "INFO", "--without-gossip", "--without-mingle"]
    if args.name:
        argv += ["--hostname", args.name]
    app.worker_main(argv)


def _dicom_gateway(args: argparse.Namespace) -> None:
    from styleprobe.gateway.routing import RoutingError
    from styleprobe.gateway.server import Gateway

    settings = Settings.from_env()
    if args.listen:
        settings = replace(settings, gateway_listen=args.listen)
    if args.ae_title:
        settings = replace(settings, gateway_ae_title=args.ae_title)
    try:
        gateway = Gateway(settings)
    except (RoutingError, ValueError) as exc:
        raise UserError(str(exc)) from exc
    gateway.serve()


def prepare_metrics_folder(fresh: bool) -> None:
    """Make the folder of prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``)
    when a service process starts, before :mod:`styleprobe.metrics` is imported: samples are
    written there from its first metric on. Nothing to do if the variable is unset, unless
    ``fresh`` (a worker that serves its pool's metrics): then a new temporary folder, and
    either folder is emptied of what an earlier run of the worker left (it is the worker's
    own)."""
    folder = os.environ.get(MULTIPROC_ENV)
    if not folder and not fresh:
        return
    if not folder:
        folder = os.environ[MULTIPROC_ENV] = tempfile.mkdtemp(prefix="styleprobe-metrics-")
    Path(folder).mkdir(parents=True, exist_ok=True)
    if fresh:
        for stale in Path(folder).glob("*.db"):
            stale.unlink()
