"""Walk along a direction: decode and classify ``G(w + λα)`` for a grid of λ, and search
the smallest ``|λ|`` that carries the prediction across the threshold.

Every decode is batched, across λ and across images: the grids of several images go to
the backend in one call (:func:`decode_grids`), and the counterfactual search evaluates
several points per image per call (k-section rather than one-point bisection), every
image's round in the same call (:func:`find_flips`), so a search of ``rounds`` calls
narrows each bracket by a factor of ``(points + 1) ** rounds`` whatever the number of
images. One image is the same code with a batch of one (:func:`decode_frames`,
:func:`find_flip`).
"""

from __future__ import annotations

from collections.abc import Sequence
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


def decode_grids(backend: ModelBackend, latents: np.ndarray, alpha: np.ndarray,
                 lambdas: np.ndarray, class_index: int) -> list[Frames]:
    """``G(w_i + λ_ij α)`` and its target probability for every image ``i`` (``latents``
    [N, w_dim]) and each of its λ (``lambdas`` [N, F]), in one backend call."""
    latents = np.asarray(latents, np.float64)
    lambdas = np.asarray(lambdas, np.float64)
    count, frames = lambdas.shape
    points = latents[:, None, :] + lambdas[:, :, None] * np.asarray(alpha, np.float64)
    images, logits = backend.decode_and_classify(
        points.reshape(count * frames, -1).astype(np.float32))
    probabilities = target_probability(logits, class_index)
    return [Frames(lambdas[i], images[i * frames:(i + 1) * frames],
                   probabilities[i * frames:(i + 1) * frames]) for i in range(count)]


def decode_frames(backend: ModelBackend, w: np.ndarray, alpha: np.ndarray,
                  lambdas: np.ndarray, class_index: int) -> Frames:
    """``G(w + λα)`` and its target probability for every λ, in one backend call."""
    return decode_grids(backend, np.asarray(w).reshape(1, -1), alpha,
                        np.asarray(lambdas, np.float64)[None], class_index)[0]


def search_direction(base_probability: float, threshold: float) -> float:
    """+1 or -1: the side of λ that moves the prediction towards the other class."""
    return -1.0 if predicted(base_probability, threshold) else 1.0


def _grid_flip(grid: Frames, threshold: float, base_probability: float) -> Flip | None:
    """The first frame of the grid, from λ = 0 outwards on the side towards the other
    class, that is predicted on the other side; None if none is."""
    base = bool(predicted(base_probability, threshold))
    sign = search_direction(base_probability, threshold)
    on_side = np.flatnonzero(grid.lambdas * sign > 0)
    on_side = on_side[np.argsort(np.abs(grid.lambdas[on_side]), kind="stable")]
    inside = 0.0
    for i in on_side:
        if predicted(grid.probabilities[i], threshold) != base:
            return Flip(float(grid.lambdas[i]), float(grid.probabilities[i]), grid.images[i],
                        (inside, float(grid.lambdas[i])))
        inside = float(grid.lambdas[i])
    return None


def find_flips(backend: ModelBackend, latents: np.ndarray, alpha: np.ndarray,
               class_index: int, threshold: float, base_probabilities: Sequence[float],
               grids: Sequence[Frames], search: SearchSettings | None) -> list[Flip | None]:
    """For each image ``i`` (latent ``latents[i]``, probability ``base_probabilities[i]``
    at λ = 0, decoded grid ``grids[i]``): the smallest ``|λ|`` on the grid's side towards
    the other class that flips the prediction, refined by the k-section rounds of
    ``search`` (None: the grid's answer) with every image's points of a round in one
    backend call; None for an image when no grid frame on that side flips."""
    flips = [_grid_flip(grid, threshold, p) for grid, p in zip(grids, base_probabilities,
                                                                strict=True)]
    searching = [i for i, flip in enumerate(flips) if flip is not None]
    rounds, points = (search.rounds, search.points) if search else (0, 0)
    for _ in range(rounds if searching else 0):
        brackets = [flip.bracket for flip in flips if flip is not None]
        probes = decode_grids(
            backend, np.asarray(latents)[searching], alpha,
            np.array([np.linspace(inside, outside, points + 2)[1:-1]
                      for inside, outside in brackets]), class_index)
        for i, probe in zip(searching, probes, strict=True):
            flip = flips[i]
            assert flip is not None
            base = bool(predicted(base_probabilities[i], threshold))
            inside = flip.bracket[0]
            for lam, prob, image in zip(probe.lambdas, probe.probabilities, probe.images,
                                        strict=True):
                if predicted(prob, threshold) != base:
                    flip = Flip(float(lam), float(prob), image, (inside, float(lam)))
                    break
                inside = float(lam)
            flip.bracket = (inside, flip.lambda_)
            flips[i] = flip
    return flips


def find_flip(backend: ModelBackend, w: np.ndarray, alpha: np.ndarray, class_index: int,
              threshold: float, base_probability: float, grid: Frames,
              search: SearchSettings | None) -> Flip | None:
    """:func:`find_flips` for one image."""
    return find_flips(backend, np.asarray(w).reshape(1, -1), alpha, class_index, threshold,
                      [base_probability], [grid], search)[0]
