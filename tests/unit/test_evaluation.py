"""The evaluation's measuring parts: Spearman along λ, validity, localization scores,
Grad-CAM, the oracle, the shortcut backend and the report's Markdown."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from styleprobe.backends.local import LocalBackend
from styleprobe.evaluation.bias import (
    MARKER,
    SwappedClassifier,
    identified,
    marker_region,
)
from styleprobe.evaluation.localization import (
    eager_classifier,
    gradcam,
    localization_scores,
    mass_inside,
    pixel_auroc,
    pointing_hit,
)
from styleprobe.evaluation.oracle import DISEASE_SCORE, OracleConfig, load_or_train_oracle
from styleprobe.evaluation.report import fmt, markdown
from styleprobe.evaluation.traversals import (
    Traversals,
    factor_motion,
    spearman_with_lambda,
    validity,
)
from styleprobe.explain.direction import direction_key
from styleprobe.explain.spec import ProbeSettings


def test_spearman_along_lambda() -> None:
    rising = np.array([[0.1, 0.2, 0.5, 0.9], [3.0, 2.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    assert spearman_with_lambda(rising).tolist() == pytest.approx([1.0, -1.0, 0.0])
    readings = np.stack([rising.T, -rising.T], axis=2).transpose(1, 0, 2)  # (N, L, F)
    rho = spearman_with_lambda(readings)
    assert rho.shape == (3, 2)
    assert rho[:, 0] == pytest.approx([1.0, -1.0, 0.0])
    assert rho[:, 1] == pytest.approx([-1.0, 1.0, 0.0])


def _traversals() -> Traversals:
    lambdas = np.linspace(-1, 1, 5)
    probabilities = np.array([[0.1, 0.3, 0.5, 0.7, 0.9], [0.9, 0.8, 0.85, 0.7, 0.6]])
    readings = np.stack([np.outer([1, 1], lambdas), np.ones((2, 5))], axis=2)  # (2, 5, 2)
    return Traversals(lambdas, probabilities, readings, np.array([-0.2, np.nan]),
                      np.zeros((2, 1, 4, 4)))


def test_validity_counts_flips_and_monotonicity() -> None:
    record = validity(_traversals())
    assert record["flip_rate"] == 0.5
    assert record["flip_lambda_abs_quantiles"][2] == pytest.approx(0.2)
    assert record["monotonic_share"] == 0.5
    assert -1.0 <= record["monotonicity_spearman_median"] <= 1.0


def test_factor_motion_in_standard_units() -> None:
    motion = factor_motion(_traversals(), ["grows", "still"])
    assert motion["grows"]["spearman_median"] == pytest.approx(1.0)
    assert motion["grows"]["abs_change_mean"] == pytest.approx(2.0)
    assert motion["still"] == {"spearman_median": 0.0, "spearman_mean": 0.0,
                               "change_mean": 0.0, "abs_change_mean": 0.0}


def test_localization_scores_perfect_inverted_and_empty() -> None:
    mask = np.zeros((8, 8), np.uint8)
    mask[2:4, 2:4] = 1
    assert pixel_auroc(mask.astype(float), mask) == 1.0
    assert pixel_auroc(1.0 - mask, mask) == 0.0
    assert pixel_auroc(mask.astype(float), np.zeros_like(mask)) is None
    assert pointing_hit(mask.astype(float), mask)
    scores = localization_scores(np.stack([mask, 1 - mask]).astype(float),
                                 np.stack([mask, mask]))
    assert scores["auroc_mean"] == 0.5
    assert scores["pointing_game"] == 0.5
    assert mass_inside(np.stack([mask.astype(float)]), mask) == 1.0


class _Bright(nn.Module):
    """A convolution that passes the image through, and a logit that sums it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.fill_(1.0)
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = self.conv(x).sum(dim=(1, 2, 3))
        return torch.stack([-total, total], dim=1)


def test_gradcam_points_at_the_evidence() -> None:
    images = -np.ones((2, 1, 8, 8), np.float32)
    images[0, 0, 1:3, 5:7] = 1.0
    images[1, 0, 5:7, 1:3] = 1.0
    maps = gradcam(_Bright(), images, class_index=1)
    assert maps.shape == (2, 8, 8)
    assert maps.max() == pytest.approx(1.0) and maps.min() >= 0.0
    masks = (images[:, 0] > 0).astype(np.uint8)
    assert localization_scores(maps, masks)["pointing_game"] == 1.0
    assert all(pixel_auroc(m, k) > 0.9 for m, k in zip(maps, masks, strict=True))


