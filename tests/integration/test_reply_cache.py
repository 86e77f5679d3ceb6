"""A finished job's reply is built once and shared; the watchers of a job share one reader
of its events (a real Redis, the orchestrator's servicer in process)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import redis.asyncio

from styleprobe.api import pb
from styleprobe.backends.local import LocalBackend
from styleprobe.config import Settings
from styleprobe.explain.engine import Explainer
from styleprobe.explain.spec import JobSpec, ProbeSettings
from styleprobe.jobs import (
    ACTIVE,
    CANCELLED,
    RUNNING,
    SUCCEEDED,
    JobRecord,
    JobRequest,
    JobStore,
)
from styleprobe.modelset import load_model_set
from styleprobe.orchestrator.replies import JobFeed, ReplyCache, record_version
from styleprobe.orchestrator.requests import RequestError
from styleprobe.orchestrator.service import StyleProbeService
from styleprobe.storage.local import LocalStore
from styleprobe.testing.redis import redis_server

WATCHERS = 200


class CountingStore(LocalStore):
    """A local store that counts its reads."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.gets = 0

    def get(self, key: str) -> bytes:
        self.gets += 1
        return super().get(key)


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server, url = redis_server(tmp_path)
    server.start()
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def finished(tiny_repository: Path, redis_url: str, tmp_path: Path
             ) -> tuple[StyleProbeService, CountingStore, str]:
    """The servicer, its store, and a job that succeeded with a real manifest."""
    store = CountingStore(tmp_path / "store")
    backend = LocalBackend(tiny_repository, "tiny")
    explainer = Explainer(backend, store)
    spec = explainer.spec(probe=ProbeSettings(samples=200), lambdas="-2:2:5")
    image = np.random.default_rng(0).random((16, 16, 1)).astype(np.float32)
    result = explainer.explain(image, spec, job_id="done-1")
    settings = Settings(redis_url=redis_url, model_repository=str(tiny_repository))
    jobs = JobStore(redis_url)
    jobs.create("done-1", "explain", JobRequest(spec, input_key="jobs/done-1/input.json"))
    jobs.transition("done-1", ACTIVE, state=RUNNING)
    jobs.transition("done-1", ACTIVE, state=SUCCEEDED, keys=result.outputs)
    return StyleProbeService(settings, store, jobs), store, "done-1"


def test_get_job_on_a_finished_job_reads_and_signs_once(
        finished: tuple[StyleProbeService, CountingStore, str]) -> None:
    service, store, job_id = finished
    reads = store.gets
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: service._get_job(job_id), range(100)))
    assert store.gets == reads + 1 and service.replies.builds == 1
    assert all(reply == replies[0] for reply in replies)
    assert replies[0].state == pb.JOB_STATE_SUCCEEDED
    assert "strip" in {artifact.name for artifact in replies[0].explanation.artifacts}

    service.jobs.transition(job_id, [SUCCEEDED], message="a new version, the same record")
    assert service._get_job(job_id) == replies[0] and service.replies.builds == 1
    assert service.replies.lookup(job_id, record_version(service.jobs, job_id)) is not None
    service.jobs.transition(job_id, [SUCCEEDED], error="a changed record")
    assert service._get_job(job_id).error == "a changed record"
    assert service.replies.builds == 2 and store.gets == reads + 2

    async def current() -> pb.Job | None:  # GetJob's first look: on the event loop
        client = redis.asyncio.Redis.from_url(service.settings.redis_url,
                                              decode_responses=True)
        try:
            return await service.replies.current(client, job_id)
        finally:
            await client.aclose()

    reply = asyncio.run(current())
    assert reply is not None and reply.error == "a changed record"
    service.jobs.transition(job_id, [SUCCEEDED], error="changed again")
    assert asyncio.run(current()) is None  # not cached for this version: the full path
    service.jobs.delete(job_id)
    assert asyncio.run(current()) is None
    with pytest.raises(RequestError, match="no job"):
        service._get_job(job_id)


def test_a_reply_is_rebuilt_when_the_record_changes_or_urls_age() -> None:
    built: list[JobRecord] = []

    def build(record: JobRecord) -> pb.Job:
        built.append(record)
        return pb.Job(job_id=record.job_id, error=record.error)

    spec_request = JobRequest.__new__(JobRequest)
    ended = JobRecord(job_id="j", kind="explain", state=SUCCEEDED, request=spec_request)
    cache = ReplyCache(url_validity_s=0.2)
    assert cache.reply(ended, build) is cache.reply(ended, build)
    changed = JobRecord(job_id="j", kind="explain", state=SUCCEEDED, request=spec_request,
                        error="late note")
    assert cache.reply(changed, build).error == "late note"
    time.sleep(0.15)  # past half of the URLs' validity
    cache.reply(changed, build)
    running = JobRecord(job_id="r", kind="explain", state=RUNNING, request=spec_request)
    cache.reply(running, build)
    cache.reply(running, build)
    assert [r.job_id for r in built] == ["j", "j", "j", "r", "r"]


