"""ListJobs on a real, fresh ``redis-server``: newest first, paged with an opaque token,
filtered by idempotency key, state, kind and creation time; expired jobs leave the index."""

from __future__ import annotations

import time
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

import required
from styleprobe.api import pb
from styleprobe.explain.spec import JobSpec
from styleprobe.jobs import ACTIVE, INDEX, PREFIX, SUCCEEDED, JobRequest, JobStore, new_job_id
from styleprobe.orchestrator.idempotency import claim_name
from styleprobe.orchestrator.listing import list_jobs
from styleprobe.orchestrator.requests import RequestError
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
    store.redis.flushdb()
    yield store
    store.close()


def make(jobs: JobStore, count: int, kind: str = "explain") -> list[str]:
    """``count`` jobs, oldest first."""
    ids = []
    for _ in range(count):
        ids.append(new_job_id())
        jobs.create(ids[-1], kind, REQUEST)
    return ids


def every_page(jobs: JobStore, **fields: object) -> list[list[str]]:
    pages, token = [], ""
    while True:
        answer = list_jobs(jobs, pb.ListJobsRequest(page_token=token, **fields))  # type: ignore[arg-type]
        pages.append([job.job_id for job in answer.jobs])
        token = answer.next_page_token
        if not token:
            return pages


def test_pages_hold_every_job_once_newest_first(jobs: JobStore) -> None:
    ids = make(jobs, 7)
    pages = every_page(jobs, page_size=3)
    assert pages == [ids[::-1][:3], ids[::-1][3:6], ids[::-1][6:]]
    assert every_page(jobs) == [ids[::-1]]  # page_size 0: 100


def test_filters_by_state_kind_key_and_time(jobs: JobStore) -> None:
    old = make(jobs, 2)
    middle = time.time()
    cohorts = make(jobs, 2, kind="cohort")
    newer = make(jobs, 3)
    jobs.transition(newer[0], ACTIVE, state=SUCCEEDED)
    keyed = new_job_id()
    jobs.create(keyed, "explain", REQUEST, idempotency_key="acc-42")
    jobs.redis.set(claim_name("acc-42"), f"{keyed} {time.time()!r}")
    stamp = Timestamp()
    stamp.FromNanoseconds(int(middle * 1e9))
    assert every_page(jobs, kind="cohort") == [cohorts[::-1]]
    assert every_page(jobs, states=[pb.JOB_STATE_SUCCEEDED]) == [[newer[0]]]
    assert every_page(jobs, created_before=stamp, page_size=1) == [[old[1]], [old[0]]]
    after = every_page(jobs, created_after=stamp, states=[pb.JOB_STATE_QUEUED])
    assert after == [[keyed, *newer[:0:-1], *cohorts[::-1]]]
    answer = list_jobs(jobs, pb.ListJobsRequest(idempotency_key="acc-42"))
    assert [(job.job_id, job.idempotency_key) for job in answer.jobs] == [(keyed, "acc-42")]
    assert not list_jobs(jobs, pb.ListJobsRequest(idempotency_key="unknown")).jobs


def test_expired_jobs_leave_the_index(jobs: JobStore) -> None:
    ids = make(jobs, 4)
    jobs.redis.delete(PREFIX + ids[1])  # as its expiry would
    assert every_page(jobs, page_size=2) == [[ids[3], ids[2]], [ids[0]]]
    assert jobs.redis.zscore(INDEX, ids[1]) is None


@pytest.mark.parametrize(("fields", "words"), [
    ({"page_size": 1001}, "page_size"), ({"page_size": -1}, "page_size"),
    ({"kind": "batch"}, "kind"), ({"page_token": "not-a-token"}, "page_token"),
    ({"states": [99]}, "states")])
def test_bad_requests_are_refused(jobs: JobStore, fields: dict[str, object],
                                  words: str) -> None:
    with pytest.raises(RequestError) as refused:
        list_jobs(jobs, pb.ListJobsRequest(**fields))  # type: ignore[arg-type]
    assert refused.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert words in str(refused.value)
