"""Phantom data sets: determinism, factor ranges, the known label functions, shortcuts."""

from __future__ import annotations

import numpy as np
import pytest

from styleprobe.data.datasets import DataError, phantom_set, render
from styleprobe.data.histology import DISEASE_FACTORS as HISTOLOGY_DISEASE
from styleprobe.data.histology import HistologyPhantoms, tumour_score
from styleprobe.data.knee import DISEASE_FACTORS as KNEE_DISEASE
from styleprobe.data.knee import KneePhantoms, kl_grade
from styleprobe.data.phantom import MARKER_SHARE, Shortcut

PHANTOM_KINDS = [KneePhantoms, HistologyPhantoms]

# Sampling ranges of the nuisance factors (phantom.sample draws them uniformly).
KNEE_RANGES = {
    "rotation": (-10, 10), "exposure": (-0.12, 0.12), "contrast": (0.75, 1.25),
    "blur": (0, 1), "noise": (0.01, 0.05), "bone_width": (0.85, 1.15),
    "shift_x": (-0.08, 0.08), "shift_y": (-0.08, 0.08),
}
HISTOLOGY_RANGES = {
    "stain_intensity": (0.75, 1.2), "hue_shift": (-0.06, 0.06), "blur": (0, 0.8),
    "noise": (0.01, 0.04),
}


@pytest.mark.parametrize("cls", PHANTOM_KINDS)
def test_same_seed_and_index_give_the_same_sample(cls: type) -> None:
    a, b = cls(seed=3, size=32).sample(7), cls(seed=3, size=32).sample(7)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.mask, b.mask)
    assert a.factors == b.factors and a.label == b.label


@pytest.mark.parametrize("cls", PHANTOM_KINDS)
def test_samples_do_not_depend_on_the_order_they_are_drawn(cls: type) -> None:
    phantoms = cls(seed=1, size=32)
    batch = render(phantoms, 3, start=5)
    np.testing.assert_array_equal(batch.images[2], phantoms.sample(7).image)


@pytest.mark.parametrize("cls", PHANTOM_KINDS)
def test_different_seeds_and_indices_differ(cls: type) -> None:
    base = cls(seed=0, size=32).sample(0)
    for other in (cls(seed=1, size=32).sample(0), cls(seed=0, size=32).sample(1)):
        assert not np.array_equal(base.image, other.image)
        assert base.factors != other.factors


@pytest.mark.parametrize(("cls", "channels"), [(KneePhantoms, 1), (HistologyPhantoms, 3)])
@pytest.mark.parametrize("size", [32, 64])
def test_images_and_masks_have_the_documented_format(cls: type, channels: int,
                                                     size: int) -> None:
    for i in range(4):
        s = cls(seed=0, size=size).sample(i)
        assert s.image.shape == (size, size, channels) and s.image.dtype == np.float32
        assert s.image.min() >= 0.0 and s.image.max() <= 1.0
        assert s.image.std() > 0.02  # something is drawn
        assert s.mask.shape == (size, size) and s.mask.dtype == np.uint8
        assert set(np.unique(s.mask)) <= {0, 1}
        assert s.mask.sum() > 0, "the disease mask must mark where the disease factors live"
        assert s.label in (0, 1)


@pytest.mark.parametrize(("cls", "disease", "ranges"), [
    (KneePhantoms, KNEE_DISEASE, KNEE_RANGES),
    (HistologyPhantoms, HISTOLOGY_DISEASE, HISTOLOGY_RANGES),
])
def test_factors_lie_in_their_ranges(cls: type, disease: tuple[str, ...],
                                     ranges: dict[str, tuple[float, float]]) -> None:
    phantoms = cls(seed=0, size=32)
    for i in range(40):
        factors = phantoms.sample(i).factors
        assert set(factors) == set(cls.disease_factors) | set(cls.nuisance_factors)
        for name in disease:
            assert 0.0 <= factors[name] <= 1.0, name
        for name, (low, high) in ranges.items():
            assert low <= factors[name] <= high, name
        assert factors["marker"] in (0.0, 1.0)


