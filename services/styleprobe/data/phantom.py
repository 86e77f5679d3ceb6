"""What every procedural phantom data set shares: samples with known factors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from styleprobe.data import shapes

MARKER_SHARE = 0.3  # images with the corner marker where it is independent of the label


@dataclass(frozen=True)
class Shortcut:
    """A planted shortcut: a corner marker whose presence relates to the label.

    ``rate`` is the probability that a sample carries the marker when its label is
    positive; negatives carry it with probability ``1 - rate``. ``rate = 0.5`` makes
    the marker independent of the label (the bundled GAN data), ``rate = 0.95`` makes
    it a strong shortcut for a classifier to pick up.
    """

    rate: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"shortcut rate must lie in [0, 1], got {self.rate}")

    def draw(self, rng: np.random.Generator, label: int) -> float:
        p = self.rate if label else 1.0 - self.rate
        return float(rng.random() < p)


@dataclass
class Sample:
    """One phantom: image in ``[0, 1]`` (H, W, C), its factors, label and mask."""

    image: np.ndarray
    factors: dict[str, float]
    label: int
    mask: np.ndarray
    extra: dict[str, float] = field(default_factory=dict)


class PhantomSet(Protocol):
    """A deterministic, indexable procedural data set."""

    name: str
    channels: int
    target: str

    # Read-only, so that each set may declare them as tuples of its own length.
    @property
    def class_names(self) -> tuple[str, ...]: ...
    @property
    def disease_factors(self) -> tuple[str, ...]: ...
    @property
    def nuisance_factors(self) -> tuple[str, ...]: ...

    def sample(self, index: int) -> Sample: ...


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator for sample ``index`` of the set seeded ``seed``: order-free."""
    return np.random.default_rng([seed, index])


def draw_marker(image: np.ndarray, size: int, present: float) -> np.ndarray:
    """Stamp a laterality-style tag (bright square with a dark bar) in the top-left."""
    if present < 0.5:
        return image
    u, v = shapes.grid(size)
    tag = shapes.coverage(shapes.box_sd(u, v, -0.92, -0.62, -0.92, -0.62), size)
    bar = shapes.coverage(shapes.box_sd(u, v, -0.84, -0.78, -0.86, -0.68), size)
    foot = shapes.coverage(shapes.box_sd(u, v, -0.84, -0.70, -0.74, -0.68), size)
    glyph = np.maximum(bar, foot)
    value = 0.95 * tag * (1.0 - glyph) + 0.1 * tag * glyph
    alpha = tag[..., None]
    return image * (1.0 - alpha) + value[..., None] * alpha
