"""``styleprobe triton serve`` stopped in the middle of a run: retried, then reported, no hang."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import required
from styleprobe.backends import BackendError
from styleprobe.modelset import load_model_set
from styleprobe.serving.tritonserver import python_stubs
from styleprobe.testing.ports import free_port

triton = required.module("styleprobe.backends.triton")
required.package("pytriton")
SERVE = "from styleprobe.cli import main; main()"


def wait_serving(cli: subprocess.Popen[bytes], output: Path, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while "serving tiny" not in output.read_text(errors="replace"):
        assert cli.poll() is None, f"serve exited early:\n{output.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "serve was not ready in time"
        time.sleep(0.5)


def status(pid: int) -> list[str]:
    """Fields of ``/proc/<pid>/stat`` after the command name (state, parent, ...)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return []


def children(pid: int) -> list[int]:
    return [int(p.name) for p in Path("/proc").glob("[0-9]*")
            if status(int(p.name))[1:2] == [str(pid)]]


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (not gone, not a zombie)."""
    return status(pid)[:1] not in ([], ["Z"])


def nothing_listens(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_server_stopped_mid_run(two_set_repository: Path, tmp_path: Path) -> None:
    http, grpc, metrics = free_port(), free_port(), free_port()
    output = tmp_path / "serve.out"
    with output.open("wb") as sink:
        cli = subprocess.Popen(
            [sys.executable, "-c", SERVE, "triton", "serve", "--repository",
             str(two_set_repository), "--model-set", "tiny", "--http-port", str(http),
             "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--ready-timeout", "900"],
            stdout=sink, stderr=subprocess.STDOUT)
    try:
        wait_serving(cli, output)
        model_set = load_model_set(two_set_repository, "tiny")
        backend = triton.TritonBackend(model_set, f"127.0.0.1:{grpc}", timeout_s=20,
                                       retries=3, backoff_s=0.2)
        w = backend.mapping(np.random.default_rng(0).standard_normal(
            (40, model_set.z_dim)).astype(np.float32))
        done: list[int] = []
        failure: list[BackendError] = []

        def explain_forever() -> None:
            try:
                while True:
                    backend.decode_and_classify(w)
                    done.append(1)
            except BackendError as exc:
                failure.append(exc)

        worker = threading.Thread(target=explain_forever, daemon=True)
        worker.start()
        while len(done) < 3 and worker.is_alive():
            time.sleep(0.05)
        stubs = [stub for server in children(cli.pid) for stub in python_stubs(server)]
        assert len(stubs) == 6  # one per model of the set (with StyleSpace: styles, stylesynthesis)
        os.kill(cli.pid, signal.SIGTERM)  # `serve` stops tritonserver on SIGTERM
        worker.join(120)
        assert not worker.is_alive(), "a call hung after the server stopped"
        assert len(done) >= 3
        message = str(failure[0])
        assert "tiny-" in message and "unavailable" in message and "after 4 attempts" in message
        assert cli.wait(60) == 0
        assert "tritonserver stopped" in output.read_text(errors="replace")
        assert nothing_listens(grpc) and nothing_listens(http)
        assert not [pid for pid in stubs if running(pid)]
        with pytest.raises(BackendError, match=r"tiny-mapping: Triton at .* is unavailable"):
            backend.mapping(np.zeros((1, model_set.z_dim), np.float32))
    finally:
        if cli.poll() is None:
            os.kill(cli.pid, signal.SIGTERM)
            cli.wait(60)


def test_serve_refuses_a_busy_port(two_set_repository: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-c", SERVE, "triton", "serve", "--repository",
             str(two_set_repository), "--http-port", str(free_port()), "--grpc-port", str(port),
             "--metrics-port", str(free_port())],
            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"port {port} is not free" in result.stderr
