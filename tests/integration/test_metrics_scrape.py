"""A real Celery prefork worker (two pool processes, real Redis) serves the samples of all
its processes on one /metrics port, and a real Prometheus (Debian's) scrapes it."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from celery import Celery

import required
from styleprobe.config import Settings
from styleprobe.testing.ports import free_port
from styleprobe.testing.process import ServerProcess, venv_program

TASK_MODULE = '''
import os
from celery import Celery
from styleprobe import metrics

app = Celery("metrics_probe", broker=os.environ["PROBE_BROKER"])
app.conf.update(task_default_queue=os.environ["PROBE_QUEUE"], task_ignore_result=True,
                worker_hijack_root_logger=False, worker_prefetch_multiplier=1)
metrics.connect_celery_worker(int(os.environ["PROBE_PORT"]), "127.0.0.1")


@app.task(name="probe.finish_image")
def finish_image(outcome: str) -> int:
    with metrics.stage_timer("render"):
        metrics.count_cohort_image(outcome)
    return os.getpid()
'''


def http_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def answers(url: str) -> bool:
    try:
        http_text(url)
    except OSError:
        return False
    return True


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def served(page: str, series: str) -> float:
    match = re.search(rf"^{re.escape(series)} (\S+)$", page, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[ServerProcess, Celery, int]]:
    """A prefork worker (concurrency 2) in multiprocess mode on its own queue."""
    (tmp_path / "metrics_probe.py").write_text(TASK_MODULE)
    port, queue = free_port(), f"metrics-probe-{uuid.uuid4().hex[:8]}"
    (tmp_path / "multiproc").mkdir()  # as `styleprobe serve worker` makes it
    broker = required.running_redis(Settings.from_env().redis_url)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PROBE_BROKER": broker,
           "PROBE_QUEUE": queue, "PROBE_PORT": str(port),
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "multiproc")}
    process = ServerProcess(
        "celery", [venv_program("celery"), "-A", "metrics_probe", "worker", "--pool",
                   "prefork", "--concurrency", "2", "--loglevel", "WARNING", "--without-gossip",
                   "--without-mingle", "--without-heartbeat"],
        lambda: answers(f"http://127.0.0.1:{port}/metrics"), tmp_path / "celery.log", env)
    process.start()
    client = Celery("metrics_probe", broker=broker)
    client.conf.task_default_queue = queue
    yield process, client, port
    process.stop()
    redis.Redis.from_url(broker).delete(queue, f"_kombu.binding.{queue}")


def test_worker_serves_all_pool_processes_and_prometheus_scrapes_it(
        worker: tuple[ServerProcess, Celery, int], tmp_path: Path) -> None:
    process, client, port = worker
    url = f"http://127.0.0.1:{port}/metrics"
    for outcome in ["done"] * 5 + ["failed"] * 3:
        client.send_task("probe.finish_image", args=[outcome])
    done = 'styleprobe_cohort_images_total{outcome="done"}'
    wait_for(lambda: served(http_text(url), done) == 5, "5 images counted by the pool")
    page = http_text(url)
    assert served(page, 'styleprobe_cohort_images_total{outcome="failed"}') == 3
    assert served(page, 'styleprobe_stage_duration_seconds_count{stage="render"}') == 8
    writers = {p.stem.rsplit("_", 1)[1] for p in (tmp_path / "multiproc").glob("*.db")}
    assert writers - {str(process.pid)}  # counted in pool processes, served by the parent

    prometheus = required.program("prometheus")
    web = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "styleprobe-worker",
                            "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}]}))
    server = ServerProcess(
        "prometheus", [prometheus, f"--config.file={config}",
                       f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                       f"--web.listen-address=127.0.0.1:{web}"],
        lambda: answers(f"http://127.0.0.1:{web}/-/ready"), tmp_path / "prometheus.log")
    server.start()
    try:
        def query(expr: str) -> list[dict]:
            answer = json.loads(http_text(f"http://127.0.0.1:{web}/api/v1/query?"
                                          + urllib.parse.urlencode({"query": expr})))
            return answer["data"]["result"]

        wait_for(lambda: query('sum(styleprobe_cohort_images_total{outcome="done"})'),
                 "Prometheus to scrape the worker", timeout_s=30)
        done_sum = query('sum(styleprobe_cohort_images_total{outcome="done"})')
        assert float(done_sum[0]["value"][1]) == 5
        assert query('up{job="styleprobe-worker"}')[0]["value"][1] == "1"
    finally:
        server.stop()
