"""The engine end to end on the tiny model set and on a linear backend with a known answer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from explain_doubles import FailingBackend, LinearBackend, RecordingStore
from pydicom.data import get_testdata_file

from styleprobe.backends.base import BackendError
from styleprobe.backends.local import LocalBackend
from styleprobe.data.codecs import ImageDecodeError
from styleprobe.explain.engine import (
    STAGE_NAMES,
    STAGES,
    Explainer,
    JobKeys,
    StageContext,
    run_stage,
    store_input,
)
from styleprobe.explain.inputs import from_model_layout, load_input
from styleprobe.explain.result import ExplanationResult
from styleprobe.explain.spec import JobSpec, JobSpecError, ProbeSettings
from styleprobe.storage.base import StoreError
from styleprobe.storage.local import LocalStore

PROBE = ProbeSettings(samples=200)
IMAGE = np.random.default_rng(7).random((24, 20, 1)).astype(np.float32)


@pytest.fixture(scope="module")
def tiny(tiny_repository: Path) -> LocalBackend:
    return LocalBackend(tiny_repository, "tiny")


@pytest.fixture(scope="module")
def spec(tiny: LocalBackend) -> JobSpec:
    return JobSpec.create(tiny.model_set, probe=PROBE)


def numbers(result: ExplanationResult) -> dict:
    """Everything in a manifest but the job's own identity and keys."""
    raw = result.to_dict()
    del raw["job_id"], raw["outputs"]
    return raw


def test_explain_writes_every_output_and_the_manifest_last(tiny: LocalBackend, spec: JobSpec,
                                                           tmp_path: Path) -> None:
    store = RecordingStore(LocalStore(tmp_path))
    stages: list[str] = []
    result = Explainer(tiny, store, lambda stage, _: stages.append(stage)).explain(IMAGE, spec)
    manifest_key = f"jobs/{result.job_id}/manifest.json"
    assert store.puts[-1] == manifest_key == result.outputs["manifest"]
    assert ExplanationResult.from_json(store.get(manifest_key)) == result
    assert [s for i, s in enumerate(stages) if s not in stages[:i]] == list(STAGE_NAMES)
    assert result.target == "sick" and len(result.lambdas) == len(result.probabilities) == 17
    assert set(result.models) == {"mapping", "synthesis", "encoder", "classifier", "styles",
                                  "stylesynthesis"}
    assert result.direction.key.startswith("directions/")
    for key in result.outputs.values():
        assert store.exists(key)
    assert sum(k.startswith("frame_") for k in result.outputs) == 17
    assert sum(k.startswith("difference_") for k in result.outputs) == 17
    assert store.get(result.outputs["animation"])[:4] == b"GIF8"
    assert store.content_type(result.outputs["strip"]) == "image/png"
    report = store.get(result.outputs["report"]).decode()
    assert report.count('src="data:image/') >= 6 and "http" not in report


def test_unreliable_is_said_everywhere(tiny: LocalBackend, spec: JobSpec,
                                      tmp_path: Path) -> None:
    result = Explainer(tiny, LocalStore(tmp_path)).explain(IMAGE, spec)
    assert result.unreliable  # an untrained encoder cannot reconstruct noise
    assert any("pixel MSE" in reason for reason in result.quality.reasons)
    store = LocalStore(tmp_path)
    assert json.loads(store.get(result.outputs["manifest"]))["quality"]["unreliable"] is True
    assert "UNRELIABLE" in store.get(result.outputs["report"]).decode()
    assert "UNRELIABLE" in result.summary_lines()[-1]


def test_same_input_and_settings_give_identical_numbers(tiny: LocalBackend, spec: JobSpec,
                                                        tmp_path: Path) -> None:
    first = Explainer(tiny, LocalStore(tmp_path / "a")).explain(IMAGE, spec)
    second = Explainer(tiny, LocalStore(tmp_path / "b")).explain(IMAGE, spec)
    assert first.job_id != second.job_id
    assert numbers(first) == numbers(second)


def test_stages_run_apart_pass_only_keys(tiny_repository: Path, tiny: LocalBackend,
                                         spec: JobSpec, tmp_path: Path) -> None:
    """As on separate workers: a fresh backend and store object per stage, and only the
    keys, through JSON, between them."""
    inline = Explainer(tiny, LocalStore(tmp_path / "inline")).explain(IMAGE, spec)

    store = LocalStore(tmp_path / "apart")
    keys = JobKeys(input=store_input(store, "job1",
                                     load_input(IMAGE, tiny.model_set.preprocessing)))
    for stage in STAGES:
        context = StageContext("job1", JobSpec.from_dict(json.loads(json.dumps(
            spec.to_dict()))), LocalStore(tmp_path / "apart"),
            lambda: LocalBackend(tiny_repository, "tiny"))
        keys = JobKeys.from_dict(json.loads(json.dumps(
            run_stage(stage, context, keys).to_dict())))
    apart = ExplanationResult.from_json(store.get(keys.manifest))
    assert numbers(apart) == numbers(inline)


