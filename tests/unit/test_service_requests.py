"""Checking API requests, tokens and settings of the service, without servers."""

from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np
import pytest
from PIL import Image

from styleprobe.api import pb
from styleprobe.config import Settings
from styleprobe.explain.spec import LambdaGrid, SearchSettings
from styleprobe.orchestrator.interceptors import AuthInterceptor, parse_tokens
from styleprobe.orchestrator.messages import numbers
from styleprobe.orchestrator.requests import RequestError, check_explain
from styleprobe.storage.local import LocalStore
from styleprobe.worker.app import make_app


def png(size: int = 20) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(size * size, dtype=np.uint8).reshape(size, size)).save(
        buffer, format="PNG")
    return buffer.getvalue()


def refused(request: pb.ExplainRequest, repository: Path, store: LocalStore) -> RequestError:
    with pytest.raises(RequestError) as error:
        check_explain(request, repository, store, default_samples=400)
    return error.value


def test_a_good_request_is_filled_with_defaults(tiny_repository: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    job = check_explain(pb.ExplainRequest(image_bytes=png(), model_set="tiny"),
                        tiny_repository, store, default_samples=400)
    spec = job.spec
    assert (spec.target, spec.lambdas, spec.probe.samples) == ("sick", LambdaGrid(), 400)
    assert spec.search == SearchSettings()
    assert job.image.image.shape == (16, 16, 1)
    assert store.list() == []  # checking stores nothing


@pytest.mark.parametrize(("fields", "code", "words"), [
    ({"image_bytes": b"not an image at all"}, "INVALID_ARGUMENT", "cannot be used"),
    ({"image_bytes": png(), "model_set": ""}, "INVALID_ARGUMENT", "model_set is required"),
    ({"image_bytes": png(), "model_set": "../tiny"}, "NOT_FOUND", "unknown model set"),
    ({"image_bytes": png(), "target": "OA"}, "INVALID_ARGUMENT", "healthy, sick"),
    ({"image_bytes": png(), "lambdas": "-3:3"}, "INVALID_ARGUMENT", "start:stop:steps"),
    ({"image_bytes": png(), "lambdas": "-3:3:999"}, "INVALID_ARGUMENT", "steps must lie"),
    ({"image_bytes": png(), "options": pb.ExplainOptions(
        probe=pb.ProbeOptions(samples=10))}, "INVALID_ARGUMENT", "20..100000"),
    ({"image_bytes": png(), "options": pb.ExplainOptions(
        probe=pb.ProbeOptions(regularization=float("nan")))}, "INVALID_ARGUMENT",
     "regularization"),
    ({"image_bytes": png(), "options": pb.ExplainOptions(
        probe=pb.ProbeOptions(truncation_psi=2))}, "INVALID_ARGUMENT", "truncation psi"),
    ({"image_bytes": png(), "options": pb.ExplainOptions(search_points=1)},
     "INVALID_ARGUMENT", "search points"),
    ({"image_key": "a/../b"}, "INVALID_ARGUMENT", "invalid object key"),
    ({"image_key": "inputs/none.png"}, "NOT_FOUND", "no object"),
])
def test_bad_requests_get_a_status_and_a_reason(tiny_repository: Path, tmp_path: Path,
                                                fields: dict, code: str, words: str) -> None:
    request = pb.ExplainRequest(**{"model_set": "tiny", **fields})
    error = refused(request, tiny_repository, LocalStore(tmp_path))
    assert error.code == getattr(grpc.StatusCode, code)
    assert words in str(error)


def test_an_image_can_be_named_by_key(tiny_repository: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put("inputs/knee.png", png(), "image/png")
    job = check_explain(pb.ExplainRequest(image_key="inputs/knee.png", model_set="tiny"),
                        tiny_repository, store, default_samples=400)
    assert job.image.image.shape == (16, 16, 1)


def test_tokens() -> None:
    assert parse_tokens(" a, b\nc\n") == ["a", "b", "c"]
    auth = AuthInterceptor(["s3cret", "other"])
    assert auth.allows("Bearer s3cret") and auth.allows("bearer other")
    for header in ("", "Bearer", "Bearer wrong", "Basic s3cret", "s3cret"):
        assert not auth.allows(header)
    with pytest.raises(ValueError, match="no API tokens"):
        AuthInterceptor([])


def test_settings_read_secrets_from_files(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("t1,t2\n")
    settings = Settings.from_env({"STYLEPROBE_API_TOKENS_FILE": str(tmp_path / "tokens"),
                                  "STYLEPROBE_S3_SECURE": "true"})
    assert settings.api_tokens == "t1,t2" and settings.s3_secure is True
    assert Settings.from_env({"STYLEPROBE_API_TOKENS": "env",
                              "STYLEPROBE_API_TOKENS_FILE": "/nonexistent"}).api_tokens == "env"


def test_worker_time_limits_must_fit_the_visibility_timeout() -> None:
    app = make_app(Settings())
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.broker_transport_options["visibility_timeout"] > app.conf.task_time_limit
    with pytest.raises(ValueError, match="VISIBILITY_TIMEOUT"):
        make_app(Settings(task_time_limit_s=1000, visibility_timeout_s=900))


def test_model_set_metrics_are_flattened() -> None:
    assert numbers({"classifier": {"auc": 0.9, "name": "x", "nan": float("nan")},
                    "ok": True, "n": 3}) == {"classifier.auc": 0.9, "n": 3.0}
