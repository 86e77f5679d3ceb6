"""``tritonserver`` (from the ``nvidia-pytriton`` wheel) on free ports."""

from __future__ import annotations

from pathlib import Path

from styleprobe.serving.tritonserver import TritonProcess
from styleprobe.testing.ports import free_port


def triton_server(repository: Path, log_path: Path | None = None) -> TritonProcess:
    """A (not yet started) ``tritonserver`` serving ``repository`` on free HTTP, gRPC and
    metrics ports; its output goes to ``log_path`` (``None``: this process's)."""
    return TritonProcess(repository, free_port(), free_port(), free_port(), log_path)
