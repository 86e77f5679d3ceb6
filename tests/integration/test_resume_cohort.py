"""ResumeCohort's logic on a real Redis (job records, the broker) and a local store: a failed
or cancelled cohort is queued again under its id with its finished rows kept; anything
else is refused with the documented status (issue 17)."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import cast

import grpc
import pytest

import required
from styleprobe.cohort.ledger import CohortLedger, CohortSpec
from styleprobe.cohort.rows import failed_row
from styleprobe.config import Settings
from styleprobe.explain.spec import JobSpec
from styleprobe.jobs import CANCELLED, FAILED, QUEUED, RUNNING, JobRequest, JobStore, new_job_id
from styleprobe.orchestrator.cohorts import resume_cohort
from styleprobe.orchestrator.requests import RequestError
from styleprobe.storage.local import LocalStore
from styleprobe.testing.redis import redis_server
from styleprobe.worker.app import make_app

SPEC = JobSpec(model_set="tiny", target="sick")
IMAGES = ["inputs/a.png", "inputs/b.png", "inputs/c.png"]


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    required.program("redis-server")
    server, url = redis_server(tmp_path)
    server.start()
    yield url
    server.stop()


def cohort(jobs: JobStore, store: LocalStore, ended: str) -> str:
    """A cohort of three images, one finished, that ended ``ended``."""
    job_id = new_job_id()
    ledger = CohortLedger(store, job_id)
    ledger.start(CohortSpec(job_id, SPEC, 0.5))
    ledger.record(failed_row(IMAGES[0], f"{job_id}-x", "not an image"))
    jobs.create(job_id, "cohort", JobRequest(SPEC, images_key="k", chunk_size=16), total=3)
    assert jobs.transition(job_id, [QUEUED], state=RUNNING, stage="images")
    assert jobs.count_image(job_id, IMAGES[0], "failed", "image failed")
    assert jobs.transition(job_id, [RUNNING], state=ended, error="S3 down" if ended == FAILED
                           else None, keys={"csv": "cohorts/x/summary.csv"})
    return job_id


def queued_messages(jobs: JobStore) -> list[str]:
    """Every message waiting in a list of the broker (any queue, any priority)."""
    client = jobs.redis
    return [cast(str, message) for key in client.scan_iter()
            if client.type(key) == "list"
            for message in cast(list[str], client.lrange(key, 0, -1))]


@pytest.mark.parametrize("ended", [FAILED, CANCELLED])
def test_a_failed_or_cancelled_cohort_is_queued_again_under_its_id(
        redis_url: str, tmp_path: Path, ended: str) -> None:
    jobs, store = JobStore(redis_url), LocalStore(tmp_path / "store")
    celery = make_app(Settings(redis_url=redis_url))
    job_id = cohort(jobs, store, ended)

    record = resume_cohort(job_id, store, jobs, celery)

    assert (record.job_id, record.state, record.run, record.error) == (job_id, QUEUED, 1, "")
    assert record.finished_at == 0 and "csv" not in record.keys
    assert record.counts == {"total": 3, "done": 0, "failed": 1}  # the finished image kept
    assert [m for m in queued_messages(jobs) if f"{job_id}-prepare-run1" in m]
    events = [e.message for e in jobs.events(job_id, "0-0")]
    assert events[-1] == "cohort resumed: 1 of 3 images finished before are kept"
    assert CohortLedger(store, job_id).is_finished(IMAGES[0])
    # counting goes on from what was counted: the kept image is not counted twice
    assert jobs.transition(job_id, [QUEUED], state=RUNNING)
    assert jobs.count_image(job_id, IMAGES[0], "failed", "again")
    assert jobs.get(job_id).counts["failed"] == 1
    jobs.close()


def test_only_an_ended_unsuccessful_cohort_can_be_resumed(redis_url: str,
                                                          tmp_path: Path) -> None:
    jobs, store = JobStore(redis_url), LocalStore(tmp_path / "store")
    celery = make_app(Settings(redis_url=redis_url))
    running = cohort(jobs, store, FAILED)
    jobs.reopen(running, [FAILED], "resumed")
    explain = new_job_id()
    jobs.create(explain, "explain", JobRequest(SPEC, input_key="jobs/x/input.json"))
    jobs.transition(explain, [QUEUED], state=FAILED, error="no")
    gone = cohort(jobs, store, CANCELLED)
    for key in store.list(f"cohorts/{gone}/"):
        store.delete(key)
    cases = {
        "": (grpc.StatusCode.INVALID_ARGUMENT, "job_id is required"),
        "0" * 32: (grpc.StatusCode.NOT_FOUND, "no job"),
        running: (grpc.StatusCode.FAILED_PRECONDITION, "is queued: only a failed or cancelled"),
        explain: (grpc.StatusCode.FAILED_PRECONDITION, "only a cohort can be resumed"),
        gone: (grpc.StatusCode.FAILED_PRECONDITION, "no record in the store"),
    }
    before = queued_messages(jobs)
    for job_id, (code, words) in cases.items():
        with pytest.raises(RequestError) as refused:
            resume_cohort(job_id, store, jobs, celery)
        assert refused.value.code == code and words in str(refused.value), job_id
    assert queued_messages(jobs) == before  # nothing queued for a refusal
    assert jobs.get(gone).state == CANCELLED
    jobs.close()


def test_two_resumes_at_once_queue_one_run(redis_url: str, tmp_path: Path) -> None:
    jobs, store = JobStore(redis_url), LocalStore(tmp_path / "store")
    celery = make_app(Settings(redis_url=redis_url))
    job_id = cohort(jobs, store, FAILED)

    def resume() -> str:
        try:
            return resume_cohort(job_id, store, jobs, celery).state
        except RequestError as exc:
            return exc.code.name

    with ThreadPoolExecutor(4) as pool:
        outcomes = sorted(pool.map(lambda _: resume(), range(4)))
    assert outcomes.count(QUEUED) == 1
    assert set(outcomes) == {QUEUED, "FAILED_PRECONDITION"}
    assert jobs.get(job_id).run == 1
    jobs.close()
