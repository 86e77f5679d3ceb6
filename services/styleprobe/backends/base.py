"""The model-backend seam: the four models of one model set, called on numpy batches.

Implementations: :mod:`styleprobe.backends.local` (TorchScript in this process) and
:mod:`styleprobe.backends.triton` (Triton Inference Server over gRPC). The explanation
engine depends on this interface only. Arrays are float32, batch first, with the
contract of :mod:`styleprobe.modelset`; a backend chunks large batches itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from styleprobe.modelset import ModelSet


class BackendError(RuntimeError):
    """A model call failed; the message names the model and the cause."""


def checked_batch(model: str, role: str, array: Any, dims: Sequence[int]) -> np.ndarray:
    """``array`` as float32 if it is ``[N, *dims]``; else a BackendError naming the model
    and its tensor (``role``)."""
    array = np.asarray(array)
    if array.ndim != len(dims) + 1 or list(array.shape[1:]) != list(dims):
        raise BackendError(f"{model}: {role} has shape {list(array.shape)}, expected "
                           f"[N, {', '.join(map(str, dims))}]")
    return array.astype(np.float32, copy=False)


class ModelBackend(Protocol):
    """The models of one model set."""

    model_set: ModelSet

    def mapping(self, z: np.ndarray) -> np.ndarray:
        """z [N, z_dim] -> w [N, w_dim]."""
        ...

    def synthesis(self, w: np.ndarray) -> np.ndarray:
        """w [N, w_dim] -> image [N, C, R, R] in [-1, 1]."""
        ...

    def encoder(self, image: np.ndarray) -> np.ndarray:
        """image [N, C, R, R] in [-1, 1] -> w [N, w_dim]."""
        ...

    def classifier(self, image: np.ndarray) -> np.ndarray:
        """image [N, C, R, R] in [-1, 1] -> logits [N, K]."""
        ...

    def styles(self, w: np.ndarray) -> np.ndarray:
        """w [N, w_dim] -> StyleSpace coordinates [N, S] (sets with ``has_stylespace``)."""
        ...

    def style_synthesis(self, styles: np.ndarray) -> np.ndarray:
        """StyleSpace coordinates [N, S] -> image [N, C, R, R] in [-1, 1]."""
        ...

    def decode_and_classify(self, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """w [N, w_dim] -> (image [N, C, R, R], logits [N, K]) in one call.

        On Triton, this is the ensemble that decodes and classifies server-side.
        """
        ...

    def close(self) -> None:
        """Release connections or memory."""
        ...
