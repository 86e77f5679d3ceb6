"""Cohort jobs end to end: SubmitCohort, its chunks on two real workers, a worker killed
mid-cohort, cancel, the summary, and ``styleprobe cohort submit|watch|download`` (real
Redis, S3, Triton, orchestrator and workers: see conftest.py)."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import grpc
import pyarrow.parquet as pq
import pytest

from service_calls import auth, knee_pngs
from styleprobe.api import pb, rpc
from styleprobe.cohort.ledger import DEFAULT_CHUNK_SIZE
from styleprobe.jobs import JobStore
from styleprobe.storage import open_store
from styleprobe.storage.s3 import S3Store
from styleprobe.testing.process import venv_program
from styleprobe.testing.stack import ServiceStack
from styleprobe.worker.app import COHORT_TASKS, QUEUES, make_app

TINY = "tiny"
LAMBDAS = "-3:3:5"
PROBE = pb.ProbeOptions(samples=400, seed=17)
WAIT_S = 600.0
CORRUPT = {  # index -> (name, bytes): what a PACS export can hold besides images
    13: ("img-013.png", b"\x89PNG\r\n\x1a\n truncated"),
    29: ("img-029.dcm", b"DICM but not really"),
    41: ("img-041.png", b""),
    57: ("img-057.png", b"plain text, no image"),
}
T = TypeVar("T")




def upload_cohort(stack: ServiceStack, prefix: str, count: int,
                  corrupt: dict[int, tuple[str, bytes]], seed: int) -> list[str]:
    """``count`` objects under ``prefix``: knee phantoms, and the corrupt files."""
    store = open_store(stack.settings())
    good = iter(knee_pngs(count - len(corrupt), seed))
    keys = []
    for index in range(count):
        name, data = corrupt.get(index) or (f"img-{index:03d}.png", next(good))
        store.put(prefix + name, data)
        keys.append(prefix + name)
    return keys


def wait_for(condition: Callable[[], T], what: str, timeout_s: float = WAIT_S,
             every_s: float = 0.2) -> T:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out waiting for {what}")


def settled(count: Callable[[], int], quiet_s: float = 5.0) -> int:
    """``count()`` once it has not changed for ``quiet_s``."""
    last, since = count(), time.monotonic()
    deadline = since + WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = count()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return now
    raise AssertionError(f"still changing after {WAIT_S} s")


def watch(stub: rpc.StyleProbeStub, token: str, job_id: str) -> list[pb.JobEvent]:
    return list(stub.WatchJob(pb.WatchJobRequest(job_id=job_id), metadata=auth(token),
                              timeout=WAIT_S))


def summary_rows(job: pb.Job) -> list[dict[str, str]]:
    import urllib.request

    url = {a.name: a.url for a in job.cohort.artifacts}["csv"]
    with urllib.request.urlopen(url, timeout=30) as response:
        return list(csv.DictReader(io.StringIO(response.read().decode())))


def busy_chunk_worker(stack: ServiceStack) -> str:
    """The node name of a worker that is running a chunk task now ('' if none is)."""
    control = make_app(stack.settings()).control  # the service's broker options (priority keys)
    active = control.inspect(destination=list(stack.workers), timeout=1.0).active() or {}
    for node, tasks in active.items():
        if any(task["name"] == COHORT_TASKS["chunk"][0] for task in tasks):
            return node
    return ""


def pool_processes(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in children.split()]


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> rpc.StyleProbeStub:
    return rpc.StyleProbeStub(channel)


@pytest.mark.slow
def test_a_60_image_cohort_with_corrupt_files_survives_a_killed_worker(
        stack: ServiceStack, stub: rpc.StyleProbeStub) -> None:
    prefix = "inputs/cohort-60/"
    keys = upload_cohort(stack, prefix, 60, CORRUPT, seed=60)
    token = auth(stack.token)
    job = stub.SubmitCohort(pb.SubmitCohortRequest(
        prefix=prefix, model_set=TINY, lambdas=LAMBDAS, options=pb.ExplainOptions(probe=PROBE)),
        metadata=token, timeout=30)
    assert (job.kind, job.state, job.counts.total) == ("cohort", pb.JOB_STATE_QUEUED, 60)
    assert job.counts.pending == 60

    # SIGKILL the pool process of a worker while it runs a chunk, once some images are done
    jobs = JobStore(stack.settings().redis_url)
    wait_for(lambda: jobs.get(job.job_id).counts.get("done", 0) >= 6, "six images done")
    node = wait_for(lambda: busy_chunk_worker(stack), "a worker running a chunk", every_s=0.05)
    before_kill = jobs.get(job.job_id).counts
    for pid in pool_processes(stack.workers[node].pid):
        os.kill(pid, signal.SIGKILL)
    assert before_kill["done"] + before_kill["failed"] < 60  # it really was mid-cohort

    events = watch(stub, stack.token, job.job_id)
    final = stub.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=token, timeout=10)
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.error
    assert (final.counts.total, final.counts.done, final.counts.failed,
            final.counts.pending) == (60, 56, 4, 0)
    assert final.seconds_left == 0.0 and final.progress == 1.0
    assert set(final.stage_seconds) >= {"prepare", "summary"}
    assert {a.name for a in final.cohort.artifacts} == {"csv", "parquet", "report"}
    messages = [e.message for e in jobs.events(job.job_id, "0-0")]
    jobs.close()
    assert sum(m.startswith("cohort succeeded") for m in messages) == 1
    # every image counted once, even those of the redelivered chunk
    counted = [m.split()[1] for m in messages if m.startswith("image ")]
    assert sorted(counted) == sorted(keys)
    left = [e.job.seconds_left for e in events if e.job.state == pb.JOB_STATE_RUNNING]
    assert any(s > 0 for s in left)

    rows = summary_rows(final)
    assert len(rows) == 60 and [r["image"] for r in rows] == keys  # in order, each once
    failed = {r["image"]: r for r in rows if r["status"] == "failed"}
    assert set(failed) == {prefix + name for name, _ in CORRUPT.values()}
    assert all(r["error"] for r in failed.values())
    done = [r for r in rows if r["status"] == "done"]
    assert all(r["manifest"] and r["p_lambda_+3"] and r["prediction_input"] for r in done)
    store = open_store(stack.settings())
    assert len(store.list(f"cohorts/{job.job_id}/done/")) == 60
    manifests = [k for k in store.list("jobs/") if k.startswith(f"jobs/{job.job_id}-")
                 and k.endswith("/manifest.json")]
    assert sorted(manifests) == sorted(r["manifest"] for r in done)
    table = pq.read_table(io.BytesIO(store.get(f"cohorts/{job.job_id}/summary.parquet")))
    assert table.num_rows == 60
    assert b"Distribution of the flip" in store.get(f"cohorts/{job.job_id}/report.html")


def test_cancel_stops_the_cohort_and_keeps_what_finished(
        stack: ServiceStack, stub: rpc.StyleProbeStub) -> None:
    count = 3 * DEFAULT_CHUNK_SIZE
    keys = upload_cohort(stack, "inputs/cohort-cancel/", count, {}, seed=7)
    token = auth(stack.token)
    job = stub.SubmitCohort(pb.SubmitCohortRequest(
        keys=pb.ObjectKeys(keys=keys), model_set=TINY, lambdas=LAMBDAS,
        options=pb.ExplainOptions(probe=PROBE)), metadata=token, timeout=30)
    jobs = JobStore(stack.settings().redis_url)
    wait_for(lambda: jobs.get(job.job_id).counts.get("done", 0) >= 2, "two images done")
    cancelled = stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id), metadata=token,
                               timeout=10)
    assert cancelled.state == pb.JOB_STATE_CANCELLED
    final = wait_for(lambda: (lambda j: j if j.HasField("cohort") else None)(
        stub.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=token, timeout=10)),
        "the summary of the cancelled cohort")
    assert final.state == pb.JOB_STATE_CANCELLED
    store = open_store(stack.settings())
    # a chunk finishes the image it was explaining, then stops: the rows stop coming
    finished = settled(lambda: len(store.list(f"cohorts/{job.job_id}/done/")))
    assert 2 <= finished < count
    rows = summary_rows(final)
    assert len(rows) == count
    assert sum(r["status"] == "pending" for r in rows) >= count - finished
    assert all(store.exists(r["manifest"]) for r in rows if r["status"] == "done")
    jobs.close()


def _bad_cohorts(stack: ServiceStack) -> list[tuple[str, pb.SubmitCohortRequest, str, str]]:
    ok = {"model_set": TINY, "lambdas": LAMBDAS}
    one = pb.InlineImages(images=[pb.InlineImage(data=b"x", filename="a.png")])
    return [
        ("no images", pb.SubmitCohortRequest(**ok), "INVALID_ARGUMENT", "images are missing"),
        ("empty prefix", pb.SubmitCohortRequest(prefix="inputs/nothing-here/", **ok),
         "NOT_FOUND", "no objects under prefix"),
        ("reserved prefix", pb.SubmitCohortRequest(prefix="jobs/", **ok), "INVALID_ARGUMENT",
         "service's own objects"),
        ("no keys", pb.SubmitCohortRequest(keys=pb.ObjectKeys(), **ok), "INVALID_ARGUMENT",
         "keys is empty"),
        ("twice", pb.SubmitCohortRequest(keys=pb.ObjectKeys(keys=["inputs/a", "inputs/a"]),
                                         **ok), "INVALID_ARGUMENT", "listed twice"),
        ("bad key", pb.SubmitCohortRequest(keys=pb.ObjectKeys(keys=["../etc/passwd"]), **ok),
         "INVALID_ARGUMENT", "invalid object key"),
        ("inline too big", pb.SubmitCohortRequest(inline=pb.InlineImages(images=[
            pb.InlineImage(data=b"\0" * (3 << 20), filename=f"{i}.png") for i in range(3)]),
            **ok), "INVALID_ARGUMENT", "at most 64 images and 8 MiB"),
        ("inline too many", pb.SubmitCohortRequest(inline=pb.InlineImages(images=[
            pb.InlineImage(data=b"x", filename=f"{i}.png") for i in range(65)]), **ok),
         "INVALID_ARGUMENT", "at most 64 images"),
        ("unknown model set", pb.SubmitCohortRequest(inline=one, model_set="nope"),
         "NOT_FOUND", "unknown model set"),
        ("unknown target", pb.SubmitCohortRequest(inline=one, target="tumour", **ok),
         "INVALID_ARGUMENT", "healthy, sick"),
        ("malformed lambdas", pb.SubmitCohortRequest(inline=one, model_set=TINY,
                                                     lambdas="3:-3:5"),
         "INVALID_ARGUMENT", "start must be less than stop"),
    ]


def test_bad_cohorts_are_refused_and_leave_nothing_behind(
        stack: ServiceStack, stub: rpc.StyleProbeStub) -> None:
    settings = stack.settings()
    store = open_store(settings)
    jobs = JobStore(settings.redis_url)

    def leftovers() -> tuple[list[str], int, dict[str, int]]:
        return (store.list("cohorts/"), sum(1 for _ in jobs.redis.scan_iter("styleprobe:job:*")),
                {q: jobs.redis.llen(q) for q in QUEUES})

    before = leftovers()
    for name, request, code, words in _bad_cohorts(stack):
        with pytest.raises(grpc.RpcError) as refused:
            stub.SubmitCohort(request, metadata=auth(stack.token), timeout=30)
        assert refused.value.code().name == code, name
        assert words in refused.value.details(), (name, refused.value.details())
    assert leftovers() == before
    jobs.close()


def cohort_command(stack: ServiceStack, *args: str) -> tuple[list[str], dict[str, str]]:
    """``styleprobe cohort ARGS`` against the stack, and its environment (the token)."""
    return ([venv_program("styleprobe"), "cohort", *args, "--server", stack.grpc_address],
            {**os.environ, "STYLEPROBE_TOKEN": stack.token})


def styleprobe(stack: ServiceStack, *args: str) -> subprocess.CompletedProcess[str]:
    command, env = cohort_command(stack, *args)
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=WAIT_S)


def test_cli_submits_watches_and_downloads_an_inline_cohort(stack: ServiceStack,
                                                            tmp_path: Path) -> None:
    files = []
    for index, data in enumerate([*knee_pngs(3, seed=99), b"not an image"]):
        files.append(tmp_path / f"scan-{index}.png")
        files[-1].write_bytes(data)
    submitted = styleprobe(stack, "submit", *map(str, files), "--model-set", TINY,
                           "--lambdas", LAMBDAS, "--probe-samples", "400", "--watch")
    # the cohort succeeds with one failed image; the client says so and exits 0
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.splitlines()[0]
    assert "4 images, 3 explained, 1 failed" in submitted.stdout

    out = tmp_path / "summary"
    downloaded = styleprobe(stack, "download", job_id, "--out", str(out))
    assert downloaded.returncode == 0, downloaded.stderr
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "summary.csv",
                                                     "summary.parquet"]
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["image"].rsplit("/", 1)[-1] for r in rows] == [f.name for f in files]
    assert rows[-1]["status"] == "failed" and rows[-1]["error"]

    watched = styleprobe(stack, "watch", job_id)
    assert watched.returncode == 0 and "succeeded" in watched.stdout


def test_cli_watch_reopens_its_stream_across_an_orchestrator_restart(
        stack: ServiceStack, stub: rpc.StyleProbeStub) -> None:
    count = 40
    keys = upload_cohort(stack, "inputs/cohort-watch-restart/", count, {}, seed=40)
    job = stub.SubmitCohort(pb.SubmitCohortRequest(
        keys=pb.ObjectKeys(keys=keys), model_set=TINY, lambdas=LAMBDAS,
        options=pb.ExplainOptions(probe=PROBE), render_images=True),  # pictures: still
        metadata=auth(stack.token), timeout=30)  # running when the orchestrator is back
    command, env = cohort_command(stack, "watch", job.job_id)
    watcher = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    jobs = JobStore(stack.settings().redis_url)
    wait_for(lambda: jobs.get(job.job_id).counts.get("done", 0) >= 2, "two images done")
    at_stop = jobs.get(job.job_id)
    jobs.close()
    stack.orchestrator.kill()  # a crash or a lost node: the open stream is cut at once
    stack.orchestrator = stack.orchestrator_process().start(timeout_s=180)
    out, err = watcher.communicate(timeout=WAIT_S)
    assert at_stop.state == "running" and at_stop.counts["done"] < count  # mid-cohort
    assert watcher.returncode == 0, err
    assert "lost the stream" in err
    assert f"{count} images, {count} explained" in out


@pytest.mark.parametrize(("args", "words"), [
    (["submit", "--prefix", "inputs/nothing-here/", "--model-set", TINY],
     "NOT_FOUND: no objects under prefix"),
    (["submit", "--prefix", "inputs/x/", "a.png", "--model-set", TINY],
     "name the images one way"),
    (["submit", "--keys-file", "/nonexistent/keys.txt"], "cannot read"),
    (["download", "0" * 32], "NOT_FOUND"),
])
def test_cli_bad_input_is_one_line_and_exit_2(stack: ServiceStack, args: list[str],
                                              words: str) -> None:
    answer = styleprobe(stack, *args)
    assert answer.returncode == 2
    assert answer.stderr.count("\n") == 1 and words in answer.stderr, answer.stderr


# A stack of its own whose Redis keeps everything on disk, restarted mid-cohort. Chunks
# must finish within SOFT; a chunk whose acknowledgement the restart lost is handed out
# again after VISIBILITY (and the sweep that finds it runs every VISIBILITY / 4).
RESTART_SOFT, RESTART_HARD, RESTART_VISIBILITY = 40, 45, 50
BROKER_DOWN_S = 3.0  # longer than a worker's first reconnect try (2 s)


@pytest.fixture(scope="module")
def persistent_stack(make_stack: Callable[..., ServiceStack]) -> Iterator[ServiceStack]:
    limits = (RESTART_SOFT, RESTART_HARD, RESTART_VISIBILITY)
    with make_stack("persistent-stack", limits, persistent_redis=True) as services:
        yield services


def stored_versions(store: S3Store, keys: list[str]) -> dict[str, tuple[str, object]]:
    """Each object's (etag, last modified): what changes when it is written again."""
    stats = {key: store.client.stat_object(store.bucket, key) for key in keys}
    return {key: (stat.etag, stat.last_modified) for key, stat in stats.items()}


