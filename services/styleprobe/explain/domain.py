"""Out of domain: is an input like the images the model set was trained on?

A model set's manifest may record its domain (``"domain"``, written by
:func:`fit_domain` from its training images): the DICOM modalities and photometric
interpretations of such images, and a statistic of their pixels. The statistic is the
layout of the image at the model's resolution: the mean of each cell of a 4x4 grid, and
the image's standard deviation (17 numbers). The training images' mean and covariance of
these give an input's distance: the squared Mahalanobis distance divided by 17 (so a
CT slice, whose cells do not vary together as a knee's do, lies far even where each
cell's brightness alone would pass). The largest distance accepted is the 99.9th
percentile over the training images times :data:`MARGIN`. An input is out of domain
when a DICOM input's modality or photometric interpretation is not among the recorded
ones, or its distance is above that bound. A set whose manifest records no domain checks
nothing. ``scripts/record_domain.py`` records a set's domain.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

GRID = 4
QUANTILE, MARGIN = 0.999, 2.0
RIDGE = 1e-6  # added to the covariance's diagonal (a constant feature does not divide by 0)


@dataclass(frozen=True)
class Domain:
    """What a model set's training images are like (the manifest's ``domain``)."""

    feature_mean: list[float]
    feature_precision: list[list[float]]  # the inverse of the features' covariance
    max_distance: float
    modalities: list[str] = field(default_factory=list)  # empty: any
    photometric: list[str] = field(default_factory=list)  # empty: any
    description: str = ""

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Domain:
        return cls(**raw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def distance(self, image: np.ndarray) -> float:
        """The squared Mahalanobis distance of ``image``'s features from the training
        images', per feature."""
        offset = features(image) - np.asarray(self.feature_mean)
        return float(offset @ np.asarray(self.feature_precision) @ offset) / len(offset)


def features(image: np.ndarray) -> np.ndarray:
    """The statistic of an (R, R, C) image in [0, 1]: 4x4 cell means and the standard
    deviation, of the channels' mean."""
    grey = np.asarray(image, np.float64).mean(axis=-1)
    size = grey.shape[0] - grey.shape[0] % GRID
    cells = grey[:size, :size].reshape(GRID, size // GRID, GRID, size // GRID).mean(axis=(1, 3))
    return np.append(cells.ravel(), grey.std())


def fit_domain(images: Iterable[np.ndarray], modalities: list[str],
               photometric: list[str]) -> Domain:
    """The domain of training ``images`` ((R, R, C) in [0, 1], at the model's resolution)."""
    table = np.stack([features(image) for image in images])
    mean = table.mean(axis=0)
    precision = np.linalg.inv(np.cov(table.T) + RIDGE * np.eye(table.shape[1]))
    offsets = table - mean
    distances = np.einsum("ij,jk,ik->i", offsets, precision, offsets) / table.shape[1]
    bound = float(np.quantile(distances, QUANTILE) * MARGIN)
    return Domain(feature_mean=mean.tolist(), feature_precision=precision.tolist(),
                  max_distance=bound,
                  modalities=modalities, photometric=photometric,
                  description=f"{len(table)} training images; Mahalanobis distance of 4x4 cell "
                              f"means and standard deviation; bound: {QUANTILE:.1%} "
                              f"quantile x {MARGIN:g}")


def domain_reasons(domain: dict[str, Any], image: np.ndarray,
                   description: dict[str, Any]) -> list[str]:
    """Why an input (the model input ``image`` and its decoder's ``description``) is out of
    the recorded ``domain``; empty when it is in it, or when no domain is recorded."""
    if not domain:
        return []
    known = Domain.from_dict(domain)
    reasons = []
    modality = description.get("Modality", "")
    if known.modalities and modality and modality not in known.modalities:
        reasons.append(f"DICOM modality {modality} is not one this model set was trained on "
                       f"({', '.join(known.modalities)}): out of domain")
    photometric = description.get("PhotometricInterpretation", "")
    if known.photometric and photometric and photometric not in known.photometric:
        reasons.append(f"photometric interpretation {photometric} is not one this model set "
                       f"was trained on ({', '.join(known.photometric)}): out of domain")
    distance = known.distance(image)
    if distance > known.max_distance:
        reasons.append(f"image statistic distance {distance:.1f} > {known.max_distance:.1f} "
                       "from the training images: out of domain")
    return reasons
