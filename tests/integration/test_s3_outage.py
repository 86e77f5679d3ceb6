"""S3 restarted under a worker's store (real SeaweedFS, real Redis): a call made while it is
down waits and succeeds once it is back, the job it works for reads PAUSED with the reason
meanwhile and RUNNING after. S3 down as a store sees it (nothing listening at its
endpoint): a budget that runs out is a StoreError; objects a failed job left while S3 was
down are removed once it is back (issue 17)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import required
from styleprobe.config import Settings
from styleprobe.explain.spec import JobSpec
from styleprobe.jobs import FAILED, PAUSED, RUNNING, JobRequest, JobStore, new_job_id
from styleprobe.storage import StoreError, open_store
from styleprobe.storage.s3 import S3Store
from styleprobe.testing.ports import free_port
from styleprobe.testing.process import ServerProcess
from styleprobe.testing.redis import redis_server
from styleprobe.testing.s3 import S3_ACCESS_KEY, s3_server
from styleprobe.worker import cleanup
from styleprobe.worker.pausing import JobPauser

SECRET = "outage-secret"
OUTAGE_S = 4.0
REQUEST = JobRequest(JobSpec(model_set="tiny", target="sick"))


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str,
                                                                         str]]:
    required.program("weed")
    required.program("redis-server")
    redis, redis_url = redis_server(tmp_path_factory.mktemp("redis"))
    redis.start()
    s3, endpoint = s3_server(tmp_path_factory.mktemp("s3"), SECRET)
    s3.start(timeout_s=90)
    yield s3, endpoint, redis_url
    s3.stop()
    redis.stop()


def s3_store(endpoint: str) -> S3Store:
    store = open_store(Settings.from_env({
        "STYLEPROBE_STORE": "s3", "STYLEPROBE_S3_ENDPOINT": endpoint,
        "STYLEPROBE_S3_ACCESS_KEY": S3_ACCESS_KEY, "STYLEPROBE_S3_SECRET_KEY": SECRET,
        "STYLEPROBE_S3_BUCKET": "outage"}))
    assert isinstance(store, S3Store)
    return store


def unreachable_store() -> S3Store:
    """A store whose S3 is down: nothing listens at its endpoint (connection refused, as
    for a stopped server), without a restart of the real one."""
    return S3Store(f"127.0.0.1:{free_port()}", S3_ACCESS_KEY, SECRET, "outage", check=False)


def running_job(jobs: JobStore) -> str:
    job_id = new_job_id()
    jobs.create(job_id, "explain", REQUEST)
    assert jobs.transition(job_id, ["queued"], state=RUNNING, stage="encode")
    return job_id


def outage(server: ServerProcess, seconds: float) -> None:
    server.stop()
    time.sleep(seconds)
    server.start(timeout_s=90)


def test_a_call_during_an_outage_waits_and_the_job_reads_paused(
        servers: tuple[ServerProcess, str, str]) -> None:
    server, endpoint, redis_url = servers
    jobs = JobStore(redis_url, ttl_s=600)
    job_id = running_job(jobs)
    pauser = JobPauser(lambda: jobs)
    store = s3_store(endpoint).wait_out_outages(120.0, pauser)
    store.put("jobs/a/before.json", b"{}")
    outcome: dict[str, Any] = {}

    def put_during_the_outage() -> None:
        with pauser.working_on(job_id):
            started = time.monotonic()
            try:
                store.put("jobs/a/during.json", b'{"x": 1}')
            except StoreError as exc:  # reported below
                outcome["error"] = exc
            outcome["waited_s"] = time.monotonic() - started

    server.stop()
    caller = threading.Thread(target=put_during_the_outage)
    caller.start()
    deadline = time.monotonic() + 30
    while jobs.get(job_id).state != PAUSED and time.monotonic() < deadline:
        time.sleep(0.1)
    paused = jobs.get(job_id)
    time.sleep(OUTAGE_S)
    server.start(timeout_s=90)
    caller.join(150)
    after = jobs.get(job_id)
    states = [e.state for e in jobs.events(job_id, "0-0")]
    print(f"put waited {outcome.get('waited_s', float('nan')):.1f} s across a "
          f"{OUTAGE_S:g} s outage + restart")
    assert "error" not in outcome, outcome
    assert store.get("jobs/a/during.json") == b'{"x": 1}'
    assert paused.state == PAUSED
    assert paused.pause_reason.startswith("S3 unreachable since ")
    assert after.state == RUNNING and after.pause_reason == ""
    assert states == ["queued", "running", "paused", "running"]
    jobs.close()


def test_a_spent_budget_is_a_store_error_and_leaves_the_job_paused(
        servers: tuple[ServerProcess, str, str]) -> None:
    _, _, redis_url = servers
    jobs = JobStore(redis_url, ttl_s=600)
    job_id = running_job(jobs)
    pauser = JobPauser(lambda: jobs)
    store = unreachable_store().wait_out_outages(6.0, pauser)
    started = time.monotonic()
    with pauser.working_on(job_id), pytest.raises(StoreError, match="S3 get"):
        store.get("jobs/a/before.json")
    waited = time.monotonic() - started
    assert waited >= 6.0
    assert jobs.get(job_id).state == PAUSED  # the task's retry, or its failure, decides
    jobs.close()


def test_a_failed_jobs_objects_are_removed_once_s3_is_back(
        servers: tuple[ServerProcess, str, str]) -> None:
    _, endpoint, redis_url = servers
    jobs = JobStore(redis_url, ttl_s=600)
    store = s3_store(endpoint)  # as the orchestrator's and the liveness loop's: no wait
    explain_id, cohort_id = running_job(jobs), new_job_id()
    jobs.create(cohort_id, "cohort", REQUEST, total=2)
    store.put(f"jobs/{explain_id}/input.npy", b"x")
    finished, partial = f"jobs/{cohort_id}-aaaa/", f"jobs/{cohort_id}-bbbb/"
    for key in (f"{finished}input.npy", f"{finished}manifest.json", f"{partial}input.npy",
                f"{partial}encode.json"):
        store.put(key, b"x")
    for job_id in (explain_id, cohort_id):
        assert jobs.transition(job_id, ["queued", "running"], state=FAILED, error="S3 down")
    down = unreachable_store()
    assert cleanup.discard(down, jobs, "explain", explain_id) == 0
    assert cleanup.discard(down, jobs, "cohort", cohort_id) == 0
    assert cleanup.sweep_pending(down, jobs) == 0  # still down: nothing lost
    assert jobs.redis.scard(cleanup.PENDING) == 2
    assert cleanup.sweep_pending(store, jobs) == 3  # S3 is back
    assert jobs.redis.scard(cleanup.PENDING) == 0
    assert store.list(f"jobs/{explain_id}/") == []
    assert store.list(f"jobs/{cohort_id}-") == [f"{finished}input.npy",
                                                 f"{finished}manifest.json"]
    jobs.close()


def test_the_orchestrators_store_does_not_wait() -> None:
    store = unreachable_store()
    started = time.monotonic()
    with pytest.raises(StoreError):
        store.get("jobs/a/before.json")
    assert time.monotonic() - started < 30  # urllib3's own few retries only
