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
    """Process settings; each field is read from ``STYLEPROBE_<FIELD NAME IN CAPITALS>``."""

    model_repository: str = str(DEFAULT_MODEL_REPOSITORY)
    backend: str = "local"  # local | triton
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

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = env.get(f"STYLEPROBE_{f.name.upper()}")
            if raw is None:
                continue
            values[f.name] = _convert(raw, f.type, f.name)
        return cls(**values)


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