class _Detectors(nn.Module):
    """Two 1x1 detectors, of bright (channel 0) and of dark (channel 1) pixels; the logit of
    class ``c`` is the mean response of detector ``1 - c``: 'bright' is class 1."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).view(2, 1, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).mean(dim=(2, 3)).flip(1)


def test_gradcam_follows_the_class_asked_for() -> None:
    images = np.zeros((3, 1, 8, 8), np.float32)
    bright, dark = np.zeros((3, 8, 8), np.uint8), np.zeros((3, 8, 8), np.uint8)
    for i, (b, d) in enumerate(((slice(0, 2), slice(6, 8)), (slice(3, 5), slice(0, 2)),
                                (slice(6, 8), slice(3, 5)))):
        images[i, 0, b, b], bright[i, b, b] = 1.0, 1
        images[i, 0, d, d], dark[i, d, d] = -1.0, 1
    model = _Detectors()
    for class_index, region in ((1, bright), (0, dark)):
        maps = gradcam(model, images, class_index, batch=2)
        assert localization_scores(maps, region)["pointing_game"] == 1.0
        assert mass_inside(maps, region.any(axis=0)) > 0.7
        assert np.array_equal(maps, gradcam(model, images, class_index))


def test_eager_classifier_matches_torchscript(tiny_repository: Path) -> None:
    backend = LocalBackend(tiny_repository, "tiny")
    eager = eager_classifier(tiny_repository, backend.model_set)
    assert eager is not None
    x = np.random.default_rng(0).uniform(-1, 1, (3, *backend.model_set.image_shape))
    x = x.astype(np.float32)
    with torch.no_grad():
        ours = eager(torch.from_numpy(x)).numpy()
    assert np.abs(ours - backend.classifier(x)).max() < 1e-5
    maps = gradcam(eager, x, class_index=1)
    assert maps.shape == (3, 16, 16) and np.isfinite(maps).all()


def test_swapped_classifier_gets_directions_of_its_own(tiny_repository: Path) -> None:
    backend = LocalBackend(tiny_repository, "tiny")
    eager = eager_classifier(tiny_repository, backend.model_set)
    assert eager is not None
    with torch.no_grad():
        eager.head[-1].bias += 1.0
    swapped = SwappedClassifier(backend, eager, "tiny-shortcut-classifier")
    probe = ProbeSettings(samples=100)
    assert (direction_key(swapped.model_set, "sick", probe, [])
            != direction_key(backend.model_set, "sick", probe, []))
    w = backend.mapping(np.zeros((2, backend.model_set.z_dim), np.float32))
    images, logits = swapped.decode_and_classify(w)
    assert images.shape == (2, 1, 16, 16)
    assert not np.allclose(logits, backend.classifier(images))


def test_marker_region_is_the_top_left_tag() -> None:
    region = marker_region(32)
    rows, cols = np.nonzero(region)
    assert 0 < region.sum() < 0.05 * region.size
    assert rows.max() < 8 and cols.max() < 8


def test_shortcut_identified_only_when_the_marker_moves_most() -> None:
    def motion(marker: float, disease: float) -> dict[str, dict[str, float]]:
        return {MARKER: {"abs_change_mean": marker}, "a": {"abs_change_mean": disease},
                DISEASE_SCORE: {"abs_change_mean": disease / 2}}

    assert identified(motion(1.0, 0.4), ["a", DISEASE_SCORE])
    assert not identified(motion(1.0, 0.6), ["a", DISEASE_SCORE])


def test_oracle_is_trained_once_and_reads_every_factor(tmp_path: Path) -> None:
    config = OracleConfig(train_samples=96, test_samples=48, epochs=2, width=8)
    oracle = load_or_train_oracle(tmp_path, "knee", 16, config)
    (cached,) = tmp_path.glob("oracle-knee-16x1-*.pt")
    stamp = cached.stat().st_mtime_ns
    again = load_or_train_oracle(tmp_path, "knee", 16, config)
    assert cached.stat().st_mtime_ns == stamp
    assert oracle.factors[-1] == DISEASE_SCORE and "marker" in oracle.factors
    assert set(oracle.r2) == set(oracle.factors)
    images = np.zeros((3, 1, 16, 16), np.float32)
    assert np.allclose(oracle.read(images), again.read(images))
    assert oracle.read(images).shape == (3, len(oracle.factors))


def test_markdown_tables_escape_pipes_and_format_numbers() -> None:
    text = markdown([("h1", "T"), ("table", (["a|b", "c"], [["x|y", fmt(0.12345)]]))])
    assert "| x\\|y | 0.123 |" in text
    assert fmt(None) == fmt(float("nan")) == "—"
    assert fmt(True) == "yes"
