"""λ grids, batched traversal and the counterfactual search, on a linear backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from explain_doubles import LinearBackend

from styleprobe.backends.counting import CountingBackend
from styleprobe.backends.local import LocalBackend
from styleprobe.explain.scores import target_probability
from styleprobe.explain.spec import LambdaGrid, LambdaSpecError, SearchSettings
from styleprobe.explain.traverse import decode_frames, find_flip


def test_lambda_grid_parse() -> None:
    grid = LambdaGrid.parse("-3:3:17")
    assert (grid.start, grid.stop, grid.steps, str(grid)) == (-3.0, 3.0, 17, "-3:3:17")
    np.testing.assert_allclose(grid.values(), np.linspace(-3, 3, 17))
    assert LambdaGrid.parse(" -1.5:0.5:2 ").values().tolist() == [-1.5, 0.5]
    assert LambdaGrid.parse(str(LambdaGrid())) == LambdaGrid()


@pytest.mark.parametrize(("spec", "message"), [
    ("-3:3", "start:stop:steps"), ("a:3:5", "numbers"), ("-3:3:2.5", "whole number"),
    ("3:-3:5", "less than"), ("1:1:5", "less than"), ("-3:3:1", "2..257"),
    ("-3:3:258", "2..257"), ("nan:3:5", "finite"), ("-inf:3:5", "finite"), ("", "start"),
])
def test_bad_lambda_specs(spec: str, message: str) -> None:
    with pytest.raises(LambdaSpecError, match=message):
        LambdaGrid.parse(spec)


@pytest.fixture(scope="module")
def linear(tiny_repository: Path) -> LinearBackend:
    return LinearBackend(LocalBackend(tiny_repository, "tiny").model_set, ["healthy", "sick"])


def _start(linear: LinearBackend, probability: float) -> tuple[np.ndarray, np.ndarray, float]:
    """A latent whose P(sick) is ``probability``, the true direction, and the exact λ at
    which P(sick) crosses 0.5 along it."""
    alpha = linear.true_direction(1)
    slope = linear.gain * alpha @ (linear.units[1] - linear.units[0])  # logit per unit λ
    logit = np.log(probability / (1 - probability))
    w = np.random.default_rng(1).standard_normal(linear.model_set.w_dim)
    w -= alpha * (w @ alpha)  # logit 0 at λ = 0 ...
    w += alpha * logit / slope  # ... then moved to the wanted logit
    return w.astype(np.float32), alpha.astype(np.float32), -logit / slope


def test_grid_is_one_batched_call(linear: LinearBackend) -> None:
    counting = CountingBackend(linear)
    w, alpha, _ = _start(linear, 0.9)
    frames = decode_frames(counting, w, alpha, LambdaGrid.parse("-3:3:17").values(), 1)
    assert counting.calls == {"decode_and_classify": 1}
    assert frames.images.shape == (17, 1, 16, 16)
    assert np.all(np.diff(frames.probabilities) > 0)  # +λ raises the target
    _, logits = linear.decode_and_classify(w[None])
    assert frames.probabilities[8] == pytest.approx(target_probability(logits, 1)[0], abs=1e-6)


@pytest.mark.parametrize("start", [0.9, 0.2])
def test_flip_is_found_by_batched_k_section(linear: LinearBackend, start: float) -> None:
    w, alpha, crossing = _start(linear, start)
    grid = decode_frames(linear, w, alpha, LambdaGrid.parse("-3:3:7").values(), 1)
    counting = CountingBackend(linear)
    flip = find_flip(counting, w, alpha, 1, 0.5, start, grid, SearchSettings(3, 8))
    assert flip is not None
    assert counting.calls == {"decode_and_classify": 3} and counting.rows[
        "decode_and_classify"] == 24
    assert np.sign(flip.lambda_) == np.sign(crossing)  # towards the other class
    inside, outside = flip.bracket
    assert outside == flip.lambda_ and abs(outside - inside) == pytest.approx(1 / 729, rel=1e-6)
    assert min(inside, outside) <= crossing <= max(inside, outside)
    assert (flip.probability >= 0.5) != (start >= 0.5)
    assert flip.image.shape == (1, 16, 16)


def test_no_flip_within_range(linear: LinearBackend) -> None:
    w, alpha, crossing = _start(linear, 0.999)
    spec = f"{-abs(crossing) / 2}:{abs(crossing) / 2}:9"
    grid = decode_frames(linear, w, alpha, LambdaGrid.parse(spec).values(), 1)
    assert find_flip(linear, w, alpha, 1, 0.5, 0.999, grid, SearchSettings()) is None
    positive_only = decode_frames(linear, w, alpha, LambdaGrid.parse("1:3:5").values(), 1)
    assert find_flip(linear, w, alpha, 1, 0.5, 0.999, positive_only, None) is None
