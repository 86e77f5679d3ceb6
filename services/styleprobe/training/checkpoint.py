"""Resumable checkpoints (atomic writes) and the image tensor convention."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or of the wrong kind."""


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, kind: str) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` and check its kind."""
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt file
        raise CheckpointError(f"checkpoint {path} is unreadable: {exc}") from exc
    if state.get("kind") != kind:
        raise CheckpointError(f"{path} is a {state.get('kind')!r} checkpoint, expected {kind!r}")
    return state


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """Images (N, H, W, C) in [0, 1] -> tensor (N, C, H, W) in [-1, 1]."""
    assert images.ndim == 4, f"images must be (N, H, W, C), got {images.shape}"
    return torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))) * 2.0 - 1.0


def to_images(tensor: torch.Tensor) -> np.ndarray:
    """Tensor (N, C, H, W) in [-1, 1] -> images (N, H, W, C) in [0, 1], clipped."""
    return ((tensor.detach().cpu().clamp(-1, 1) + 1.0) / 2.0).permute(0, 2, 3, 1).numpy()
