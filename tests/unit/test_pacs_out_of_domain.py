"""Out of domain: a CT or MR slice sent to the knee radiograph set is flagged
``out_of_domain`` with the coded reason (it used to come back with only ``unreliable``
and free text), a knee phantom is not; on the bundled knee-oa set and its recorded domain."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from styleprobe.api import pb
from styleprobe.backends.local import LocalBackend
from styleprobe.config import DEFAULT_MODEL_REPOSITORY
from styleprobe.data.datasets import phantom_set
from styleprobe.explain import engine
from styleprobe.explain.artifacts import get_json
from styleprobe.explain.domain import Domain, domain_reasons, fit_domain
from styleprobe.explain.inputs import load_input
from styleprobe.explain.quality import Quality
from styleprobe.explain.result import ExplanationResult
from styleprobe.modelset import list_model_sets
from styleprobe.orchestrator.messages import explanation_message
from styleprobe.storage.local import LocalStore

KNEE = "knee-oa"
pytestmark = pytest.mark.skipif(KNEE not in list_model_sets(DEFAULT_MODEL_REPOSITORY),
                                reason="the bundled knee-oa set is not exported")


@pytest.fixture(scope="module")
def backend() -> LocalBackend:
    return LocalBackend(DEFAULT_MODEL_REPOSITORY, KNEE)


def encoded_quality(backend: LocalBackend, source: str | bytes | np.ndarray,
                    tmp_path: Path) -> Quality:
    store = LocalStore(tmp_path)
    model_input = load_input(source, backend.model_set.preprocessing, "input")
    input_key = engine.store_input(store, "job-1", model_input)
    encoding = engine.encode(backend, store, "job-1", input_key, "OA")
    return Quality(**get_json(store, encoding)["quality"])


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_a_ct_or_mr_slice_is_out_of_the_knee_domain(backend: LocalBackend, tmp_path: Path,
                                                    name: str) -> None:
    quality = encoded_quality(backend, get_testdata_file(name), tmp_path)
    assert quality.out_of_domain and quality.unreliable
    assert quality.reason_codes[:2] == ["OUT_OF_DOMAIN", "OUT_OF_DOMAIN"]
    assert len(quality.reason_codes) == len(quality.reasons)
    assert "modality" in quality.reasons[0] and "statistic" in quality.reasons[1]


def test_the_api_carries_the_coded_reasons(backend: LocalBackend, tmp_path: Path) -> None:
    quality = encoded_quality(backend, get_testdata_file("CT_small.dcm"), tmp_path)
    result = ExplanationResult.from_dict({
        "job_id": "j", "model_set": KNEE, "target": "OA", "class_names": ["healthy", "OA"],
        "threshold": 0.5, "input": {"sha256": "", "description": {}}, "models": {},
        "direction": {"key": "", "auc": 0.9, "accuracy": 0.8, "auc_unconstrained": 0.9,
                      "samples": 10, "positive_share": 0.5, "latent_std": 1.0, "probe": {}},
        "lambdas": [0.0], "probabilities": [0.5], "prediction_input": 0.5,
        "prediction_reconstruction": 0.5,
        "flip": {"found": False, "side": "positive", "limit": 4.0},
        "quality": quality.__dict__})
    message = explanation_message(result, lambda key: key).quality
    assert message.out_of_domain
    assert message.reason_codes[0] == pb.RELIABILITY_REASON_OUT_OF_DOMAIN
    assert len(message.reason_codes) == len(message.reasons)


def test_knee_phantoms_are_in_the_domain(backend: LocalBackend, tmp_path: Path) -> None:
    phantoms = phantom_set("knee", seed=11, size=64)
    image = phantoms.sample(123_456).image
    assert not encoded_quality(backend, image, tmp_path).out_of_domain
    domain = backend.model_set.domain
    for index in range(50):
        assert domain_reasons(domain, phantoms.sample(index).image, {"Modality": "DX"}) == []


def test_a_set_without_a_recorded_domain_checks_nothing() -> None:
    assert domain_reasons({}, np.zeros((8, 8, 1)), {"Modality": "CT"}) == []
    images = [np.full((8, 8, 1), value) for value in np.linspace(0.4, 0.6, 30)]
    domain = Domain.from_dict(fit_domain(images, [], []).to_dict())
    assert domain_reasons(domain.to_dict(), images[3], {"Modality": "CT"}) == []
