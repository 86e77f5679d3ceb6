"""Direction probing: known answers on a linear backend, caching, confounders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from explain_doubles import LinearBackend

from styleprobe.backends.counting import CountingBackend
from styleprobe.backends.local import LocalBackend
from styleprobe.explain.direction import (
    DirectionError,
    direction_key,
    ensure_direction,
    load_direction,
)
from styleprobe.explain.spec import JobSpecError, ProbeSettings
from styleprobe.modelset import ModelSetError
from styleprobe.storage.local import LocalStore

PROBE = ProbeSettings(samples=600, seed=3)


@pytest.fixture(scope="module")
def tiny(tiny_repository: Path) -> LocalBackend:
    return LocalBackend(tiny_repository, "tiny")


@pytest.mark.parametrize("classes", [["healthy", "sick"], ["normal", "benign", "tumour"]])
def test_recovers_the_known_direction(tiny: LocalBackend, tmp_path: Path,
                                      classes: list[str]) -> None:
    backend = LinearBackend(tiny.model_set, classes)
    store = LocalStore(tmp_path)
    for index, target in enumerate(classes):
        direction = load_direction(store, ensure_direction(backend, store, target, PROBE))
        assert direction.class_index == index
        assert np.linalg.norm(direction.array()) == pytest.approx(1.0, abs=1e-5)
        # +λ raises the target: the probe direction points along the true one
        assert direction.array() @ backend.true_direction(index) > 0.85
        assert direction.auc > 0.9 and direction.accuracy > 0.8
    assert len(store.list("directions/")) == len(classes)


def test_second_call_makes_no_model_call(tiny: LocalBackend, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    first = CountingBackend(tiny)
    key = ensure_direction(first, store, "sick", ProbeSettings(samples=200))
    assert first.calls["mapping"] == 1 and first.rows["decode_and_classify"] == 200
    again = CountingBackend(tiny)
    assert ensure_direction(again, store, "sick", ProbeSettings(samples=200)) == key
    assert sum(again.calls.values()) == 0


def test_key_depends_on_everything_that_changes_the_direction(tiny: LocalBackend) -> None:
    ms = tiny.model_set
    base = direction_key(ms, "sick", PROBE, [])
    assert base.startswith("directions/") and base.endswith(".json")
    assert direction_key(ms, "sick", ProbeSettings(samples=600, seed=3), []) == base
    others = {
        direction_key(ms, "healthy", PROBE, []),
        direction_key(ms, "sick", ProbeSettings(samples=601, seed=3), []),
        direction_key(ms, "sick", ProbeSettings(samples=600, seed=4), []),
        direction_key(ms, "sick", ProbeSettings(samples=600, seed=3, truncation_psi=0.7), []),
        direction_key(ms, "sick", PROBE, ["exposure"]),
    }
    assert base not in others and len(others) == 5
    assert direction_key(ms, "sick", PROBE, ["rotation", "exposure"]) == direction_key(
        ms, "sick", PROBE, ["exposure", "rotation"])


def test_orthogonal_to_removed_confounders(tiny: LocalBackend, tmp_path: Path) -> None:
    backend = LinearBackend(tiny.model_set, ["healthy", "sick"])
    store = LocalStore(tmp_path)
    plain = load_direction(store, ensure_direction(backend, store, "sick", PROBE))
    direction = load_direction(store, ensure_direction(
        backend, store, "sick", PROBE, ["rotation", "exposure"]))
    assert sorted(direction.orthogonalized_against) == ["exposure", "rotation"]
    for name in ("exposure", "rotation"):
        nuisance = np.asarray(tiny.model_set.nuisance_directions[name])
        assert abs(direction.array() @ nuisance) < 1e-6
        assert direction.orthogonalized_against[name] == pytest.approx(
            plain.array() @ nuisance, abs=1e-6)
    assert np.linalg.norm(direction.array()) == pytest.approx(1.0, abs=1e-5)
    assert direction.auc_unconstrained == pytest.approx(plain.auc)


def test_clear_errors(tiny: LocalBackend, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(JobSpecError, match="no nuisance direction blur"):
        ensure_direction(tiny, store, "sick", PROBE, ["blur"])
    with pytest.raises(ModelSetError, match="unknown target"):
        ensure_direction(tiny, store, "OA", PROBE)
    with pytest.raises(JobSpecError, match=r"20\.\.100000"):
        ProbeSettings(samples=5)
    one_sided = LinearBackend(tiny.model_set, ["healthy", "sick"], gain=0.0)  # p = 0.5 always
    with pytest.raises(DirectionError, match="cannot show this classifier's decision"):
        ensure_direction(one_sided, store, "healthy", PROBE)
    assert [key.endswith(".finding.json") for key in store.list()] == [True]  # remembered
