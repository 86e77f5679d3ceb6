"""Bad input and API edges, without servers: every numeric field of ExplainRequest,
SubmitCohortRequest and GetDirectionRequest refused up front (NaN, infinities, negatives,
out of range) with INVALID_ARGUMENT naming the field; the counts of ended jobs."""

from __future__ import annotations

import io
from pathlib import Path
from unittest import mock

import grpc
import numpy as np
import pytest
from google.protobuf.message import Message
from PIL import Image

from styleprobe.api import pb
from styleprobe.config import Settings
from styleprobe.explain.spec import JobSpec
from styleprobe.jobs import JobRecord, JobRequest
from styleprobe.orchestrator.cohorts import check_cohort
from styleprobe.orchestrator.messages import job_message
from styleprobe.orchestrator.requests import RequestError, check_explain
from styleprobe.orchestrator.service import StyleProbeService
from styleprobe.storage.local import LocalStore

NAN, INF = float("nan"), float("inf")
# ExplainOptions field (dotted path) -> values each refused
BAD_OPTIONS: dict[str, list[float]] = {
    "probe.samples": [-1, 19, 100_001, -2**31, 2**31 - 1],
    "probe.seed": [-1, -2**31],
    "probe.truncation_psi": [NAN, INF, -INF, -0.5, 1.5],
    "probe.test_fraction": [NAN, INF, -INF, -0.1, 0.01, 0.6],
    "probe.regularization": [NAN, INF, -INF, -1.0, 1e-300, 1e300],
    "search_rounds": [-1, 11, -2**31],
    "search_points": [-1, 1, 65],
}
CASES = [(path, value) for path, values in BAD_OPTIONS.items() for value in values]
BAD_LAMBDAS = ["nan:1:5", "-inf:1:5", "0:inf:5", "-1e308:1e308:17", "-1000:1000:17",
               "1:-1:5", "0:1:1", "0:1:258", "0:1", "a:1:5", "0:1:5.5"]


def png(size: int = 20) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((size, size), np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def set_field(message: Message, path: str, value: object) -> None:
    """Set the field at dotted ``path`` below ``message``."""
    *parents, name = path.split(".")
    for parent in parents:
        message = getattr(message, parent)
    setattr(message, name, value)


def refused(check: object) -> RequestError:
    assert callable(check)
    with pytest.raises(RequestError) as error:
        check()
    assert error.value.code == grpc.StatusCode.INVALID_ARGUMENT, error.value
    return error.value


@pytest.mark.parametrize(("path", "value"), CASES)
def test_explain_refuses_each_bad_option_naming_it(tiny_repository: Path, tmp_path: Path,
                                                   path: str, value: float) -> None:
    request = pb.ExplainRequest(image_bytes=png(), model_set="tiny")
    set_field(request.options, path, value)
    store = LocalStore(tmp_path)
    error = refused(lambda: check_explain(request, tiny_repository, store, 400))
    assert str(error).startswith(f"options.{path}: "), error
    assert store.list() == []


@pytest.mark.parametrize(("path", "value"), CASES)
def test_a_cohort_refuses_each_bad_option_naming_it(tiny_repository: Path, tmp_path: Path,
                                                    path: str, value: float) -> None:
    request = pb.SubmitCohortRequest(keys=pb.ObjectKeys(keys=["inputs/a.png"]),
                                     model_set="tiny")
    set_field(request.options, path, value)
    error = refused(lambda: check_cohort(request, tiny_repository, LocalStore(tmp_path),
                                         400, "c0ffee"))
    assert str(error).startswith(f"options.{path}: "), error


@pytest.mark.parametrize(("path", "value"),
                         [case for case in CASES if case[0].startswith("probe.")])
def test_get_direction_refuses_each_bad_probe_option_naming_it(
        tiny_repository: Path, tmp_path: Path, path: str, value: float) -> None:
    service = StyleProbeService(Settings(model_repository=str(tiny_repository)),
                                LocalStore(tmp_path), jobs=mock.Mock())
    request = pb.GetDirectionRequest(model_set="tiny")
    set_field(request, path, value)
    error = refused(lambda: service._get_direction(request))
    assert str(error).startswith(f"{path}: "), error


@pytest.mark.parametrize("lambdas", BAD_LAMBDAS)
def test_bad_lambda_grids_are_refused_naming_the_field(tiny_repository: Path, tmp_path: Path,
                                                       lambdas: str) -> None:
    request = pb.ExplainRequest(image_bytes=png(), model_set="tiny", lambdas=lambdas)
    error = refused(lambda: check_explain(request, tiny_repository, LocalStore(tmp_path), 400))
    assert str(error).startswith("lambdas: "), error


@pytest.mark.parametrize(("state", "recorded", "expected"), [
    ("queued", {}, (1, 0, 0, 1)),
    ("running", {}, (1, 0, 0, 1)),
    ("succeeded", {"done": 1}, (1, 1, 0, 0)),
    ("failed", {}, (1, 0, 1, 0)),
    ("cancelled", {}, (1, 0, 0, 0)),
])
def test_an_ended_explain_job_has_nothing_pending(
        state: str, recorded: dict[str, int], expected: tuple[int, int, int, int]) -> None:
    record = JobRecord(job_id="j", kind="explain", state=state, counts=recorded,
                       request=JobRequest(JobSpec(model_set="tiny", target="sick"), "in"))
    counts = job_message(record).counts
    assert (counts.total, counts.done, counts.failed, counts.pending) == expected
