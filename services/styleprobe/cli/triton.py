"""``styleprobe triton serve|configs``: serve model sets with Triton; write their configs."""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from styleprobe.cli.common import UserError
from styleprobe.config import Settings


def register(sub: argparse._SubParsersAction) -> None:
    triton = sub.add_parser("triton", help="serve model sets with Triton Inference Server")
    commands = triton.add_subparsers(dest="triton_command", required=True)

    serve = commands.add_parser(
        "serve", help="run tritonserver on CPU (Python backend) over a repository's model sets")
    _repository_args(serve)
    serve.add_argument("--address", default="127.0.0.1",
                       help="address its HTTP, gRPC and metrics ports listen on (default "
                            "loopback only; 0.0.0.0: every interface)")
    serve.add_argument("--http-port", type=int, default=8000)
    serve.add_argument("--grpc-port", type=int, default=8001)
    serve.add_argument("--metrics-port", type=int, default=8002)
    serve.add_argument("--torch-threads", type=int, default=1, help="per model instance")
    serve.add_argument("--ready-timeout", type=float, default=300.0,
                       help="seconds to wait for /v2/health/ready")
    serve.set_defaults(func=_serve)

    configs = commands.add_parser(
        "configs", help="(re)write the production config.pbtxt files (GPU, pytorch_libtorch)")
    _repository_args(configs)
    configs.set_defaults(func=_configs)


def _repository_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--repository", default=None,
                   help="model repository (default: STYLEPROBE_MODEL_REPOSITORY)")
    p.add_argument("--model-set", action="append", default=None,
                   help="only this model set (repeatable; default: every set there)")


def _repository(args: argparse.Namespace) -> Path:
    path = Path(args.repository or Settings.from_env().model_repository)
    if not path.is_dir():
        raise UserError(f"model repository {path} is not a folder")
    return path


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as exc:
            raise UserError(f"port {port} is not free: {exc.strerror}") from exc


def _serve(args: argparse.Namespace) -> None:
    from styleprobe.serving.cpu_repository import build_cpu_repository
    from styleprobe.serving.tritonserver import TritonError, TritonProcess

    repository = _repository(args)
    for port in (args.http_port, args.grpc_port, args.metrics_port):
        _check_port_free(port)
    workdir = Path(tempfile.mkdtemp(prefix="styleprobe-triton-"))
    stop = threading.Event()
    previous: dict[signal.Signals,
                   Callable[[int, FrameType | None], Any] | int | signal.Handlers | None] = {}
    server = None
    try:
        names = build_cpu_repository(repository, workdir / "repository", args.model_set,
                                     torch_threads=args.torch_threads)
        # Sets added to the repository later are served too (all of them: --model-set
        # chooses only those served from the start).
        server = TritonProcess(workdir / "repository", args.http_port, args.grpc_port,
                               args.metrics_port, source=repository,
                               torch_threads=args.torch_threads, address=args.address)
        server.start(args.ready_timeout)
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
        print(f"serving {', '.join(names)}: gRPC {server.grpc_url}, HTTP {server.http_url}, "
              f"metrics {server.metrics_url} (Ctrl-C stops)", flush=True)
        while server.is_running() and not stop.wait(0.5):
            pass
        if not stop.is_set():
            raise UserError(f"tritonserver exited with code {server.wait()}")
    except TritonError as exc:
        raise UserError(str(exc)) from exc
    finally:
        if server:
            server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        shutil.rmtree(workdir, ignore_errors=True)
    print("tritonserver stopped")


def _configs(args: argparse.Namespace) -> None:
    from styleprobe.modelset import list_model_sets, load_model_set
    from styleprobe.serving.triton_config import write_production_configs

    repository = _repository(args)
    names = args.model_set or list_model_sets(repository)
    if not names:
        raise UserError(f"no model sets (*.modelset.json) in {repository}")
    for name in names:
        paths = write_production_configs(repository, load_model_set(repository, name, verify=True))
        print(f"{name}: wrote {', '.join(str(p.relative_to(repository)) for p in paths)}")
