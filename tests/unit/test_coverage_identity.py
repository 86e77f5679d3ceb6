"""Coverage per factor, precision/recall of k-NN manifolds, and inversion identity, on
inputs whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from styleprobe.evaluation.coverage import factor_coverage, histogram_overlap, precision_recall
from styleprobe.evaluation.identity import identity

RNG = np.random.default_rng(0)


def test_histogram_overlap_is_one_for_the_same_and_zero_for_disjoint_samples() -> None:
    x = RNG.normal(size=2000)
    edges = np.quantile(x, np.linspace(0, 1, 11)[1:-1])
    assert histogram_overlap(x, x, edges) == pytest.approx(1.0)
    assert histogram_overlap(x, x + 100, edges) == pytest.approx(0.1)  # all in the top bin
    assert histogram_overlap(np.zeros(10), np.ones(10), np.array([0.5])) == 0.0


def test_factor_coverage_sees_a_never_drawn_marker_and_a_shrunk_spread() -> None:
    real = {"marker": (RNG.random(1000) < 0.3).astype(float), "exposure": RNG.normal(size=1000),
            "disease_score": RNG.random(1000)}
    generated = {"marker": np.zeros(1000), "exposure": RNG.normal(size=1000) * 0.1,
                 "disease_score": RNG.random(1000)}
    out = factor_coverage(real, generated, {"marker"}, [0.2, 0.4, 0.6, 0.8])
    assert out["marker"]["generated_rate"] == 0.0 and out["marker"]["rate_ratio"] == 0.0
    assert out["marker"]["coverage"] == pytest.approx(1 - out["marker"]["real_rate"])
    assert out["exposure"]["coverage"] < 0.5  # a tenth of the spread fills few deciles
    assert out["disease_score"]["coverage"] > 0.9
    assert len(out["disease_score"]["generated_histogram"]) == 5


def test_precision_recall_of_a_collapsed_generator() -> None:
    real = RNG.normal(size=(500, 8))
    same = precision_recall(real, RNG.normal(size=(500, 8)))  # the same distribution
    assert same["precision"] > 0.8 and same["recall"] > 0.8 and same["k"] == 3
    collapsed = real[:5].repeat(100, axis=0) + RNG.normal(size=(500, 8)) * 0.01
    pr = precision_recall(real, collapsed)
    assert pr["precision"] == 1.0 and pr["recall"] < 0.1  # realistic, but five images
    off = precision_recall(real, RNG.normal(size=(500, 8)) + 10)
    assert off["precision"] == 0.0 and off["recall"] == 0.0
    with pytest.raises(ValueError, match="more than k"):
        precision_recall(real[:3], real[:3])


def test_identity_tells_a_faithful_inversion_from_a_canonical_one() -> None:
    inputs = RNG.random((100, 1, 8, 8))
    faithful = identity(inputs, inputs + RNG.normal(size=inputs.shape) * 0.01)
    assert faithful["top1"] == 1.0 and faithful["median_rank"] == 0.0
    assert faithful["spread_ratio"] == pytest.approx(1.0, abs=0.02)
    canonical = identity(inputs, np.repeat(inputs.mean(axis=0, keepdims=True), 100, axis=0)
                         + RNG.normal(size=inputs.shape) * 0.01)
    assert canonical["top1"] < 0.1 and canonical["spread_ratio"] < 0.1
    assert canonical["chance"] == 0.01 and canonical["images"] == 100
    assert identity(inputs[:150], inputs, gallery=50)["images"] == 50
