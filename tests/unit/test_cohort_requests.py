"""SubmitCohort requests checked without servers; the cohort fields of a Job message."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from styleprobe.api import pb
from styleprobe.cli import run
from styleprobe.config import Settings
from styleprobe.explain.spec import JobSpec
from styleprobe.jobs import JobRecord, JobRequest
from styleprobe.orchestrator.cohorts import MAX_INLINE_IMAGES, CohortJob, check_cohort
from styleprobe.orchestrator.messages import cohort_message, job_message, seconds_left
from styleprobe.orchestrator.requests import RequestError
from styleprobe.storage.local import LocalStore
from styleprobe.worker.app import COHORT_TASKS, make_app

COHORT_ID = "c0ffee"


def check(request: pb.SubmitCohortRequest, repository: Path, store: LocalStore) -> CohortJob:
    return check_cohort(request, repository, store, default_samples=400, cohort_id=COHORT_ID)


def refused(request: pb.SubmitCohortRequest, repository: Path,
            store: LocalStore) -> RequestError:
    with pytest.raises(RequestError) as error:
        check(request, repository, store)
    return error.value


def test_each_way_of_naming_images(tiny_repository: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for name in ("b.png", "a.dcm", "sub/c.png"):
        store.put(f"inputs/study/{name}", b"whatever: read by the workers")
    store.put("inputs/other.png", b"x")
    by_prefix = check(pb.SubmitCohortRequest(prefix="inputs/study/", model_set="tiny",
                                             options=pb.ExplainOptions(search_rounds=2)),
                      tiny_repository, store)
    assert by_prefix.images == ["inputs/study/a.dcm", "inputs/study/b.png",
                                "inputs/study/sub/c.png"]
    spec = by_prefix.cohort_spec(COHORT_ID)
    assert (spec.job.target, spec.job.probe.samples, spec.job.search.rounds) == ("sick", 400, 2)
    assert spec.threshold == by_prefix.threshold

    keys = ["inputs/z.png", "inputs/missing.png"]  # not looked up: a missing one fails alone
    by_keys = check(pb.SubmitCohortRequest(keys=pb.ObjectKeys(keys=keys), model_set="tiny"),
                    tiny_repository, store)
    assert by_keys.images == keys and by_keys.inline == {}

    inline = check(pb.SubmitCohortRequest(inline=pb.InlineImages(images=[
        pb.InlineImage(data=b"1", filename="x.png"), pb.InlineImage(data=b"2")]),
        model_set="tiny"), tiny_repository, store)
    assert inline.inline == {f"cohorts/{COHORT_ID}/inputs/x.png": b"1",
                             f"cohorts/{COHORT_ID}/inputs/image-0001": b"2"}
    assert inline.images == list(inline.inline)
    assert len(store.list()) == 4  # checking stores nothing


@pytest.mark.parametrize(("fields", "code", "words"), [
    ({}, "INVALID_ARGUMENT", "images are missing"),
    ({"prefix": "inputs/none/"}, "NOT_FOUND", "no objects under prefix 'inputs/none/'"),
    ({"prefix": "directions/"}, "INVALID_ARGUMENT", "service's own objects"),
    ({"keys": pb.ObjectKeys(keys=["a/../b"])}, "INVALID_ARGUMENT", "invalid object key"),
    ({"keys": pb.ObjectKeys(keys=["cohorts/x/inputs/a.png"])}, "INVALID_ARGUMENT",
     "service's own objects"),
    ({"keys": pb.ObjectKeys(keys=["a.png", "b.png", "a.png"])}, "INVALID_ARGUMENT",
     "'a.png' is listed twice"),
    ({"inline": pb.InlineImages()}, "INVALID_ARGUMENT", "inline holds no image"),
    ({"inline": pb.InlineImages(images=[pb.InlineImage(data=b"x", filename=f"{i}.png")
                                        for i in range(MAX_INLINE_IMAGES + 1)])},
     "INVALID_ARGUMENT", "at most 64 images"),
    ({"inline": pb.InlineImages(images=[pb.InlineImage(data=b"\0" * (9 << 20))])},
     "INVALID_ARGUMENT", "8 MiB"),
    ({"inline": pb.InlineImages(images=[pb.InlineImage(data=b"x", filename="d/a.png")])},
     "INVALID_ARGUMENT", "must not contain '/'"),
    ({"inline": pb.InlineImages(images=[pb.InlineImage(data=b"x", filename="a.png"),
                                        pb.InlineImage(data=b"y", filename="a.png")])},
     "INVALID_ARGUMENT", "used twice"),
    ({"prefix": "inputs/", "model_set": "nope"}, "NOT_FOUND", "unknown model set"),
    ({"prefix": "inputs/", "lambdas": "-3:3"}, "INVALID_ARGUMENT", "start:stop:steps"),
])
def test_bad_requests_are_refused(tiny_repository: Path, tmp_path: Path,
                                  fields: dict[str, object], code: str, words: str) -> None:
    store = LocalStore(tmp_path)
    store.put("inputs/a.png", b"x")
    error = refused(pb.SubmitCohortRequest(**{"model_set": "tiny", **fields}),
                    tiny_repository, store)
    assert error.code == getattr(grpc.StatusCode, code)
    assert words in str(error)


def cohort_record(state: str, **counts: int) -> JobRecord:
    request = JobRequest(JobSpec(model_set="tiny", target="sick"),
                         images_key="cohorts/j/images.json", chunk_size=16)
    return JobRecord(job_id="j", kind="cohort", state=state, request=request,
                     started_at=1000.0, stage_seconds={"prepare": 10.0},
                     counts={"total": 10, **counts},
                     keys={"csv": "cohorts/j/summary.csv", "parquet": "cohorts/j/summary.parquet",
                           "report": "cohorts/j/report.html"})


def test_time_left_from_the_rate_since_prepare() -> None:
    # 4 images in the 20 s after a 10 s prepare: 5 s each, 6 left
    assert seconds_left(cohort_record("running", done=3, failed=1), now=1030.0) == 30.0
    assert seconds_left(cohort_record("running"), now=1030.0) == 0.0  # no rate yet
    assert seconds_left(cohort_record("succeeded", done=10), now=1030.0) == 0.0


def test_the_job_message_of_a_cohort() -> None:
    record = cohort_record("succeeded", done=8, failed=2, unreliable=3, flipped=5)
    job = job_message(record, cohort=cohort_message(record, lambda key: f"https://s3/{key}"))
    assert (job.kind, job.counts.pending, job.cohort.unreliable, job.cohort.flipped) == (
        "cohort", 0, 3, 5)
    assert {a.name: a.url for a in job.cohort.artifacts}["csv"] == (
        "https://s3/cohorts/j/summary.csv")
    assert cohort_message(JobRecord(job_id="j", kind="cohort", state="running", request={}),
                          str) is None


@pytest.mark.parametrize(("args", "words"), [
    (["cohort", "submit"], "name the images one way: --prefix, --keys-file or IMAGES"),
    (["cohort", "submit", "a.png", "--prefix", "inputs/"], "(got --prefix, IMAGES)"),
    (["cohort", "submit", "/nonexistent/a.png"], "cannot read /nonexistent/a.png"),
])
def test_cli_submit_bad_input(args: list[str], words: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    assert run(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err, err


def test_cli_submit_reads_a_keys_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# a comment\n\n")
    assert run(["cohort", "submit", "--keys-file", str(keys)]) == 2
    assert "lists no object key" in capsys.readouterr().err


def test_cohort_tasks_are_routed_to_their_queues() -> None:
    routes = make_app(Settings()).conf.task_routes
    assert {name: routes[task]["queue"] for name, (task, _) in COHORT_TASKS.items()} == {
        "prepare": "gpu", "chunk": "gpu", "outputs": "cpu", "summary": "cpu"}
