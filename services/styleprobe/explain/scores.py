"""From logits to the probability of the target class (float64, softmax over classes)."""

from __future__ import annotations

import numpy as np


def target_probability(logits: np.ndarray, class_index: int) -> np.ndarray:
    """Softmax probability of class ``class_index`` for each row of ``logits [N, K]``."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p[:, class_index] / p.sum(axis=1)


def predicted(probability: np.ndarray | float, threshold: float) -> np.ndarray:
    """Whether the target class is predicted: probability at or above the threshold."""
    return np.asarray(probability) >= threshold
