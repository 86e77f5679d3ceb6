"""The whole service on one machine, on free ports: for tests, benchmarks and a first try.

:class:`ServiceStack` starts the backing servers (:mod:`.redis`, :mod:`.s3`) and the
service's own processes (orchestrator, Celery workers) in order, with one shared
configuration.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from types import TracebackType

from styleprobe.config import Settings
from styleprobe.healthcheck import grpc_serving
from styleprobe.testing.ports import free_port
from styleprobe.testing.process import ServerProcess, venv_program
from styleprobe.testing.redis import redis_server
from styleprobe.testing.s3 import S3_ACCESS_KEY, s3_server


def worker_answers(settings: Settings, node: str) -> bool:
    """Whether Celery worker ``node`` answers a ping through the broker now, asked by the
    service's own Celery app (the same transport options: key separator, TLS). Each ping
    opens a connection of its own: kombu's pooled ones outlive a Redis restart, and a ping
    over one failed with "Connection closed by server" (issue 17)."""
    from kombu.exceptions import OperationalError
    from redis.exceptions import RedisError

    from styleprobe.worker.app import make_app

    control = make_app(settings)
    try:
        with control.connection_for_write() as connection:
            return bool(control.control.ping(destination=[node], timeout=0.5,
                                             connection=connection))
    except (OperationalError, RedisError, OSError):
        return False  # the broker is not back yet: asked again


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
        node = f"{name}@styleprobe"
        command = [venv_program("styleprobe"), "--log-level", "INFO", "serve",
                   "worker", "--queues", queues, "--name", node]

        port = free_port()  # each worker its own metrics port and samples folder
        env = {**self.env, "STYLEPROBE_WORKER_METRICS_PORT": str(port),
               "PROMETHEUS_MULTIPROC_DIR": str(self.workdir / f"{name}-metrics")}
        settings = self.settings()
        worker = ServerProcess(name, command, lambda: worker_answers(settings, node),
                               self.workdir / f"{name}.log", env)
        self.workers[node] = worker.launch()
        self.metrics_urls[node] = f"http://127.0.0.1:{port}/metrics"
        return worker

    def stop(self) -> None:
        """Stop the service processes first (all at once), then the servers they use."""
        own = [p for p in (*self.workers.values(), self.orchestrator) if p is not None]
        for process in own:
            process.terminate()
        for server in [*own, self.s3, self.redis]:
            if server is not None:
                server.stop()

    def __enter__(self) -> ServiceStack:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
