"""Run the ``tritonserver`` binary that ships in the ``nvidia-pytriton`` wheel.

The wheel holds Triton 2.51 with the Python backend. Two details make its stub run the
exported TorchScript (DESIGN.md section 5): the stub links ``libpython3.11``, so this
interpreter's ``LIBDIR`` comes first on ``LD_LIBRARY_PATH`` (with the wheel's
``nvidia_pytriton.libs`` after it), and the stub's embedded Python finds its environment
through the ``python3`` first on ``PATH``, so this interpreter's ``bin`` folder leads
``PATH``. The stub for this Python version is copied once into a cache folder that serves
as Triton's backend directory.

The server runs in explicit model-control mode (``--load-model=*`` loads everything at
start). Given the ``source`` repository that its CPU repository was built from, a
:class:`TritonProcess` also watches it while it runs: every ``poll_s`` it adds the sets
that appeared there to its CPU repository and loads them
(:mod:`styleprobe.serving.loader`), so a set dropped into ``source`` is served without a
restart.

It listens on loopback (``127.0.0.1``: HTTP, gRPC and metrics) unless given another
``address`` (``0.0.0.0``: every interface): Triton has no authentication of its own.
With ``grpc_tls`` its gRPC port speaks TLS only.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

from styleprobe.serving.cpu_repository import add_new_cpu_model_sets
from styleprobe.serving.loader import ModelSetLoader

log = logging.getLogger(__name__)
EXIT_TIMEOUT_S = 30  # how long tritonserver waits for requests and model unloads on shutdown
POLL_S = 2.0  # how often a server with a source repository looks for new model sets
LOOPBACK = "127.0.0.1"  # where the server listens unless told otherwise


class TritonError(RuntimeError):
    """tritonserver is not installed, did not start or did not stop."""


def distribution() -> Path:
    """The ``tritonserver`` folder of the installed ``nvidia-pytriton`` wheel."""
    spec = importlib.util.find_spec("pytriton")  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise TritonError("nvidia-pytriton is not installed (pip install -e '.[serving]')")
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "styleprobe"


def backend_directory() -> Path:
    """Triton's backend folder: the wheel's Python backend with this Python's stub."""
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    wheel = importlib.metadata.version("nvidia-pytriton")
    target = _cache_root() / f"triton-backends-{wheel}-py{python}"
    stub = target / "python" / "triton_python_backend_stub"
    if stub.is_file():
        return target
    dist = distribution()
    source_stub = dist / "python_backend_stubs" / python / "triton_python_backend_stub"
    if not source_stub.is_file():
        raise TritonError(f"nvidia-pytriton {wheel} has no Python-backend stub for Python "
                          f"{python}")
    staging = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(dist / "backends", staging, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(source_stub, staging / "python" / "triton_python_backend_stub")
    try:
        staging.rename(target)
    except OSError:  # another process got there first
        shutil.rmtree(staging, ignore_errors=True)
    return target


def server_environment() -> dict[str, str]:
    """This process's environment, made right for tritonserver and its Python stubs."""
    env = dict(os.environ)
    libs = distribution().parent.parent / "nvidia_pytriton.libs"
    paths = [sysconfig.get_config_var("LIBDIR"), str(libs), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in paths if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def python_stubs(parent: int | None, among: list[int] | None = None) -> list[int]:
    """Process ids of Python-backend stubs (Linux ``/proc``): children of ``parent`` if it
    is given, among the ids ``among`` if they are given."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        pid = int(stat.parent.name)
        if among is not None and pid not in among:
            continue
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
        if parent in (None, ppid) and b"triton_python_backend_stub" in command:
            found.append(pid)
    return found


class TritonProcess:
    """One ``tritonserver`` process serving ``repository`` on the given ports.

    Its output goes to ``log_path`` (``None``: this process's stdout and stderr). With
    ``source``, the model repository that the CPU ``repository`` was built from, new sets
    of ``source`` are added and loaded while it runs (``torch_threads`` per instance).
    It listens on ``address`` (loopback by default); ``grpc_tls``: (certificate, key, CA
    bundle) PEM files, its gRPC port then speaks TLS (the CA verifies it for the model-set
    watcher). Use it as a context manager, or :meth:`start` and :meth:`stop` (by process
    id, SIGTERM first).
    """

    def __init__(self, repository: Path, http_port: int, grpc_port: int, metrics_port: int,
                 log_path: Path | None = None, source: Path | None = None,
                 torch_threads: int = 1, poll_s: float = POLL_S,
                 address: str = LOOPBACK,
                 grpc_tls: tuple[Path, Path, Path] | None = None) -> None:
        self.repository = Path(repository)
        self.address, self.grpc_tls = address, grpc_tls
        self.http_port, self.grpc_port, self.metrics_port = http_port, grpc_port, metrics_port
        self.log_path = log_path
        self.source, self.torch_threads, self.poll_s = source, torch_threads, poll_s
        self._process: subprocess.Popen[bytes] | None = None
        self._stop_watching = threading.Event()
        self._watcher: threading.Thread | None = None

    @property
    def host(self) -> str:
        """Where this machine reaches it: its address, or loopback for a wildcard one."""
        if self.address in ("0.0.0.0", "::", "[::]", ""):
            return LOOPBACK
        return f"[{self.address}]" if ":" in self.address else self.address

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def command(self) -> list[str]:
        return [
            str(distribution() / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backend_directory()}",
            f"--http-address={self.address}", f"--http-port={self.http_port}",
            f"--grpc-address={self.address}", f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.address}", f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            # as in production (deploy/docker/triton.Dockerfile): strict readiness would
            # report the server not ready during every later load of a new model set
            "--model-control-mode=explicit", "--load-model=*", "--strict-readiness=false",
            "--disable-auto-complete-config", "--exit-on-error=true",
            f"--exit-timeout-secs={EXIT_TIMEOUT_S}",
            *self._tls_args(),
        ]

    def _tls_args(self) -> list[str]:
        if self.grpc_tls is None:
            return []
        cert, key, _ = self.grpc_tls
        return ["--grpc-use-ssl=true", f"--grpc-server-cert={cert}",
                f"--grpc-server-key={key}"]

    def start(self, timeout_s: float = 300.0) -> TritonProcess:
        """Start the server and return once ``/v2/health/ready`` says so."""
        if self.is_running():
            raise TritonError(f"tritonserver (pid {self.pid}) is already running")
        output = self.log_path.open("ab") if self.log_path else None
        try:
            # A session of its own: a Ctrl-C meant for the caller reaches it only by stop().
            self._process = subprocess.Popen(self.command(), env=server_environment(),
                                             stdout=output, stderr=subprocess.STDOUT,
                                             start_new_session=True)
        finally:
            if output:
                output.close()
        log.info("tritonserver started", extra={"pid": self.pid, "grpc": self.grpc_url})
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        if self.source is not None:
            self._stop_watching.clear()
            self._watcher = threading.Thread(target=self._watch, args=(self.source,),
                                             name="triton-model-sets", daemon=True)
            self._watcher.start()
        return self

    def _watch(self, source: Path) -> None:
        """Until :meth:`stop`: add new sets of ``source`` to the repository, load them."""
        tls = ({"ssl": True, "root_certificates": str(self.grpc_tls[2])}
               if self.grpc_tls else None)
        loader = ModelSetLoader(self.repository, self.grpc_url, tls)
        try:
            while not self._stop_watching.wait(self.poll_s):
                add_new_cpu_model_sets(source, self.repository, self.torch_threads)
                try:
                    loader.sync()
                except Exception as exc:  # the server is stopping, or busy: try again later
                    log.warning("model sets not synced", extra={"error": str(exc)})
        finally:
            loader.close()

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.is_running():
                code = self._process.returncode if self._process else None
                raise TritonError(f"tritonserver exited with code {code} before it was "
                                  f"ready{self._log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.25)
        raise TritonError(f"tritonserver was not ready within {timeout_s:.0f} s"
                          f"{self._log_tail()}")

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def is_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, timeout_s: float = EXIT_TIMEOUT_S + 5) -> None:
        """SIGTERM by process id, then SIGKILL if it has not exited within ``timeout_s``.

        Python-backend stubs that outlive it (tritonserver leaves them behind when its
        exit timeout expires before they have unloaded) are killed by their ids.
        """
        self._stop_watching.set()
        if self._process is None:
            return
        stubs = python_stubs(self._process.pid)
        if self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._process.pid, signal.SIGTERM)
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("tritonserver ignored SIGTERM; killing it", extra={"pid": self.pid})
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._process.pid, signal.SIGKILL)
                self._process.wait()
        for pid in python_stubs(None, among=stubs):  # left behind if the exit timeout expired
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._watcher is not None:  # a load in flight has failed with the server
            self._watcher.join()
            self._watcher = None
        log.info("tritonserver stopped", extra={"pid": self.pid,
                                                "returncode": self._process.returncode})

    def wait(self) -> int:
        """Block until the server exits; its exit code."""
        if self._process is None:
            raise TritonError("tritonserver was never started")
        return self._process.wait()

    def _log_tail(self, lines: int = 30) -> str:
        if not self.log_path or not self.log_path.is_file():
            return " (see its output above)"
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return ":\n" + "\n".join(tail)

    def __enter__(self) -> TritonProcess:
        """Start it, unless ``with process.start(timeout_s=...)`` already did."""
        return self if self.is_running() else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
