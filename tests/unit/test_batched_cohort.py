"""A cohort's chunk runs each model stage across all of its images at once: the model
calls of a chunk are those of one image, and every image's numbers are those of
explaining it alone."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from explain_doubles import LinearBackend

from styleprobe.backends.base import ModelBackend
from styleprobe.backends.counting import CountingBackend
from styleprobe.backends.local import LocalBackend
from styleprobe.cohort.ledger import CohortLedger, CohortSpec
from styleprobe.cohort.runner import CohortRunner, even_chunks
from styleprobe.explain.engine import Explainer, JobKeys, case_pictures, render_on_demand
from styleprobe.explain.inputs import from_model_layout
from styleprobe.explain.result import ExplanationResult
from styleprobe.explain.spec import JobSpec, LambdaGrid, ProbeSettings, SearchSettings
from styleprobe.storage.local import LocalStore

SEARCH = SearchSettings(rounds=3, points=4)


@pytest.fixture(scope="module")
def tiny(tiny_repository: Path) -> LocalBackend:
    return LocalBackend(tiny_repository, "tiny")


@pytest.fixture(scope="module")
def linear(tiny: LocalBackend) -> LinearBackend:
    return LinearBackend(tiny.model_set, ["healthy", "sick"])


def linear_images(linear: LinearBackend) -> dict[str, np.ndarray]:
    """Images at known places along the true direction: sick, healthy, both near the
    threshold and far from it (no flip within the grid for the last)."""
    alpha = linear.true_direction(1)
    rng = np.random.default_rng(5)
    images = {}
    for i, offset in enumerate([1.0, -0.8, 0.3, -0.2, 40.0]):
        w = rng.standard_normal(linear.model_set.w_dim)
        w += alpha * (offset - w @ alpha)
        images[f"img{i}.npy"] = from_model_layout(
            linear.synthesis(w[None].astype(np.float32)), linear.model_set.preprocessing)[0]
    return images


def random_images(count: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(11)
    return {f"img{i}.npy": rng.random((20, 20, 1)).astype(np.float32) for i in range(count)}


def cohort_runner(backend: ModelBackend, store: LocalStore,
                  source: Callable[[str], np.ndarray]) -> CohortRunner:
    return CohortRunner(store, CohortLedger(store, "c1"), source, lambda: backend)


def cohort_spec(backend: ModelBackend) -> CohortSpec:
    job = JobSpec.create(backend.model_set, probe=ProbeSettings(samples=300),
                         lambdas=LambdaGrid.parse("-3:3:9"), search=SEARCH)
    return CohortSpec(cohort_id="c1", threshold=0.5, job=job)


def numbers(result: ExplanationResult) -> dict:
    """Everything in a manifest but the job's own identity, input and keys."""
    raw = result.to_dict()
    for name in ("job_id", "outputs", "input"):
        del raw[name]
    return raw


def test_a_chunks_model_calls_are_those_of_one_image(linear: LinearBackend,
                                                     tmp_path: Path) -> None:
    images = linear_images(linear)
    spec = cohort_spec(linear)
    single = CountingBackend(linear)
    runner = cohort_runner(single, LocalStore(tmp_path / "one"), images.__getitem__)
    runner.prepare(spec)
    single.reset()
    runner.run_models(["img0.npy"])
    assert single.calls == {"encoder": 1, "classifier": 1,
                            "decode_and_classify": 2 + SEARCH.rounds}

    chunk = CountingBackend(linear)
    runner = cohort_runner(chunk, LocalStore(tmp_path / "chunk"), images.__getitem__)
    runner.prepare(spec)
    chunk.reset()
    started = runner.run_models(list(images))
    assert all(isinstance(keys, JobKeys) and keys.traversal for keys in started)
    assert chunk.calls == single.calls  # batched: as many calls as for one image
    flipping = len(images) - 1  # the last image is too far from the threshold to flip
    assert chunk.rows == {"encoder": 5, "classifier": 5,
                          "decode_and_classify": 5 + 5 * 9
                          + flipping * SEARCH.rounds * SEARCH.points}


