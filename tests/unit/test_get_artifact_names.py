"""GetArtifact's names: which artifacts a job record offers and how a request names one
(the streaming itself runs against real stores and the running service: see
tests/integration/test_retention.py and tests/e2e/test_get_artifact.py)."""

from __future__ import annotations

import grpc
import pytest

from styleprobe.explain.spec import JobSpec
from styleprobe.jobs import CANCELLED, FAILED, RUNNING, SUCCEEDED, JobRecord, JobRequest
from styleprobe.orchestrator.artifacts import artifact_keys, find_artifact
from styleprobe.orchestrator.requests import RequestError

REQUEST = JobRequest(JobSpec(model_set="tiny", target="sick"))
OUTPUTS = {"strip": "jobs/j1/strip.png", "animation": "jobs/j1/traversal.gif",
           "frame_000": "jobs/j1/frames/frame_000.png", "report": "jobs/j1/report.html"}
SUMMARY = {"csv": "cohorts/c1/summary.csv", "parquet": "cohorts/c1/summary.parquet",
           "report": "cohorts/c1/report.html"}


def explain_job(state: str = SUCCEEDED) -> JobRecord:
    return JobRecord("j1", "explain", state, REQUEST,
                     keys={"input": "jobs/j1/input.json", "outputs": dict(OUTPUTS),
                           "manifest": "jobs/j1/manifest.json"})


def cohort_job(state: str = SUCCEEDED, summary: bool = True) -> JobRecord:
    return JobRecord("c1", "cohort", state, REQUEST,
                     keys={"direction": "directions/d.json", **(SUMMARY if summary else {})})


def status(record: JobRecord, name: str) -> grpc.StatusCode:
    with pytest.raises(RequestError) as caught:
        find_artifact(record, name)
    return caught.value.code


def test_an_explanation_offers_its_outputs_and_its_manifest() -> None:
    assert artifact_keys(explain_job()) == {**OUTPUTS, "manifest": "jobs/j1/manifest.json"}
    assert find_artifact(explain_job(), "strip") == "jobs/j1/strip.png"
    assert find_artifact(explain_job(), "manifest") == "jobs/j1/manifest.json"


def test_an_artifact_can_be_named_by_its_file_in_the_jobs_folder() -> None:
    assert find_artifact(explain_job(), "traversal.gif") == "jobs/j1/traversal.gif"
    assert find_artifact(explain_job(), "frames/frame_000.png") == OUTPUTS["frame_000"]
    assert find_artifact(explain_job(), "manifest.json") == "jobs/j1/manifest.json"
    assert find_artifact(cohort_job(), "summary.parquet") == SUMMARY["parquet"]


def test_a_cohort_offers_its_summary_once_written() -> None:
    assert artifact_keys(cohort_job()) == SUMMARY  # not its direction: not an artifact
    assert artifact_keys(cohort_job(CANCELLED)) == SUMMARY  # the summary of what finished
    assert artifact_keys(cohort_job(RUNNING, summary=False)) == {}


def test_unknown_names_and_jobs_without_artifacts_are_refused() -> None:
    assert status(explain_job(), "frame_999") == grpc.StatusCode.NOT_FOUND
    assert status(explain_job(), "input.json") == grpc.StatusCode.NOT_FOUND  # a record
    assert status(explain_job(), "../c1/summary.csv") == grpc.StatusCode.NOT_FOUND
    assert status(cohort_job(), "direction") == grpc.StatusCode.NOT_FOUND
    assert status(explain_job(), "") == grpc.StatusCode.INVALID_ARGUMENT
    for record in (explain_job(RUNNING), explain_job(FAILED),
                   cohort_job(RUNNING, summary=False)):
        assert status(record, "strip") == grpc.StatusCode.FAILED_PRECONDITION


def test_not_found_lists_what_the_job_has() -> None:
    with pytest.raises(RequestError, match=r"has no artifact 'nope'; it has animation, "
                                           r"frame_000, manifest, report, strip"):
        find_artifact(explain_job(), "nope")
