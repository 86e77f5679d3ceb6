"""Walk along a direction: decode and classify ``G(w + λα)`` for a grid of λ, and search
the smallest ``|λ|`` that carries the prediction across the threshold.

Every decode is batched: the whole grid goes to the backend in one call, and the
counterfactual search evaluates several points per call (k-section rather than
one-point bisection), so a search of ``rounds`` calls narrows the bracket by a factor
of ``(points + 1) ** rounds``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from styleprobe.backends.base import ModelBackend
from styleprobe.explain.scores import predicted, target_probability
from styleprobe.explain.spec import SearchSettings


@dataclass
class Frames:
    """Decoded frames (model layout and range) and their target probabilities."""

    lambdas: np.ndarray
    images: np.ndarray
    probabilities: np.ndarray


@dataclass
class Flip:
    """The smallest ``|λ|`` found whose frame is predicted on the other side."""

    lambda_: float
    probability: float
    image: np.ndarray
    bracket: tuple[float, float]  # last λ on the original side, first λ on the other


def decode_frames(backend: ModelBackend, w: np.ndarray, alpha: np.ndarray,
                  lambdas: np.ndarray, class_index: int) -> Frames:
    """``G(w + λα)`` and its target probability for every λ, in one backend call."""
    lambdas = np.asarray(lambdas, np.float64)
    latents = (np.asarray(w, np.float64).reshape(1, -1)
               + lambdas[:, None] * np.asarray(alpha, np.float64)[None, :])
    images, logits = backend.decode_and_classify(latents.astype(np.float32))
    return Frames(lambdas, images, target_probability(logits, class_index))


def search_direction(base_probability: float, threshold: float) -> float:
    """+1 or -1: the side of λ that moves the prediction towards the other class."""
    return -1.0 if predicted(base_probability, threshold) else 1.0


def find_flip(backend: ModelBackend, w: np.ndarray, alpha: np.ndarray, class_index: int,
              threshold: float, base_probability: float, grid: Frames,
              search: SearchSettings | None) -> Flip | None:
    """The smallest ``|λ|`` on the grid's side towards the other class that flips the
    prediction of ``G(w)`` (probability ``base_probability`` at λ = 0), refined by the
    batched k-section rounds of ``search`` (None: the grid's answer); None when no grid
    frame on that side flips."""
    base = bool(predicted(base_probability, threshold))
    sign = search_direction(base_probability, threshold)
    on_side = np.flatnonzero(grid.lambdas * sign > 0)
    on_side = on_side[np.argsort(np.abs(grid.lambdas[on_side]))]
    inside, outside = 0.0, None
    for i in on_side:
        if predicted(grid.probabilities[i], threshold) != base:
            outside = i
            break
        inside = float(grid.lambdas[i])
    if outside is None:
        return None
    flip = Flip(float(grid.lambdas[outside]), float(grid.probabilities[outside]),
                grid.images[outside], (inside, float(grid.lambdas[outside])))
    rounds, points = (search.rounds, search.points) if search else (0, 0)
    for _ in range(rounds):
        probes = decode_frames(backend, w, alpha,
                               np.linspace(inside, flip.lambda_, points + 2)[1:-1], class_index)
        for lam, prob, image in zip(probes.lambdas, probes.probabilities, probes.images,
                                    strict=True):
            if predicted(prob, threshold) != base:
                flip = Flip(float(lam), float(prob), image, (inside, float(lam)))
                break
            inside = float(lam)
        flip.bracket = (inside, flip.lambda_)
    return flip
