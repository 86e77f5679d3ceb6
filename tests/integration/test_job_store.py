"""Job records on a real, fresh ``redis-server``: transitions, events, expiry."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import required
from styleprobe.explain.spec import JobSpec
from styleprobe.jobs import (
    ACTIVE,
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    JobNotFoundError,
    JobRequest,
    JobStore,
    new_job_id,
)
from styleprobe.testing.redis import redis_server

REQUEST = JobRequest(JobSpec(model_set="tiny", target="sick"))


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    required.program("redis-server")
    server, url = redis_server(tmp_path_factory.mktemp("redis"))
    server.start()
    yield url
    server.stop()


@pytest.fixture
def jobs(redis_url: str) -> Iterator[JobStore]:
    store = JobStore(redis_url, ttl_s=60)
    yield store
    store.close()


def test_a_job_runs_through_its_stages_with_events(jobs: JobStore) -> None:
    job_id = new_job_id()
    request = JobRequest(JobSpec(model_set="tiny", target="sick"), input_key="jobs/x/in.json")
    created = jobs.create(job_id, "explain", request)
    assert created.request == request
    assert created.state == QUEUED and created.counts == {"total": 1, "done": 0, "failed": 0}
    start = jobs.last_event_id(job_id)
    assert jobs.transition(job_id, ACTIVE, state=RUNNING, stage="encode", progress=0.1,
                           worker="w1@host", message="stage encode started")
    assert jobs.transition(job_id, [RUNNING], progress=0.2, keys={"encoding": "jobs/x/e.json"},
                           stage_seconds={"encode": 0.5})
    assert jobs.transition(job_id, [RUNNING], state=SUCCEEDED, progress=1.0,
                           keys={"manifest": "jobs/x/manifest.json"}, counts={"done": 1},
                           message="job succeeded")
    record = jobs.get(job_id)
    assert record.ended and record.worker == "w1@host"
    assert record.keys == {"encoding": "jobs/x/e.json", "manifest": "jobs/x/manifest.json"}
    assert record.stage_seconds == {"encode": 0.5} and record.counts["done"] == 1
    assert record.created_at <= record.started_at <= record.finished_at
    events = jobs.events(job_id, start)
    assert [(e.state, e.stage, e.message) for e in events] == [
        (RUNNING, "encode", "stage encode started"), (RUNNING, "encode", ""),
        (SUCCEEDED, "encode", "job succeeded")]
    assert jobs.events(job_id, events[-1].event_id) == []
    assert 0 < jobs.redis.ttl(f"styleprobe:job:{job_id}") <= 60


def test_an_ended_job_ends_once(jobs: JobStore) -> None:
    job_id = new_job_id()
    jobs.create(job_id, "explain", REQUEST)
    jobs.transition(job_id, ACTIVE, state=RUNNING)
    assert jobs.transition(job_id, ACTIVE, state=CANCELLED)
    # a stage that finishes after the cancel cannot make the job succeed, nor fail it
    assert not jobs.transition(job_id, [RUNNING], state=SUCCEEDED)
    assert not jobs.transition(job_id, ACTIVE, state=FAILED, error="late")
    assert jobs.get(job_id).state == CANCELLED and jobs.get(job_id).error == ""


def test_racing_transitions_apply_exactly_once(jobs: JobStore) -> None:
    job_id = new_job_id()
    jobs.create(job_id, "explain", REQUEST)
    jobs.transition(job_id, ACTIVE, state=RUNNING)
    results: list[bool] = []
    threads = [threading.Thread(target=lambda: results.append(
        jobs.transition(job_id, [RUNNING], state=SUCCEEDED))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


def test_unknown_jobs(jobs: JobStore) -> None:
    with pytest.raises(JobNotFoundError):
        jobs.get("0" * 32)
    with pytest.raises(JobNotFoundError):
        jobs.transition("0" * 32, ACTIVE, state=CANCELLED)
    job_id = new_job_id()
    jobs.create(job_id, "explain", REQUEST)
    jobs.delete(job_id)
    with pytest.raises(JobNotFoundError):
        jobs.get(job_id)


def test_cohort_images_are_counted_once_while_the_cohort_runs(jobs: JobStore) -> None:
    job_id = new_job_id()
    jobs.create(job_id, "cohort", REQUEST, total=4)
    assert not jobs.count_image(job_id, "inputs/a.png", "done", "image a done")  # queued
    jobs.transition(job_id, ACTIVE, state=RUNNING, stage="images")
    assert jobs.count_image(job_id, "inputs/a.png", "done", "image a done")
    assert jobs.count_image(job_id, "inputs/a.png", "done", "again")  # a redelivered chunk
    assert jobs.count_image(job_id, "inputs/b.png", "failed", "image b failed: corrupt")
    record = jobs.get(job_id)
    assert record.counts == {"total": 4, "done": 1, "failed": 1} and record.progress == 0.5
    messages = [e.message for e in jobs.events(job_id, "0-0")]
    assert messages[-2:] == ["image a done", "image b failed: corrupt"]
    with pytest.raises(ValueError, match="outcome"):
        jobs.count_image(job_id, "inputs/c.png", "skipped", "")
    jobs.transition(job_id, ACTIVE, state=CANCELLED)
    assert not jobs.count_image(job_id, "inputs/c.png", "done", "image c done")
    assert jobs.get(job_id).counts["done"] == 1
    with pytest.raises(JobNotFoundError):
        jobs.count_image("0" * 32, "inputs/a.png", "done", "")
