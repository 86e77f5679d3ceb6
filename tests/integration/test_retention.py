"""Retention on real servers: the reaper's rounds over the S3 store (SeaweedFS, signed
requests) and the local store, with job records in a fresh ``redis-server``; the bucket's
lifecycle rules; the store listings with times and the streamed reads they rest on.

Age is made testable by handing the round its "now" (the retention period later), not by
waiting: objects written before a moment are old, those written after it are new.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

import required
from styleprobe.config import Settings
from styleprobe.explain.spec import JobSpec
from styleprobe.jobs import (
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
from styleprobe.reaper import (
    DAY_S,
    LIFECYCLE_MARGIN_DAYS,
    ROUND_KEY,
    Reaper,
    reap_periodically,
    remove_job_objects,
    set_lifecycle,
)
from styleprobe.storage import ArtifactStore, ObjectNotFound, open_store
from styleprobe.storage.local import LocalStore
from styleprobe.storage.s3 import S3Store
from styleprobe.testing.redis import redis_server
from styleprobe.testing.s3 import S3_ACCESS_KEY, s3_server

SECRET = "retention-secret"
RETENTION_DAYS = 7
GRACE_S = 600.0
REQUEST = JobRequest(JobSpec(model_set="tiny", target="sick"))


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    required.program("weed")
    server, endpoint = s3_server(tmp_path_factory.mktemp("s3"), SECRET)
    server.start(timeout_s=90)
    yield endpoint
    server.stop()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    required.program("redis-server")
    server, url = redis_server(tmp_path_factory.mktemp("redis"))
    server.start()
    yield url
    server.stop()


@pytest.fixture
def jobs(redis_url: str) -> Iterator[JobStore]:
    store = JobStore(redis_url, ttl_s=3600)
    store.redis.flushdb()
    yield store
    store.close()


def s3_store(endpoint: str, bucket: str) -> S3Store:
    store = open_store(Settings.from_env({
        "STYLEPROBE_STORE": "s3", "STYLEPROBE_S3_ENDPOINT": endpoint,
        "STYLEPROBE_S3_ACCESS_KEY": S3_ACCESS_KEY, "STYLEPROBE_S3_SECRET_KEY": SECRET,
        "STYLEPROBE_S3_BUCKET": bucket}))
    assert isinstance(store, S3Store)
    return store


@pytest.fixture(params=["s3", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """A fresh bucket on the S3 server, or a fresh local folder."""
    if request.param == "local":
        return LocalStore(tmp_path / "artifacts")
    bucket = f"retention-{time.time_ns()}"
    return s3_store(request.getfixturevalue("s3_endpoint"), bucket)


def job(jobs: JobStore, state: str, kind: str = "explain") -> str:
    """A job record in ``state``; its id."""
    job_id = new_job_id()
    jobs.create(job_id, kind, REQUEST)
    if state != QUEUED:
        jobs.transition(job_id, [QUEUED], state=RUNNING)
    if state not in (QUEUED, RUNNING):
        assert jobs.transition(job_id, [RUNNING], state=state)
    return job_id


def job_folder(store: ArtifactStore, folder_id: str, manifest: bool) -> list[str]:
    keys = [f"jobs/{folder_id}/input.npy", f"jobs/{folder_id}/frames/frame_000.png"]
    if manifest:
        keys.append(f"jobs/{folder_id}/manifest.json")
    for key in keys:
        store.put(key, b"x" * 10)
    return keys


def record_exists(jobs: JobStore, job_id: str) -> bool:
    try:
        jobs.get(job_id)
    except JobNotFoundError:
        return False
    return True


def removed_count(reason: str) -> float:
    return REGISTRY.get_sample_value("styleprobe_reaper_objects_removed_total",
                                     {"reason": reason}) or 0.0


def after_the_newest(store: ArtifactStore) -> float:
    """A moment after every object written so far (S3 keeps whole seconds), once the
    clock has passed it: objects written from now on are newer."""
    newest = max(info.modified for info in store.list_info())
    moment = math.floor(newest) + 1.0
    while time.time() < moment + 0.05:
        time.sleep(0.05)
    return moment


# --- the store listings with times, and streamed reads -------------------------------------

def test_listings_carry_sizes_and_times_and_reads_stream(store: ArtifactStore) -> None:
    before = time.time()
    store.put("jobs/a/report.html", b"<html>" + b"x" * 2500, "text/html")
    store.put("inputs/b.png", b"", "image/png")
    infos = store.list_info()
    assert [info.key for info in infos] == ["inputs/b.png", "jobs/a/report.html"]
    assert [info.size for info in infos] == [0, 2506]
    for info in infos:  # S3 keeps whole seconds
        assert before - 1.0 <= info.modified <= time.time() + 1.0
    assert store.list_info("jobs/") == infos[1:]
    assert store.stat("jobs/a/report.html") == infos[1]
    chunks = list(store.read_chunks("jobs/a/report.html", 1000))
    assert [len(c) for c in chunks] == [1000, 1000, 506]
    assert b"".join(chunks) == store.get("jobs/a/report.html")
    assert list(store.read_chunks("inputs/b.png")) == []
    with pytest.raises(ObjectNotFound):
        store.stat("jobs/a/missing.png")
    with pytest.raises(ObjectNotFound):
        next(store.read_chunks("jobs/a/missing.png"))


def test_many_objects_are_deleted_at_once_missing_ones_no_error(store: ArtifactStore) -> None:
    keys = [f"jobs/j/frames/frame_{i:03d}.png" for i in range(5)]
    for key in keys:
        store.put(key, b"x")
    store.put("jobs/j/manifest.json", b"{}")
    store.delete_many([*keys, "jobs/j/never-written.png"])
    assert store.list() == ["jobs/j/manifest.json"]
    store.delete_many([])


# --- retention ---------------------------------------------------------------------------------

def test_objects_older_than_the_period_are_removed_newer_ones_kept(
        store: ArtifactStore, jobs: JobStore) -> None:
    old_job, old_cohort = job(jobs, SUCCEEDED), job(jobs, SUCCEEDED, "cohort")
    running_old = job(jobs, RUNNING)
    old = ["inputs/study-1/old.dcm", *job_folder(store, old_job, manifest=True),
           f"cohorts/{old_cohort}/summary.csv", *job_folder(store, f"{old_cohort}-" + "a" * 16,
                                                            manifest=True)]
    store.put("inputs/study-1/old.dcm", b"old")
    store.put(f"cohorts/{old_cohort}/summary.csv", b"a,b\n")
    store.put("directions/d1.json", b"{}")  # no patient data: kept
    oldest = min(info.modified for info in store.list_info())
    moment = after_the_newest(store)
    new_job = job(jobs, SUCCEEDED)
    new = ["inputs/study-1/new.dcm", *job_folder(store, new_job, manifest=True)]
    store.put("inputs/study-1/new.dcm", b"new")

    reaper = Reaper(store, jobs, RETENTION_DAYS, GRACE_S)
    assert reaper.run_once(now=oldest + RETENTION_DAYS * DAY_S).expired == 0  # not yet
    counted = removed_count("expired")
    report = reaper.run_once(now=moment + RETENTION_DAYS * DAY_S)
    assert removed_count("expired") == counted + report.expired  # for the dashboards
    assert sorted(store.list()) == sorted(["directions/d1.json", *new])
    assert report.expired == len(old) and report.partial == 0
    # the ended jobs' records went with their objects; a running job's record stays
    assert report.records == 2
    assert not record_exists(jobs, old_job) and not record_exists(jobs, old_cohort)
    assert record_exists(jobs, new_job) and record_exists(jobs, running_old)


def test_a_retention_of_zero_keeps_everything(store: ArtifactStore, jobs: JobStore) -> None:
    keys = job_folder(store, job(jobs, SUCCEEDED), manifest=True)
    store.put("inputs/x.png", b"x")
    report = Reaper(store, jobs, 0, GRACE_S).run_once(now=time.time() + 3650 * DAY_S)
    assert report.expired == 0 and sorted(store.list()) == sorted([*keys, "inputs/x.png"])


def test_partial_job_folders_are_removed_once_nothing_can_write_them(
        store: ArtifactStore, jobs: JobStore) -> None:
    failed, cancelled, no_record = job(jobs, FAILED), job(jobs, CANCELLED), new_job_id()
    running, queued, succeeded = job(jobs, RUNNING), job(jobs, QUEUED), job(jobs, SUCCEEDED)
    live_cohort, ended_cohort = job(jobs, RUNNING, "cohort"), job(jobs, CANCELLED, "cohort")
    partial = [*job_folder(store, failed, manifest=False),
               *job_folder(store, cancelled, manifest=False),
               *job_folder(store, no_record, manifest=False),
               *job_folder(store, f"{ended_cohort}-" + "b" * 16, manifest=False)]
    kept = [*job_folder(store, running, manifest=False),
            *job_folder(store, queued, manifest=False),
            *job_folder(store, succeeded, manifest=True),
            *job_folder(store, f"{live_cohort}-" + "c" * 16, manifest=False),
            *job_folder(store, f"{ended_cohort}-" + "d" * 16, manifest=True)]
    reaper = Reaper(store, jobs, RETENTION_DAYS, GRACE_S)
    assert reaper.run_once().partial == 0  # a stage could still be writing them
    report = reaper.run_once(now=time.time() + GRACE_S + 5)
    assert report.partial == len(partial) and report.expired == 0
    assert sorted(store.list()) == sorted(kept)
    assert record_exists(jobs, failed)  # a failed job's record says why; it stays


def test_rounds_run_once_per_interval_across_replicas(store: ArtifactStore,
                                                      jobs: JobStore) -> None:
    first = Reaper(store, jobs, RETENTION_DAYS, GRACE_S)
    second = Reaper(store, jobs, RETENTION_DAYS, GRACE_S)
    assert first.run_round(interval_s=30) is not None
    assert second.run_round(interval_s=30) is None  # the other replica had this interval


def rounds_counted(outcome: str) -> float:
    return REGISTRY.get_sample_value("styleprobe_reaper_rounds_total",
                                     {"outcome": outcome}) or 0.0


def test_periodic_rounds_go_on_after_failed_ones_and_are_counted(jobs: JobStore,
                                                                 tmp_path: Path) -> None:
    async def run_for(reaper: Reaper, seconds: float) -> None:
        task = asyncio.create_task(reap_periodically(reaper, interval_s=0.2))
        await asyncio.sleep(seconds)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    failed, ok = rounds_counted("failed"), rounds_counted("ok")
    down = S3Store("127.0.0.1:9", S3_ACCESS_KEY, SECRET, "nobody", check=False)
    failing = Reaper(down, jobs, RETENTION_DAYS, GRACE_S)
    failing.lifecycle_done = True  # each round fails on its listing alone (about 1 s)
    asyncio.run(run_for(failing, 6.0))
    assert rounds_counted("failed") >= failed + 2  # S3 unreachable, round after round
    jobs.redis.delete(ROUND_KEY)
    asyncio.run(run_for(Reaper(LocalStore(tmp_path), jobs, RETENTION_DAYS, GRACE_S), 0.5))
    assert rounds_counted("ok") == ok + 1  # the next rounds wait for the round key's expiry


def test_one_jobs_objects_are_removed_together(store: ArtifactStore, jobs: JobStore) -> None:
    cohort, other = new_job_id(), new_job_id()
    mine = [f"cohorts/{cohort}/cohort.json", f"cohorts/{cohort}/inputs/img.png",
            *job_folder(store, f"{cohort}-" + "e" * 16, manifest=True),
            *job_folder(store, cohort, manifest=False)]
    for key in mine[:2]:
        store.put(key, b"{}")
    others = [*job_folder(store, other, manifest=True),
              *job_folder(store, f"{other}-" + "e" * 16, manifest=True),
              f"jobs/{cohort}-not-an-image/input.npy"]
    store.put(others[-1], b"x")
    assert remove_job_objects(store, cohort) == len(mine)
    assert sorted(store.list()) == sorted(others)
    assert remove_job_objects(store, cohort) == 0


# --- lifecycle rules ---------------------------------------------------------------------------

def test_lifecycle_rules_expire_the_retained_prefixes_and_keep_other_rules(
        s3_endpoint: str) -> None:
    from minio.commonconfig import ENABLED, Filter
    from minio.lifecycleconfig import Expiration, LifecycleConfig, Rule

    store = s3_store(s3_endpoint, "lifecycle")
    foreign = Rule(ENABLED, rule_filter=Filter(prefix="exports/"), rule_id="hospital-exports",
                   expiration=Expiration(days=90))
    store.client.set_bucket_lifecycle(store.bucket, LifecycleConfig([foreign]))
    assert set_lifecycle(store, RETENTION_DAYS)
    rules = {rule.rule_id: rule for rule in store.client.get_bucket_lifecycle(
        store.bucket).rules}
    assert sorted(rules) == ["hospital-exports", "styleprobe-cohorts", "styleprobe-inputs",
                             "styleprobe-jobs"]
    for prefix in ("inputs", "jobs", "cohorts"):
        rule = rules[f"styleprobe-{prefix}"]
        assert rule.rule_filter.prefix == f"{prefix}/"
        assert rule.expiration.days == RETENTION_DAYS + LIFECYCLE_MARGIN_DAYS
    assert set_lifecycle(store, 0)  # retention off: our rules go, the hospital's stay
    config = store.client.get_bucket_lifecycle(store.bucket)
    assert [rule.rule_id for rule in config.rules] == ["hospital-exports"]


def test_lifecycle_is_best_effort(tmp_path: Path) -> None:
    assert set_lifecycle(LocalStore(tmp_path), RETENTION_DAYS)  # nothing to set
    unreachable = S3Store("127.0.0.1:9", S3_ACCESS_KEY, SECRET, "nobody", check=False)
    assert not set_lifecycle(unreachable, RETENTION_DAYS)  # tried again next round
