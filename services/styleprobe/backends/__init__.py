"""Model backends: the four models of a model set (see :mod:`styleprobe.backends.base`)."""

from __future__ import annotations

from pathlib import Path

from styleprobe.backends.base import BackendError, ModelBackend
from styleprobe.config import Settings
from styleprobe.outages import OutageListener

__all__ = ["BackendError", "ModelBackend", "open_backend"]


def open_backend(settings: Settings, model_set_name: str,
                 listener: OutageListener | None = None) -> ModelBackend:
    """The backend that ``settings.backend`` names, serving model set ``model_set_name``;
    ``listener`` is told when calls wait for a model server that is down (Triton)."""
    if settings.backend == "local":
        from styleprobe.backends.local import LocalBackend

        return LocalBackend(Path(settings.model_repository), model_set_name,
                            max_batch=settings.max_batch, device=settings.local_device)
    if settings.backend == "triton":
        from styleprobe.backends.triton import TritonBackend
        from styleprobe.modelset import load_model_set
        from styleprobe.tls import triton_tls

        backend = TritonBackend(
            load_model_set(Path(settings.model_repository), model_set_name),
            settings.triton_url, timeout_s=settings.triton_timeout_s,
            retry_s=settings.triton_retry_s, concurrency=settings.triton_concurrency,
            tls=triton_tls(settings))
        backend.listener = listener
        return backend
    raise BackendError(f"unknown model backend {settings.backend!r} (STYLEPROBE_BACKEND); "
                       "this build supports: local, triton")