def test_concurrent_requests_wait_for_one_build() -> None:
    started, release = threading.Event(), threading.Event()
    builds = []

    def slow(record: JobRecord) -> pb.Job:
        builds.append(1)
        started.set()
        release.wait(5)
        return pb.Job(job_id=record.job_id)

    record = JobRecord(job_id="j", kind="explain", state=SUCCEEDED,
                       request=JobRequest.__new__(JobRequest))
    cache = ReplyCache(url_validity_s=3600)
    with ThreadPoolExecutor(16) as pool:
        futures = [pool.submit(cache.reply, record, slow) for _ in range(16)]
        started.wait(5)
        release.set()
        replies = [f.result() for f in futures]
    assert len(builds) == 1 and all(r is replies[0] for r in replies)


def test_watchers_of_one_job_share_one_reader(tiny_repository: Path, redis_url: str) -> None:
    jobs = JobStore(redis_url)
    spec = JobSpec.create(load_model_set(tiny_repository, "tiny"))
    jobs.create("watched", "explain", JobRequest(spec, input_key="jobs/watched/input.json"))
    after = jobs.last_event_id("watched")

    async def watch_all() -> list[list[tuple[str, str]]]:
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        feed = JobFeed(client, outage_s=5.0)
        seen: list[list[tuple[str, str]]] = [[] for _ in range(WATCHERS)]

        async def watch(i: int) -> None:
            async for events, record in feed.follow("watched", after):
                seen[i] += [(event.state, record.state) for event in events]

        tasks = [asyncio.create_task(watch(i)) for i in range(WATCHERS)]
        await asyncio.sleep(0.2)
        assert len(feed._feeds) == 1 and feed._feeds["watched"].watchers == WATCHERS
        await asyncio.to_thread(jobs.transition, "watched", ACTIVE, state=RUNNING)
        await asyncio.to_thread(jobs.transition, "watched", ACTIVE, state=SUCCEEDED)
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        assert not feed._feeds  # the reader stops with its last watcher
        await feed.close()
        return seen

    seen = asyncio.run(watch_all())
    for got in seen:
        assert [state for state, _ in got] == [RUNNING, SUCCEEDED]
        assert got[-1] == (SUCCEEDED, SUCCEEDED)


class EndsWhileReading:
    """An asyncio Redis client whose first XREAD that returns events is followed, before
    the feed reads the record, by the job's last transition (its event not yet read)."""

    def __init__(self, inner: redis.asyncio.Redis, end: Callable[[], None]) -> None:
        self.inner, self.end, self.ended = inner, end, False

    async def xread(self, *args: Any, **kwargs: Any) -> Any:
        answer = await self.inner.xread(*args, **kwargs)
        if answer and not self.ended:
            self.ended = True
            await asyncio.to_thread(self.end)
        return answer

    async def hgetall(self, key: str) -> Any:
        return await self.inner.hgetall(key)

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_a_job_that_ends_between_its_event_and_its_record_is_followed_to_the_end(
        tiny_repository: Path, redis_url: str) -> None:
    jobs = JobStore(redis_url)
    spec = JobSpec.create(load_model_set(tiny_repository, "tiny"))
    jobs.create("racing", "explain", JobRequest(spec, input_key="jobs/racing/input.json"))
    jobs.transition("racing", ACTIVE, state=RUNNING)
    after = jobs.last_event_id("racing")
    jobs.transition("racing", [RUNNING], message="stage encode done")

    async def follow() -> list[str]:
        client = EndsWhileReading(
            redis.asyncio.Redis.from_url(redis_url, decode_responses=True),
            lambda: jobs.transition("racing", [RUNNING], state=SUCCEEDED))
        feed = JobFeed(cast(redis.asyncio.Redis, client), outage_s=5.0)
        states: list[str] = []

        async def watch() -> None:
            async for events, _record in feed.follow("racing", after):
                states.extend(event.state for event in events)

        await asyncio.wait_for(watch(), 10)  # hung before: the reader stopped on the record
        await feed.close()
        return states

    assert asyncio.run(follow()) == [RUNNING, SUCCEEDED]


def test_a_resumed_job_is_followed_past_its_earlier_end(tiny_repository: Path,
                                                        redis_url: str) -> None:
    jobs = JobStore(redis_url)
    spec = JobSpec.create(load_model_set(tiny_repository, "tiny"))
    jobs.create("resumed", "cohort", JobRequest(spec, images_key="cohorts/resumed/images.json"))
    jobs.transition("resumed", ACTIVE, state=RUNNING)
    jobs.transition("resumed", ACTIVE, state=CANCELLED)
    assert jobs.reopen("resumed", [CANCELLED], message="cohort resumed")
    after = jobs.last_event_id("resumed")  # a watch begun after the resume

    async def follow() -> list[str]:
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True)
        feed = JobFeed(client, outage_s=5.0)
        states: list[str] = []

        async def watch() -> None:
            async for events, _record in feed.follow("resumed", after):
                states.extend(event.state for event in events)

        task = asyncio.create_task(watch())
        await asyncio.sleep(0.2)
        await asyncio.to_thread(jobs.transition, "resumed", ACTIVE, state=RUNNING)
        await asyncio.to_thread(jobs.transition, "resumed", ACTIVE, state=SUCCEEDED)
        await asyncio.wait_for(task, 10)  # hung before: the reader stopped at the cancel
        await feed.close()
        return states

    assert asyncio.run(follow()) == [RUNNING, SUCCEEDED]