@pytest.mark.slow
def test_a_cohort_survives_a_broker_restart_without_redoing_finished_images(
        persistent_stack: ServiceStack) -> None:
    stack, count = persistent_stack, 30
    keys = upload_cohort(stack, "inputs/cohort-restart/", count, {}, seed=30)
    token = auth(stack.token)
    with grpc.insecure_channel(stack.grpc_address) as channel:
        stub = rpc.StyleProbeStub(channel)
        job = stub.SubmitCohort(pb.SubmitCohortRequest(
            keys=pb.ObjectKeys(keys=keys), model_set=TINY, lambdas=LAMBDAS,
            options=pb.ExplainOptions(probe=PROBE)), metadata=token, timeout=30)
        jobs = JobStore(stack.settings().redis_url)
        wait_for(lambda: jobs.get(job.job_id).counts.get("done", 0) >= 4, "four images done")
        jobs.close()

        # what finished before the restart: its rows and its images' manifests
        store = S3Store.from_settings(stack.settings())
        rows = store.list(f"cohorts/{job.job_id}/done/")
        manifests = [json.loads(store.get(row))["manifest"] for row in rows]
        before = stored_versions(store, rows + manifests)
        assert 4 <= len(rows) < count  # it really was mid-cohort
        # a client watching the cohort through the outage
        watching = ThreadPoolExecutor(1).submit(watch, stub, stack.token, job.job_id)
        time.sleep(1.0)

        stack.redis.stop()  # SIGTERM: the append-only file holds every write
        time.sleep(BROKER_DOWN_S)
        stack.redis.start()

        final = wait_for(lambda: (lambda j: j if j.state != pb.JOB_STATE_RUNNING else None)(
            stub.GetJob(pb.GetJobRequest(job_id=job.job_id), metadata=token, timeout=10)),
            "the cohort to end", timeout_s=180.0, every_s=1.0)
        watched = watching.result(timeout=60)  # the stream waited out the outage and ended
    assert final.state == pb.JOB_STATE_SUCCEEDED, final.error
    assert watched[-1].job.state == pb.JOB_STATE_SUCCEEDED
    streamed = [e.message.split()[1] for e in watched if e.message.startswith("image ")]
    assert streamed and len(streamed) == len(set(streamed)) and set(streamed) <= set(keys)
    assert (final.counts.total, final.counts.done, final.counts.failed,
            final.counts.pending) == (count, count, 0, 0)
    summary = summary_rows(final)
    assert [r["image"] for r in summary] == keys  # in order, each once
    assert all(r["status"] == "done" and r["manifest"] for r in summary)
    jobs = JobStore(stack.settings().redis_url)
    messages = [e.message for e in jobs.events(job.job_id, "0-0")]
    jobs.close()
    assert sorted(m.split()[1] for m in messages if m.startswith("image ")) == sorted(keys)
    assert sum(m.startswith("cohort succeeded") for m in messages) == 1
    # the images finished before the restart were not explained (nor their rows written) again
    assert stored_versions(store, list(before)) == before
