"""All configuration in one place, read from ``STYLEPROBE_*`` environment variables.

The defaults run the embedded mode: TorchScript in process, a local artifact directory,
inline execution. Each service reads the same :class:`Settings`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_REPOSITORY = REPO_ROOT / "model_repository"


@dataclass(frozen=True)
class Settings:
    """Process settings; each field is read from ``STYLEPROBE_<FIELD NAME IN CAPITALS>``,
    or from the file that ``STYLEPROBE_<NAME>_FILE`` names (for secrets)."""

    model_repository: str = str(DEFAULT_MODEL_REPOSITORY)
    backend: str = "local"  # local | triton
    local_device: str = "cpu"  # torch device of the local backend: cpu, cuda, cuda:1
    triton_url: str = "127.0.0.1:8001"  # gRPC
    triton_timeout_s: float = 30.0  # deadline of every Triton call
    triton_retries: int = 4  # retries (with backoff) when Triton is UNAVAILABLE
    triton_concurrency: int = 4  # chunks of one batch in flight at once
    store: str = "local"  # local | s3
    store_dir: str = "styleprobe-artifacts"
    runner: str = "inline"  # inline | celery
    redis_url: str = "redis://127.0.0.1:6379/0"
    max_batch: int = 64  # largest batch a model backend sends in one call
    probe_samples: int = 10_000  # latents sampled to probe a direction
    evaluation_dir: str = str(REPO_ROOT / "evaluation-models")  # oracles, shortcut classifiers
    # S3 / MinIO artifact store (store = "s3"); keys and secrets may come from files
    s3_endpoint: str = "127.0.0.1:9000"  # host:port
    s3_public_endpoint: str = ""  # host:port presigned URLs name, if not s3_endpoint
    s3_access_key: str = ""
    s3_secret_key: str = ""
    s3_bucket: str = "styleprobe"
    s3_region: str = "us-east-1"
    s3_secure: bool = False  # HTTPS
    presign_expiry_s: int = 3600  # how long a presigned GET URL stays valid
    # the gRPC orchestrator
    grpc_listen: str = "127.0.0.1:50051"
    grpc_max_message_bytes: int = 16 * 1024 * 1024  # largest request or response
    grpc_grace_s: float = 10.0  # how long a stopping server lets calls in flight finish
    api_tokens: str = ""  # comma-separated bearer tokens the orchestrator accepts
    health_interval_s: float = 2.0  # how often Redis, S3 and Triton are checked
    metrics_port: int = 0  # Prometheus /metrics port of a service process; 0: none
    worker_metrics_port: int = 0  # a Celery worker's /metrics (all pool processes); 0: none
    metrics_host: str = "0.0.0.0"  # address the /metrics servers listen on
    job_ttl_s: int = 7 * 24 * 3600  # how long job records stay in Redis
    watch_outage_s: float = 30.0  # how long an open WatchJob waits out a Redis outage
    # the Celery workers
    task_soft_time_limit_s: int = 600  # a stage is told to stop after this
    task_time_limit_s: int = 660  # and is killed after this
    visibility_timeout_s: int = 900  # an unacknowledged task is redelivered after this

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            name = f"STYLEPROBE_{f.name.upper()}"
            raw = env.get(name)
            if raw is None and env.get(f"{name}_FILE"):
                raw = _read_secret(env[f"{name}_FILE"], name)
            if raw is None:
                continue
            values[f.name] = _convert(raw, f.type, f.name)
        return cls(**values)


def _read_secret(path: str, name: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        raise ValueError(f"{name}_FILE={path!r} cannot be read: {exc.strerror}") from exc


def _convert(raw: str, type_name: object, name: str) -> object:
    kind = type_name if isinstance(type_name, str) else getattr(type_name, "__name__", "")
    try:
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind == "bool":
            return raw.strip().lower() in ("1", "true", "yes", "on")
    except ValueError as exc:
        raise ValueError(f"STYLEPROBE_{name.upper()}={raw!r} is not a valid {kind}") from exc
    return raw
