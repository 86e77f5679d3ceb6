"""The quality gate flags a reconstruction whose target probability moved too far from the
input's, on whatever side of the threshold; old manifests without the field still load."""

from __future__ import annotations

import numpy as np
import pytest

from styleprobe.explain.quality import assess_reconstruction
from styleprobe.modelset import QualityGate

IMAGE = np.full((8, 8, 1), 0.5, np.float32)
GATE = QualityGate(max_pixel_mse=0.01)


@pytest.mark.parametrize(("p_input", "p_rec", "unreliable"), [
    (0.025, 0.47, True),  # the case: both below 0.5, yet moved by 0.445
    (0.9, 0.55, True),  # both above, moved by 0.35
    (0.3, 0.55, True),  # across the threshold
    (0.1, 0.35, False),  # moved 0.25, same side
])
def test_a_moved_probability_is_flagged_whatever_the_side(p_input: float, p_rec: float,
                                                          unreliable: bool) -> None:
    quality = assess_reconstruction(IMAGE, IMAGE, p_input, p_rec, 0.5, GATE)
    assert quality.unreliable is unreliable
    assert quality.probability_shift == pytest.approx(abs(p_rec - p_input))
    moved = [r for r in quality.reasons if "moved more than" in r]
    assert bool(moved) is (abs(p_rec - p_input) > GATE.max_probability_shift)
    if moved:
        assert f"{p_input:.3f}" in moved[0] and f"{p_rec:.3f}" in moved[0]


def test_the_shift_limit_is_the_gates_and_defaults_for_old_manifests() -> None:
    assert QualityGate(**{"max_pixel_mse": 0.01, "require_agreement": True}) == GATE
    assert GATE.max_probability_shift == 0.3
    loose = QualityGate(max_pixel_mse=0.01, max_probability_shift=0.5)
    assert not assess_reconstruction(IMAGE, IMAGE, 0.025, 0.47, 0.5, loose).unreliable
