"""Histology patch phantoms: H&E-like stroma with nuclei that change in tumour.

Disease factors (each in ``[0, 1]``): ``nuclear_size``, ``nuclear_density``,
``irregularity``, ``hyperchromasia`` (how dark the nuclei stain). They are drawn around
one hidden severity; the target ``tumour`` is a known function of them
(:func:`tumour_score` > 0.5).

Nuisance factors: ``stain_intensity``, ``hue_shift``, ``blur``, ``noise``, and
``marker`` (the planted shortcut tag, 0 or 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from styleprobe.data import shapes
from styleprobe.data.phantom import MARKER_SHARE, Sample, Shortcut, draw_marker, sample_rng

DISEASE_FACTORS = ("nuclear_size", "nuclear_density", "irregularity", "hyperchromasia")
NUISANCE_FACTORS = ("stain_intensity", "hue_shift", "blur", "noise", "marker")

STROMA_RGB = np.array([0.93, 0.70, 0.80])
NUCLEUS_RGB = np.array([0.35, 0.20, 0.55])
DARK_NUCLEUS_RGB = np.array([0.15, 0.05, 0.30])


TUMOUR_THRESHOLD = 0.5  # tumour_score above this is labelled tumour


def tumour_score(factors: dict[str, float]) -> float:
    """Mean of the disease factors; tumour when above 0.5."""
    return float(np.mean([factors[k] for k in DISEASE_FACTORS]))


@dataclass
class HistologyPhantoms:
    """Deterministic H&E-like patch phantoms (RGB)."""

    seed: int = 0
    size: int = 64
    shortcut: Shortcut = field(default_factory=Shortcut)
    marker_share: float = MARKER_SHARE

    name = "histology"
    channels = 3
    target = "tumour"
    class_names = ("normal", "tumour")
    disease_factors = DISEASE_FACTORS
    nuisance_factors = NUISANCE_FACTORS

    def sample(self, index: int) -> Sample:
        rng = sample_rng(self.seed, index)
        severity = rng.random()
        jitter = rng.normal(0.0, 0.1, size=4)
        factors = {k: float(np.clip(severity + j, 0, 1))
                   for k, j in zip(DISEASE_FACTORS, jitter, strict=True)}
        factors.update({
            "stain_intensity": float(rng.uniform(0.75, 1.2)),
            "hue_shift": float(rng.uniform(-0.06, 0.06)),
            "blur": float(rng.uniform(0.0, 0.8)),
            "noise": float(rng.uniform(0.01, 0.04)),
        })
        label = int(tumour_score(factors) > TUMOUR_THRESHOLD)
        if self.shortcut.rate == 0.5:
            factors["marker"] = float(rng.random() < self.marker_share)
        else:
            factors["marker"] = self.shortcut.draw(rng, label)
        image, mask = render_histology(factors, self.size, rng)
        return Sample(image=image, factors=factors, label=label, mask=mask)


def render_histology(
    factors: dict[str, float], size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one patch; return the image (size, size, 3) in [0, 1] and the nuclei mask."""
    u, v = shapes.grid(size)
    count = round(8 + 24 * factors["nuclear_density"])
    radius = 0.06 + 0.09 * factors["nuclear_size"]
    centres = rng.uniform(-1.0, 1.0, size=(count, 2))
    radii = radius * rng.uniform(0.8, 1.2, size=count)
    elong = rng.uniform(1.0, 1.4, size=count)
    angle = rng.uniform(0, np.pi, size=count)
    phase = rng.uniform(0, 2 * np.pi, size=(count, 2))

    du = u[None] - centres[:, 0, None, None]
    dv = v[None] - centres[:, 1, None, None]
    ca, sa = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    pu, pv = ca * du + sa * dv, (-sa * du + ca * dv) * elong[:, None, None]
    theta = np.arctan2(pv, pu)
    wobble = 1.0 + 0.35 * factors["irregularity"] * (
        0.6 * np.sin(3 * theta + phase[:, 0, None, None])
        + 0.4 * np.sin(5 * theta + phase[:, 1, None, None])
    )
    sd = radii[:, None, None] * wobble - np.hypot(pu, pv)
    nuclei = shapes.coverage(sd, size).max(axis=0)

    stroma = STROMA_RGB + 0.04 * shapes.smooth_noise(rng, size, size / 16)[..., None]
    fibres = 0.05 * np.sin(12 * (u + 0.3 * v) + 2 * shapes.smooth_noise(rng, size, size / 8))
    stroma = stroma - fibres[..., None] * np.array([0.2, 1.0, 0.6])
    chroma = factors["hyperchromasia"]
    nucleus = (1 - chroma) * NUCLEUS_RGB + chroma * DARK_NUCLEUS_RGB
    texture = 0.04 * shapes.smooth_noise(rng, size, 1.0)[..., None]
    image = stroma * (1 - nuclei[..., None]) + (nucleus + texture) * nuclei[..., None]

    image = 1.0 - factors["stain_intensity"] * (1.0 - image)  # optical density scaling
    image = image + factors["hue_shift"] * np.array([1.0, -0.5, -1.0])
    image = shapes.blur(image, factors["blur"] * size / 64)
    image = image + rng.normal(0.0, factors["noise"], size=image.shape)
    image = draw_marker(np.clip(image, 0, 1), size, factors.get("marker", 0.0))
    return image.astype(np.float32), (nuclei > 0.5).astype(np.uint8)
