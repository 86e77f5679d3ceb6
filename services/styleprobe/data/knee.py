"""Knee radiograph phantoms: femur and tibia, a joint space that narrows with disease.

Disease factors (each in ``[0, 1]``): ``joint_space_narrowing``, ``osteophytes``,
``sclerosis``. They are drawn around one hidden severity, and the KL-like grade is a
known function of them (:func:`kl_grade`); the binary target ``OA`` is grade >= 2.

Nuisance factors: ``rotation`` (degrees), ``exposure``, ``contrast``, ``blur`` (pixels
at 64 px), ``noise``, ``bone_width``, ``shift_x``, ``shift_y``, and ``marker`` (the
planted shortcut tag, 0 or 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from styleprobe.data import shapes
from styleprobe.data.phantom import MARKER_SHARE, Sample, Shortcut, draw_marker, sample_rng

DISEASE_FACTORS = ("joint_space_narrowing", "osteophytes", "sclerosis")
NUISANCE_FACTORS = (
    "rotation",
    "exposure",
    "contrast",
    "blur",
    "noise",
    "bone_width",
    "shift_x",
    "shift_y",
    "marker",
)
GRADE_THRESHOLDS = (0.2, 0.4, 0.6, 0.8)
GRADE_WEIGHTS = {"joint_space_narrowing": 0.5, "osteophytes": 0.3, "sclerosis": 0.2}


def disease_score(factors: dict[str, float]) -> float:
    """Weighted disease burden in ``[0, 1]``."""
    return sum(w * factors[k] for k, w in GRADE_WEIGHTS.items())


def kl_grade(factors: dict[str, float]) -> int:
    """The KL-like grade 0-4: how many thresholds the disease score passes."""
    return int(np.searchsorted(GRADE_THRESHOLDS, disease_score(factors), side="right"))


@dataclass
class KneePhantoms:
    """Deterministic knee radiograph phantoms (grayscale)."""

    seed: int = 0
    size: int = 64
    shortcut: Shortcut = field(default_factory=Shortcut)
    marker_share: float = MARKER_SHARE

    name = "knee"
    channels = 1
    target = "OA"
    class_names = ("healthy", "OA")
    disease_factors = DISEASE_FACTORS
    nuisance_factors = NUISANCE_FACTORS

    def sample(self, index: int) -> Sample:
        rng = sample_rng(self.seed, index)
        factors = self._draw_factors(rng)
        grade = kl_grade(factors)
        label = int(grade >= 2)
        factors["marker"] = self._draw_marker(rng, label)
        image, mask = render_knee(factors, self.size, rng)
        return Sample(image=image, factors=factors, label=label, mask=mask,
                      extra={"kl_grade": float(grade)})

    def _draw_marker(self, rng: np.random.Generator, label: int) -> float:
        if self.shortcut.rate == 0.5:
            return float(rng.random() < self.marker_share)
        return self.shortcut.draw(rng, label)

    @staticmethod
    def _draw_factors(rng: np.random.Generator) -> dict[str, float]:
        severity = rng.random()
        jitter = rng.normal(0.0, 0.12, size=3)
        return {
            "joint_space_narrowing": float(np.clip(severity + jitter[0], 0, 1)),
            "osteophytes": float(np.clip(1.2 * severity - 0.25 + jitter[1], 0, 1)),
            "sclerosis": float(np.clip(severity - 0.1 + jitter[2], 0, 1)),
            "rotation": float(rng.uniform(-10, 10)),
            "exposure": float(rng.uniform(-0.12, 0.12)),
            "contrast": float(rng.uniform(0.75, 1.25)),
            "blur": float(rng.uniform(0.0, 1.0)),
            "noise": float(rng.uniform(0.01, 0.05)),
            "bone_width": float(rng.uniform(0.85, 1.15)),
            "shift_x": float(rng.uniform(-0.08, 0.08)),
            "shift_y": float(rng.uniform(-0.08, 0.08)),
        }


def render_knee(
    factors: dict[str, float], size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one knee; return the image (size, size, 1) in [0, 1] and the disease mask."""
    u, v = shapes.grid(size)
    u, v = shapes.rotate(u - factors["shift_x"], v - factors["shift_y"], factors["rotation"])
    bw = factors["bone_width"]
    gap = 0.22 * (1.0 - 0.85 * factors["joint_space_narrowing"])
    top, bottom = -gap / 2.0, gap / 2.0  # femur's lowest point, tibia's plateau

    # Femur: shaft, metaphyseal flare, two rounded condyles resting on the joint line.
    r = 0.2 * bw
    femur_sd = np.maximum.reduce([
        shapes.box_sd(u, v, -0.22 * bw, 0.22 * bw, -1.2, top - 0.45),
        shapes.box_sd(u, v, -0.40 * bw, 0.40 * bw, top - 0.55, top - r),
        shapes.disc_sd(u, v, -0.2 * bw, top - r, r),
        shapes.disc_sd(u, v, 0.2 * bw, top - r, r),
        np.minimum(  # flare: a trapezoid from shaft to condyles
            shapes.box_sd(u, v, -1, 1, top - 0.75, top - 0.4),
            0.22 * bw + (v - (top - 0.75)) * 0.55 - np.abs(u),
        ),
    ])
    # Tibia: a plateau with a small eminence, then a tapering shaft.
    tibia_sd = np.maximum.reduce([
        shapes.box_sd(u, v, -0.43 * bw, 0.43 * bw, bottom, bottom + 0.22),
        shapes.box_sd(u, v, -0.2 * bw, 0.2 * bw, bottom + 0.1, 1.2),
        np.minimum(
            shapes.box_sd(u, v, -1, 1, bottom + 0.15, bottom + 0.5),
            0.43 * bw - (v - (bottom + 0.15)) * 0.6 - np.abs(u),
        ),
        shapes.disc_sd(u, v, 0.0, bottom + 0.03, 0.06 * bw),
    ])
    # Osteophytes: spurs at the four joint margins, growing with the factor.
    spur_r = 0.085 * factors["osteophytes"]
    spur_sd = np.maximum.reduce([
        shapes.disc_sd(u, v, side * 0.41 * bw + side * 0.6 * spur_r, row, spur_r)
        for side in (-1.0, 1.0)
        for row in (top - 0.05, bottom + 0.05)
    ])
    bone = np.maximum.reduce([
        shapes.coverage(femur_sd, size),
        shapes.coverage(tibia_sd, size),
        shapes.coverage(spur_sd, size) * (spur_r > 0.005),
    ])
    # Subchondral sclerosis: a bright band along each joint surface.
    band = np.exp(-np.minimum(np.abs(v - top), np.abs(v - bottom)) / 0.06)
    band = band * (np.abs(u) < 0.42 * bw)
    trabecular = 0.55 + 0.05 * shapes.smooth_noise(rng, size, size / 32)
    cortex = 0.2 * np.exp(-np.abs(np.maximum(femur_sd, tibia_sd)) / 0.03)
    bone_value = trabecular + cortex + 0.35 * factors["sclerosis"] * band

    soft_tissue = 0.12 + 0.08 * shapes.coverage(0.78 - np.hypot(u / 0.95, v / 1.3), size)
    image = soft_tissue * (1 - bone) + bone_value * bone
    image = factors["contrast"] * (image - 0.4) + 0.4 + factors["exposure"]
    image = shapes.blur(image, factors["blur"] * size / 64)
    image = image + rng.normal(0.0, factors["noise"], size=image.shape)
    image = draw_marker(np.clip(image, 0, 1)[..., None], size, factors.get("marker", 0.0))

    joint = shapes.box_sd(u, v, -0.45 * bw, 0.45 * bw, top - 0.08, bottom + 0.08)
    mask = np.maximum(shapes.coverage(joint, size), shapes.coverage(spur_sd + 0.03, size))
    return image.astype(np.float32), (mask > 0.5).astype(np.uint8)
