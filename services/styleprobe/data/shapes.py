"""Soft-edged 2-D shape primitives shared by the phantom renderers.

Every function works on coordinate grids ``(u, v)`` in the unit square ``[-1, 1]^2``
(``v`` grows downward) and returns a coverage map in ``[0, 1]`` whose edge is about
one pixel wide, so shapes are anti-aliased at any resolution.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter


def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(u, v)`` of a ``size x size`` image in ``[-1, 1]``."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    v, u = np.meshgrid(c, c, indexing="ij")
    return u, v


def rotate(u: np.ndarray, v: np.ndarray, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate coordinates about the origin."""
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    return c * u - s * v, s * u + c * v


def coverage(signed_distance: np.ndarray, size: int) -> np.ndarray:
    """Map a signed distance (positive inside) to a soft coverage in ``[0, 1]``."""
    pixel = 2.0 / size
    return np.clip(0.5 + signed_distance / pixel, 0.0, 1.0)


def disc_sd(u: np.ndarray, v: np.ndarray, cu: float, cv: float, r: float) -> np.ndarray:
    """Signed distance of a disc (positive inside)."""
    return r - np.hypot(u - cu, v - cv)


def box_sd(
    u: np.ndarray, v: np.ndarray, u0: float, u1: float, v0: float, v1: float
) -> np.ndarray:
    """Approximate signed distance of an axis-aligned box (positive inside)."""
    return np.minimum(np.minimum(u - u0, u1 - u), np.minimum(v - v0, v1 - v))


def blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur over the two spatial axes (channels, if any, last)."""
    if sigma_px <= 0:
        return image
    sigma = (sigma_px, sigma_px, 0) if image.ndim == 3 else sigma_px
    return gaussian_filter(image, sigma=sigma, mode="reflect")


def smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Zero-mean, unit-variance low-frequency noise field."""
    field = gaussian_filter(rng.standard_normal((size, size)), sigma=sigma_px, mode="wrap")
    return (field - field.mean()) / (field.std() + 1e-8)
