"""How far to trust an explanation: how well the encoder reconstructs the input.

Pixel MSE of ``G(E(x))`` against ``x`` (both in [0, 1]) and whether ``f(x)`` and
``f(G(E(x)))`` fall on the same side of the threshold; beyond the model set's quality
gate the explanation is flagged ``unreliable``, with the reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from styleprobe.modelset import QualityGate


@dataclass
class Quality:
    """Reconstruction quality of one input and the verdict of the quality gate."""

    pixel_mse: float
    max_pixel_mse: float
    prediction_agrees: bool
    unreliable: bool
    reasons: list[str] = field(default_factory=list)


def assess_reconstruction(image: np.ndarray, reconstruction: np.ndarray,
                          input_predicted: bool, reconstruction_predicted: bool,
                          gate: QualityGate) -> Quality:
    """Compare an input and its reconstruction (same shape, [0, 1]) against ``gate``."""
    mse = float(np.mean((np.asarray(reconstruction, np.float64) - image) ** 2))
    agrees = bool(input_predicted) == bool(reconstruction_predicted)
    reasons = []
    if mse > gate.max_pixel_mse:
        reasons.append(f"pixel MSE {mse:.4f} > {gate.max_pixel_mse:.4f}: the input is poorly "
                       "reconstructed (out of domain?)")
    if gate.require_agreement and not agrees:
        reasons.append("prediction on reconstruction disagrees with prediction on input")
    return Quality(pixel_mse=mse, max_pixel_mse=gate.max_pixel_mse, prediction_agrees=agrees,
                   unreliable=bool(reasons), reasons=reasons)
