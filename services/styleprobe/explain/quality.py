"""How far to trust an explanation: how well the encoder reconstructs the input.

Pixel MSE of ``G(E(x))`` against ``x`` (both in [0, 1]), whether ``f(x)`` and
``f(G(E(x)))`` fall on the same side of the threshold, and how far the target probability
moved between them (whatever the side); beyond the model set's quality gate the
explanation is flagged ``unreliable``, with the reasons and their codes (the API's
``ReliabilityReason`` without its prefix). An input out of the model set's domain
(:mod:`styleprobe.explain.domain`) is flagged too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from styleprobe.explain.scores import predicted
from styleprobe.modelset import QualityGate


@dataclass
class Quality:
    """Reconstruction quality of one input and the verdict of the quality gate."""

    pixel_mse: float
    max_pixel_mse: float
    prediction_agrees: bool
    unreliable: bool
    reasons: list[str] = field(default_factory=list)
    probability_shift: float = 0.0  # |f(G(E(x))) - f(x)| for the target class
    reason_codes: list[str] = field(default_factory=list)  # one per reason, e.g. PIXEL_ERROR
    out_of_domain: bool = False


def assess_reconstruction(image: np.ndarray, reconstruction: np.ndarray, p_input: float,
                          p_reconstruction: float, threshold: float,
                          gate: QualityGate, out_of_domain: list[str] | None = None) -> Quality:
    """Compare an input and its reconstruction (same shape, [0, 1]) and the target
    probabilities on each against ``gate``; ``out_of_domain``: why the input is out of the
    model set's domain, if it is."""
    mse = float(np.mean((np.asarray(reconstruction, np.float64) - image) ** 2))
    agrees = bool(predicted(p_input, threshold)) == bool(predicted(p_reconstruction, threshold))
    shift = abs(float(p_reconstruction) - float(p_input))
    coded = [("OUT_OF_DOMAIN", reason) for reason in out_of_domain or []]
    if mse > gate.max_pixel_mse:
        coded.append(("PIXEL_ERROR", f"pixel MSE {mse:.4f} > {gate.max_pixel_mse:.4f}: the "
                                     "input is poorly reconstructed (out of domain?)"))
    if gate.require_agreement and not agrees:
        coded.append(("PREDICTION_DISAGREES",
                      "prediction on reconstruction disagrees with prediction on input"))
    if shift > gate.max_probability_shift:
        coded.append(("PROBABILITY_SHIFT",
                      f"target probability {p_input:.3f} on the input but "
                      f"{p_reconstruction:.3f} on its reconstruction: moved more than "
                      f"{gate.max_probability_shift:g}"))
    return Quality(pixel_mse=mse, max_pixel_mse=gate.max_pixel_mse, prediction_agrees=agrees,
                   unreliable=bool(coded), reasons=[reason for _, reason in coded],
                   probability_shift=shift, reason_codes=[code for code, _ in coded],
                   out_of_domain=bool(out_of_domain))
