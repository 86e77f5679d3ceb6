"""The user's input, loaded and preprocessed into the model set's tensor.

Decoding (PNG, JPEG, TIFF, DICOM, ``.npy``) is :mod:`styleprobe.data.codecs`; an array
given directly is checked and scaled as the content of a ``.npy`` file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from styleprobe.data.codecs import decode, decode_array, fit_note, to_model_input
from styleprobe.modelset import Preprocessing

ImageSource = Path | str | bytes | np.ndarray


@dataclass
class ModelInput:
    """An input at the model set's resolution: (R, R, C) float32 in [0, 1]."""

    image: np.ndarray
    sha256: str
    description: dict[str, Any]


def load_input(source: ImageSource, preprocessing: Preprocessing,
               filename: str | None = None) -> ModelInput:
    """Decode ``source`` and fit it to ``preprocessing``; raise ImageDecodeError if unusable.
    An input of another size is cropped or resized: its description says so (``fitted``,
    with the model's ``model_width`` and ``model_height`` beside the original's)."""
    if isinstance(source, np.ndarray):
        decoded = decode_array(source, filename or "array")
    else:
        decoded = decode(source, filename)
    size = preprocessing.resolution
    image = to_model_input(decoded.pixels, size, preprocessing.channels)
    description = decoded.describe()
    note = fit_note(description["height"], description["width"], size)
    if note is not None:
        description.update(fitted=note, model_width=size, model_height=size)
    return ModelInput(image=image, sha256=decoded.sha256, description=description)


def to_model_layout(images: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """(N, R, R, C) in [0, 1] -> the models' (N, C, R, R) in the manifest's value range."""
    low, high = preprocessing.value_range
    nchw = np.transpose(np.asarray(images, np.float32), (0, 3, 1, 2))
    return np.ascontiguousarray(low + nchw * (high - low), dtype=np.float32)


def from_model_layout(tensor: np.ndarray, preprocessing: Preprocessing) -> np.ndarray:
    """The models' (N, C, R, R) -> (N, R, R, C) float32 in [0, 1]."""
    low, high = preprocessing.value_range
    unit = (np.asarray(tensor, np.float32) - low) / (high - low)
    return np.clip(np.transpose(unit, (0, 2, 3, 1)), 0.0, 1.0).astype(np.float32)