def test_stages_without_models_never_ask_for_a_backend(tiny: LocalBackend, spec: JobSpec,
                                                       tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    keys = JobKeys(input=store_input(store, "job1",
                                     load_input(IMAGE, tiny.model_set.preprocessing)))
    def no_backend() -> LocalBackend:
        raise AssertionError("a stage without models asked for a backend")

    for stage in STAGES:
        context = StageContext("job1", spec, store,
                               (lambda: tiny) if stage.uses_models else no_backend)
        keys = run_stage(stage, context, keys)
    assert store.exists(keys.manifest)


def test_a_stage_whose_record_is_stored_is_not_redone(tiny: LocalBackend, spec: JobSpec,
                                                      tmp_path: Path) -> None:
    store = RecordingStore(LocalStore(tmp_path))
    result = Explainer(tiny, store).explain(IMAGE, spec, job_id="again")
    keys = JobKeys(input="jobs/again/input.json")
    store.puts.clear()
    for stage in STAGES[:3]:
        keys = run_stage(stage, StageContext("again", spec, store, lambda: tiny), keys)
    assert store.puts == []
    assert keys.direction == result.direction.key


def test_known_answer_on_a_linear_backend(tiny: LocalBackend, tmp_path: Path) -> None:
    """Exact reconstruction (reliable), monotone traversal, flip towards healthy."""
    linear = LinearBackend(tiny.model_set, ["healthy", "sick"])
    alpha = linear.true_direction(1)
    w = np.random.default_rng(2).standard_normal(linear.model_set.w_dim)
    w += alpha * (1.0 - w @ alpha)  # clearly sick
    image = from_model_layout(linear.synthesis(w[None].astype(np.float32)), linear.model_set
                        .preprocessing)[0]
    result = Explainer(linear, LocalStore(tmp_path)).explain(
        image, JobSpec.create(linear.model_set, probe=ProbeSettings(samples=600)))
    assert not result.unreliable and result.quality.pixel_mse < 1e-8
    assert result.prediction_input > 0.9
    assert np.all(np.diff(result.probabilities) > 0)
    assert result.flip.found and result.flip.side == "negative"
    assert -3 < result.flip.at_lambda < 0 and result.flip.probability < 0.5
    assert "Reliable" in LocalStore(tmp_path).get(result.outputs["report"]).decode()


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_jp2klossless.dcm"])
def test_dicom_is_explained_and_flagged_out_of_domain(tiny: LocalBackend, spec: JobSpec,
                                                      tmp_path: Path, name: str) -> None:
    path = Path(get_testdata_file(name))
    result = Explainer(tiny, LocalStore(tmp_path)).explain(path, spec)
    assert result.unreliable
    assert result.input.description["format"] == "DICOM"
    assert result.input.description["Modality"] in ("CT", "MR")
    manifest = LocalStore(tmp_path).get(result.outputs["manifest"]).decode()
    assert "Patient" not in manifest and "CompressedSamples" not in manifest


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"image": np.full((16, 16, 1), np.nan, np.float32)}, ImageDecodeError),
    ({"image": b""}, ImageDecodeError),
    ({"job_id": "../escape"}, JobSpecError),
])
def test_bad_requests_write_nothing(tiny: LocalBackend, spec: JobSpec, tmp_path: Path,
                                    kwargs: dict, error: type[Exception]) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(error):
        Explainer(tiny, store).explain(**{"image": IMAGE, "spec": spec, **kwargs})
    assert store.list() == []


def test_a_spec_for_another_model_set_is_refused(tiny: LocalBackend, spec: JobSpec,
                                                 tmp_path: Path) -> None:
    other = JobSpec.from_dict({**spec.to_dict(), "model_set": "knee-oa"})
    with pytest.raises(JobSpecError, match="knee-oa"):
        Explainer(tiny, LocalStore(tmp_path)).explain(IMAGE, other)


def test_a_failed_job_leaves_no_artifact(tiny: LocalBackend, spec: JobSpec,
                                         tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    with pytest.raises(BackendError, match="injected"):
        Explainer(FailingBackend(tiny, fail_on="encoder"), store).explain(IMAGE, spec)
    assert store.list() == []
    with pytest.raises(StoreError, match="injected"):
        Explainer(tiny, RecordingStore(store, fail_on="report.html")).explain(IMAGE, spec)
    assert store.list("jobs/") == []  # the probed direction, complete in itself, stays
    assert len(store.list("directions/")) == 1
