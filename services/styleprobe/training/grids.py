"""Image grids of samples, written as PNG while training and in model cards."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from styleprobe.training.checkpoint import to_images


def grid_image(images: np.ndarray, columns: int | None = None) -> np.ndarray:
    """Tile images (N, H, W, C) in [0, 1] into one uint8 (rows*H, cols*W, C) array."""
    n, h, w, c = images.shape
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    canvas = np.zeros((rows * h, columns * w, c), np.float32)
    for i, img in enumerate(images):
        r, k = divmod(i, columns)
        canvas[r * h:(r + 1) * h, k * w:(k + 1) * w] = img
    return np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8)


def save_grid(batch: torch.Tensor | np.ndarray, path: Path, columns: int | None = None) -> None:
    """Save a grid of a generator batch (NCHW, [-1, 1]) or of images (NHWC, [0, 1])."""
    images = to_images(batch) if isinstance(batch, torch.Tensor) else batch
    tile = grid_image(images, columns)
    Image.fromarray(tile.squeeze(2) if tile.shape[2] == 1 else tile).save(path)
