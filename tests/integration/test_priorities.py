"""Under a burst, a job's later stages are served before new jobs' first ones: each stage's
task carries its priority, and the real Redis transport hands out the most urgent first,
across both queues (what a worker consuming gpu and cpu does)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from kombu import Consumer, Exchange, Queue
from kombu.message import Message

from styleprobe.config import Settings
from styleprobe.explain.engine import STAGES
from styleprobe.testing.redis import redis_server
from styleprobe.worker.app import (
    CPU_QUEUE,
    GPU_QUEUE,
    QUEUES,
    cohort_task,
    explain_chain,
    make_app,
    priority_lists,
    priority_of,
    queue_of,
    task_name,
)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Celery]:
    server, url = redis_server(tmp_path)
    server.start()
    try:
        yield make_app(Settings(redis_url=url))
    finally:
        server.stop()


def served(app: Celery, queues: tuple[str, ...]) -> list[str]:
    """Task names in the order the broker hands them to one consumer of ``queues`` that
    takes one message at a time, as a worker does (prefetch 1, kombu's Redis transport)."""
    names: list[str] = []

    def take(_body: object, message: Message) -> None:
        names.append(message.headers["task"])
        message.ack()

    with app.connection_for_read() as connection, Consumer(
            connection, [Queue(q, Exchange(q), routing_key=q) for q in queues],
            callbacks=[take], accept=["json"], prefetch_count=1):
        while True:
            try:
                connection.drain_events(timeout=1)
            except TimeoutError:
                return names


def test_later_stages_come_first(app: Celery) -> None:
    encode, *_, traverse, render, manifest = STAGES
    # a burst: new jobs' first stages are queued, then earlier jobs' later stages
    for job in ("new-1", "new-2"):
        app.send_task(task_name(encode), args=({}, job))
    for stage in (render, traverse, manifest):
        app.send_task(task_name(stage), args=("old",))
    order = served(app, QUEUES)
    assert order == [task_name(manifest), task_name(render), task_name(traverse),
                     task_name(encode), task_name(encode)]


def test_priorities_follow_the_stage_list() -> None:
    priorities = [priority_of(stage) for stage in STAGES]
    assert priorities == sorted(priorities, reverse=True) and priorities[-1] == 0
    assert {queue_of(stage) for stage in STAGES if not stage.uses_models} == {CPU_QUEUE}
    assert len(priority_lists(GPU_QUEUE)) == 10 and priority_lists(GPU_QUEUE)[0] == GPU_QUEUE


def test_a_chain_carries_each_stage_priority(app: Celery) -> None:
    chain = explain_chain(app, "job-1")
    # in each signature's own options: a chain's next task is sent, from them, by the
    # worker that ran the one before (the routes alone did not reach those: a burst then
    # ran stage by stage across all its jobs)
    assert [(t.task, t.options["priority"]) for t in chain.tasks] == [
        (task_name(stage), priority_of(stage)) for stage in STAGES]
    assert cohort_task(app, "summary", "c").options["priority"] == 0
    first = chain.tasks[0]
    assert first.task == task_name(STAGES[0])
    routed = app.amqp.router.route(dict(first.options), first.task, first.args, {})
    assert routed["priority"] == priority_of(STAGES[0])
    assert routed["queue"].name == queue_of(STAGES[0])