def test_a_chunk_without_flips_makes_no_search_call(linear: LinearBackend,
                                                    tmp_path: Path) -> None:
    far = {"img4.npy": linear_images(linear)["img4.npy"]}
    counting = CountingBackend(linear)
    runner = cohort_runner(counting, LocalStore(tmp_path), far.__getitem__)
    runner.prepare(cohort_spec(linear))
    counting.reset()
    runner.run_models(list(far))
    assert counting.calls["decode_and_classify"] == 2  # reconstruction, grid


@pytest.mark.parametrize("kind", ["linear", "tiny"])
def test_a_cohort_gives_each_image_its_own_explanation(kind: str, linear: LinearBackend,
                                                       tiny: LocalBackend,
                                                       tmp_path: Path) -> None:
    backend: ModelBackend = linear if kind == "linear" else tiny
    images = linear_images(linear) if kind == "linear" else random_images(6)
    store = LocalStore(tmp_path)
    spec = cohort_spec(backend)
    counting = CountingBackend(backend)
    summary = cohort_runner(counting, store, images.__getitem__).run(spec, list(images),
                                                                     chunk_size=2)
    assert summary.done == len(images)
    assert counting.calls["encoder"] == len(images) // 2  # one call per chunk
    ledger = CohortLedger(store, "c1")
    alone = Explainer(backend, store)
    for name, image in images.items():
        in_cohort = ExplanationResult.from_json(store.get(ledger.row(name).manifest))
        by_itself = alone.explain(image, spec.job, filename=name)
        assert_same(numbers(in_cohort), numbers(by_itself), name)
        assert in_cohort.input.sha256 == by_itself.input.sha256


def assert_same(got: object, want: object, where: str) -> None:
    """Equal, numbers within float tolerance, at any depth."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and got.keys() == want.keys(), where
        for key, value in want.items():
            assert_same(got[key], value, f"{where}.{key}")
    elif isinstance(want, list | tuple):
        assert isinstance(got, list | tuple) and len(got) == len(want), where
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            assert_same(a, b, f"{where}[{i}]")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert got == pytest.approx(want, abs=1e-5), where
    else:
        assert got == want, where


def test_a_cohort_without_pictures_has_its_rows_and_draws_them_on_demand(
        tiny: LocalBackend, tmp_path: Path) -> None:
    images = random_images(3)
    store = LocalStore(tmp_path)
    spec = replace(cohort_spec(tiny), render=False)
    summary = cohort_runner(tiny, store, images.__getitem__).run(spec, list(images))
    assert summary.done == 3 and store.exists(summary.outputs["csv"])
    row = CohortLedger(store, "c1").row("img0.npy")
    bare = ExplanationResult.from_json(store.get(row.manifest))
    assert set(bare.outputs) == {"manifest"} and len(row.probabilities) == 9
    assert not store.list(f"jobs/{bare.job_id}/frames/")

    light = case_pictures(store, bare.job_id, farthest=8)  # the cohort report's cases
    drawn = render_on_demand(store, bare.job_id)
    assert light["input"] == store.get(drawn.outputs["input"])
    assert light["reconstruction"] == store.get(drawn.outputs["reconstruction"])
    assert light["counterfactual"] == store.get(drawn.outputs.get("flip_frame")
                                                or drawn.outputs["frame_008"])
    assert {"report", "animation", "strip", "frame_008"} <= set(drawn.outputs)
    assert store.get(drawn.outputs["animation"]).startswith(b"GIF")
    assert drawn.probabilities == bare.probabilities
    assert ExplanationResult.from_json(store.get(row.manifest)).outputs == drawn.outputs


def test_chunks_are_even_and_none_is_short() -> None:
    images = [f"img{i}" for i in range(100)]
    chunks = even_chunks(images, 16)
    assert [len(c) for c in chunks] == [17, 16, 17, 17, 16, 17]
    assert [name for chunk in chunks for name in chunk] == images
    assert even_chunks(images[:10], 16) == [images[:10]] and even_chunks([], 16) == []
    assert [len(c) for c in even_chunks(images[:32], 16)] == [16, 16]