def test_disease_factors_cover_their_range() -> None:
    data = render(KneePhantoms(seed=0, size=16), 200)
    for name in KNEE_DISEASE:
        assert data.factors[name].min() < 0.1 and data.factors[name].max() > 0.9, name


@pytest.mark.parametrize(("factors", "grade"), [
    ({"joint_space_narrowing": 0.0, "osteophytes": 0.0, "sclerosis": 0.0}, 0),
    ({"joint_space_narrowing": 0.5, "osteophytes": 0.0, "sclerosis": 0.0}, 1),  # score 0.25
    ({"joint_space_narrowing": 0.8, "osteophytes": 0.0, "sclerosis": 0.0}, 2),  # 0.40
    ({"joint_space_narrowing": 1.0, "osteophytes": 0.5, "sclerosis": 0.5}, 3),  # 0.75
    ({"joint_space_narrowing": 1.0, "osteophytes": 1.0, "sclerosis": 1.0}, 4),
])
def test_kl_grade_counts_thresholds_passed_by_the_weighted_score(factors: dict[str, float],
                                                                  grade: int) -> None:
    assert kl_grade(factors) == grade


def test_knee_label_is_oa_when_grade_at_least_two() -> None:
    phantoms = KneePhantoms(seed=0, size=16)
    grades = set()
    for i in range(100):
        s = phantoms.sample(i)
        grade = kl_grade(s.factors)
        grades.add(grade)
        assert s.extra["kl_grade"] == grade
        assert s.label == int(grade >= 2)
    assert grades == {0, 1, 2, 3, 4}


def test_histology_label_is_tumour_when_score_above_half() -> None:
    phantoms = HistologyPhantoms(seed=0, size=16)
    labels = []
    for i in range(60):
        s = phantoms.sample(i)
        assert s.label == int(tumour_score(s.factors) > 0.5)
        labels.append(s.label)
    assert 0 < sum(labels) < len(labels)


def marker_and_labels(phantoms: KneePhantoms | HistologyPhantoms,
                      n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    samples = [phantoms.sample(i) for i in range(n)]
    return (np.array([s.factors["marker"] for s in samples]),
            np.array([s.label for s in samples]))


@pytest.mark.parametrize("cls", PHANTOM_KINDS)
def test_planted_shortcut_agrees_with_the_label_at_its_rate(cls: type) -> None:
    marker, labels = marker_and_labels(cls(seed=0, size=16, shortcut=Shortcut(rate=0.95)))
    assert abs((marker == labels).mean() - 0.95) < 0.04


@pytest.mark.parametrize("phantoms", PHANTOM_KINDS)
def test_default_marker_is_independent_of_the_label(phantoms: type) -> None:
    marker, labels = marker_and_labels(phantoms(seed=0, size=16))
    for cls in (0, 1):
        assert abs(marker[labels == cls].mean() - MARKER_SHARE) < 0.1


def test_marker_is_drawn_in_the_top_left_corner() -> None:
    phantoms = KneePhantoms(seed=0, size=32)
    with_marker = next(s for s in map(phantoms.sample, range(50)) if s.factors["marker"])
    corner = with_marker.image[:5, :5, 0]
    assert corner.max() > 0.9  # the bright tag


def test_shortcut_rate_outside_unit_interval_is_rejected() -> None:
    with pytest.raises(ValueError, match="shortcut rate"):
        Shortcut(rate=1.5)
    with pytest.raises(DataError, match="shortcut rate"):
        phantom_set("knee", shortcut_rate=-0.1)


def test_unknown_phantom_set_is_a_data_error() -> None:
    with pytest.raises(DataError, match="unknown phantom set"):
        phantom_set("lung")


def test_render_collects_factors_masks_and_names() -> None:
    data = render(phantom_set("knee", seed=0, size=16), 6)
    assert data.images.shape == (6, 16, 16, 1) and data.masks.shape == (6, 16, 16)
    assert data.labels.dtype == np.int64 and len(data.names) == 6
    assert set(data.factors) >= set(KNEE_DISEASE) | {"kl_grade", "marker"}
    assert all(v.shape == (6,) for v in data.factors.values())
