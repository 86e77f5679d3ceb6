"""Traversals of many encoded images along one direction, read by the oracle.

Each image's traversal is the engine's (:func:`styleprobe.explain.traverse.decode_frames`
for the λ grid, :func:`~styleprobe.explain.traverse.find_flip` for the counterfactual);
here they are only collected, and measured: how the prediction and every factor move
with λ (Spearman), and how far each factor moves over the range (in standard units).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from styleprobe.backends.base import ModelBackend
from styleprobe.evaluation.oracle import Oracle
from styleprobe.explain.direction import Direction
from styleprobe.explain.spec import SearchSettings
from styleprobe.explain.traverse import decode_frames, find_flip, search_direction


@dataclass
class Traversals:
    """The traversals of N images over L values of λ, F oracle factors."""

    lambdas: np.ndarray  # (L,) increasing
    probabilities: np.ndarray  # (N, L) target probability of every frame
    readings: np.ndarray  # (N, L, F) oracle readings of every frame, standard units
    flip_lambdas: np.ndarray  # (N,) the counterfactual λ; NaN where none within range
    end_frames: np.ndarray  # (N, C, R, R) the flip frame, else the last frame searched


def traverse_many(backend: ModelBackend, w: np.ndarray, base_probabilities: np.ndarray,
                  direction: Direction, lambdas: np.ndarray, oracle: Oracle,
                  search: SearchSettings | None) -> Traversals:
    """Traverse every latent of ``w`` (N, w_dim) along ``direction``; ``base_probabilities``
    are the predictions of ``G(w)``, which decide the side each flip is searched on;
    ``search`` refines each flip (None: the grid's answer)."""
    lambdas = np.sort(np.asarray(lambdas, np.float64))
    alpha = direction.array()
    probabilities, readings, flips, ends = [], [], [], []
    for latent, base in zip(w, base_probabilities, strict=True):
        grid = decode_frames(backend, latent, alpha, lambdas, direction.class_index)
        flip = find_flip(backend, latent, alpha, direction.class_index, direction.threshold,
                         float(base), grid, search)
        probabilities.append(grid.probabilities)
        readings.append(oracle.read(grid.images))
        flips.append(np.nan if flip is None else flip.lambda_)
        if flip is not None:
            ends.append(flip.image)
        else:
            end = 0 if search_direction(float(base), direction.threshold) < 0 else -1
            ends.append(grid.images[end])
    return Traversals(lambdas, np.array(probabilities), np.array(readings), np.array(flips),
                      np.array(ends))


def spearman_with_lambda(values: np.ndarray) -> np.ndarray:
    """Spearman correlation of λ (the increasing grid of axis 1) with ``values`` along
    axis 1, for every other index; 0 where the values do not change at all."""
    ranks = rankdata(values, axis=1)
    grid = np.arange(1, values.shape[1] + 1, dtype=np.float64)
    grid = (grid - grid.mean()).reshape((1, -1) + (1,) * (values.ndim - 2))
    centred = ranks - ranks.mean(axis=1, keepdims=True)
    spread = np.sqrt((centred ** 2).sum(axis=1) * (grid ** 2).sum())
    covariance = (centred * grid).sum(axis=1)
    return np.divide(covariance, spread, out=np.zeros_like(covariance), where=spread > 1e-12)


def validity(traversals: Traversals) -> dict[str, float | int | list[float]]:
    """Flip rate, the distribution of the flip λ, and monotonicity of the prediction."""
    flipped = ~np.isnan(traversals.flip_lambdas)
    magnitudes = np.abs(traversals.flip_lambdas[flipped])
    rho = spearman_with_lambda(traversals.probabilities)
    quantiles = (np.quantile(magnitudes, [0.1, 0.25, 0.5, 0.75, 0.9]).tolist()
                 if flipped.any() else [])
    return {
        "images": len(flipped),
        "flip_rate": float(flipped.mean()),
        "flip_lambda_abs_quantiles": quantiles,  # 10, 25, 50, 75, 90 %
        "flip_lambdas": [float(v) for v in traversals.flip_lambdas],
        "monotonicity_spearman_median": float(np.median(rho)),
        "monotonicity_spearman_mean": float(np.mean(rho)),
        "monotonic_share": float(np.mean(rho >= 0.9)),  # prediction rises with λ, ρ >= 0.9
    }


def factor_motion(traversals: Traversals, factors: list[str]) -> dict[str, dict[str, float]]:
    """Per factor: the median and mean Spearman of λ with the oracle's reading over the
    traversals, and the mean change of the reading from the first to the last λ in
    standard units (the spread of the factor over the phantoms)."""
    rho = spearman_with_lambda(traversals.readings)  # (N, F)
    change = traversals.readings[:, -1, :] - traversals.readings[:, 0, :]
    return {name: {"spearman_median": float(np.median(rho[:, i])),
                   "spearman_mean": float(np.mean(rho[:, i])),
                   "change_mean": float(np.mean(change[:, i])),
                   "abs_change_mean": float(np.mean(np.abs(change[:, i])))}
            for i, name in enumerate(factors)}
