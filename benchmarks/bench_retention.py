"""Benchmark: what retention and artifact streaming cost on a real S3 server (SeaweedFS,
signed requests) and on a local folder: a reaper round that finds nothing to remove (the
listing), a round that removes every job (the deletes), removing one job's objects (as
DeleteJob does), and reading a large artifact in 1 MiB chunks (as GetArtifact does)
against reading it whole.

    .venv/bin/python benchmarks/bench_retention.py [--jobs 20] [--objects 50] [--repeats 3]

Writes benchmarks/results/retention.md and retention.json. Each job folder holds
``--objects`` objects of 4 KiB (an explanation with a 17-step grid writes about 50), and
there are as many uploads under ``inputs/`` as jobs. Median of the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from styleprobe.config import Settings
from styleprobe.explain.spec import JobSpec
from styleprobe.jobs import RUNNING, SUCCEEDED, JobRequest, JobStore, new_job_id
from styleprobe.reaper import DAY_S, Reaper, remove_job_objects
from styleprobe.storage import ArtifactStore, open_store
from styleprobe.storage.local import LocalStore
from styleprobe.testing.redis import redis_server
from styleprobe.testing.s3 import S3_ACCESS_KEY, s3_server

RESULTS = Path(__file__).resolve().parent / "results"
SECRET = "bench-secret"
OBJECT = os.urandom(4096)
LARGE_MIB = 64
REQUEST = JobRequest(JobSpec(model_set="tiny", target="sick"))


@contextmanager
def servers(workdir: Path) -> Iterator[tuple[str, str]]:
    """A fresh SeaweedFS and redis-server; their S3 endpoint and Redis URL."""
    (workdir / "s3").mkdir()
    (workdir / "redis").mkdir()
    s3, endpoint = s3_server(workdir / "s3", SECRET)
    redis, url = redis_server(workdir / "redis")
    s3.start(timeout_s=90)
    try:
        redis.start()
        try:
            yield endpoint, url
        finally:
            redis.stop()
    finally:
        s3.stop()


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def fill(store: ArtifactStore, jobs: JobStore, count: int, objects: int) -> list[str]:
    """``count`` succeeded jobs of ``objects`` objects each, and ``count`` uploads."""
    ids = []
    for index in range(count):
        job_id = new_job_id()
        jobs.create(job_id, "explain", REQUEST)
        jobs.transition(job_id, ["queued"], state=RUNNING)
        jobs.transition(job_id, [RUNNING], state=SUCCEEDED)
        for number in range(objects - 1):
            store.put(f"jobs/{job_id}/frames/frame_{number:03d}.png", OBJECT, "image/png")
        store.put(f"jobs/{job_id}/manifest.json", OBJECT, "application/json")
        store.put(f"inputs/bench/{index:04d}.dcm", OBJECT)
        ids.append(job_id)
    return ids


def measure(store: ArtifactStore, jobs: JobStore, count: int, objects: int,
            repeats: int) -> dict[str, float]:
    runs: dict[str, list[float]] = {"idle_round_s": [], "expiring_round_s": [],
                                    "delete_job_ms": [], "stream_mib_s": [], "get_mib_s": []}
    reaper = Reaper(store, jobs, retention_days=7, grace_s=660)
    large = os.urandom(LARGE_MIB << 20)
    for _ in range(repeats):
        store.put("jobs/large/report.html", large, "text/html")
        first, *_ = fill(store, jobs, count, objects)
        runs["idle_round_s"].append(timed(reaper.run_once))
        stream = timed(lambda: sum(len(c) for c in store.read_chunks("jobs/large/report.html")))
        runs["stream_mib_s"].append(LARGE_MIB / stream)
        runs["get_mib_s"].append(LARGE_MIB / timed(lambda: store.get("jobs/large/report.html")))
        removed = timed(lambda job_id=first: remove_job_objects(store, job_id))
        runs["delete_job_ms"].append(removed * 1e3)
        expired = timed(lambda: reaper.run_once(now=time.time() + 8 * DAY_S))
        runs["expiring_round_s"].append(expired)
        assert not store.list("inputs/") and not store.list("jobs/")
    result = {name: statistics.median(values) for name, values in runs.items()}
    listed = count * (objects + 1) + 1
    result["listed_objects"] = listed
    result["removed_objects"] = (count - 1) * objects + count + 1
    result["removed_per_s"] = result["removed_objects"] / result["expiring_round_s"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--objects", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    stores = {}
    with tempfile.TemporaryDirectory() as folder, servers(Path(folder)) as (endpoint, url):
        jobs = JobStore(url)
        s3 = open_store(Settings.from_env({
            "STYLEPROBE_STORE": "s3", "STYLEPROBE_S3_ENDPOINT": endpoint,
            "STYLEPROBE_S3_ACCESS_KEY": S3_ACCESS_KEY, "STYLEPROBE_S3_SECRET_KEY": SECRET,
            "STYLEPROBE_S3_BUCKET": "bench"}))
        for name, store in (("S3 (SeaweedFS)", s3),
                            ("local folder", LocalStore(Path(folder) / "artifacts"))):
            stores[name] = measure(store, jobs, args.jobs, args.objects, args.repeats)
        jobs.close()
    record = {"jobs": args.jobs, "objects_per_job": args.objects, "repeats": args.repeats,
              "python": platform.python_version(),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
              "stores": stores}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "retention.json").write_text(json.dumps(record, indent=2) + "\n")
    first = next(iter(stores.values()))
    rows = [
        (f"round finding nothing to remove, {first['listed_objects']} objects (s)",
         "idle_round_s", "{:.2f}"),
        (f"round removing {args.jobs} jobs and uploads, {first['removed_objects']} objects (s)",
         "expiring_round_s", "{:.2f}"),
        ("objects removed per second", "removed_per_s", "{:.0f}"),
        (f"removing one job's {args.objects} objects, as DeleteJob (ms)", "delete_job_ms",
         "{:.0f}"),
        (f"{LARGE_MIB} MiB read in 1 MiB chunks, as GetArtifact (MiB/s)", "stream_mib_s",
         "{:.0f}"),
        (f"{LARGE_MIB} MiB read whole (MiB/s)", "get_mib_s", "{:.0f}"),
    ]
    lines = ["# Retention and artifact streaming: what they cost", "",
             f"`.venv/bin/python benchmarks/bench_retention.py --jobs {args.jobs} --objects "
             f"{args.objects} --repeats {args.repeats}`; {record['machine']}, Python "
             f"{record['python']}. Median of the repeats; objects of 4 KiB.", "",
             "| | " + " | ".join(stores) + " |", "| --- |" + " --- |" * len(stores)]
    for label, key, form in rows:
        lines.append(f"| {label} | " + " | ".join(form.format(s[key]) for s in stores.values())
                     + " |")
    lines += ["", "The S3 store lists 1000 keys a request and deletes a folder's objects "
              "with DeleteObjects (up to 1000 keys a request); the local folder pays one "
              "file-system unlink per object and sidecar (the shared machines' disk makes "
              "that slow and noisy). Streaming holds one chunk at a time instead of the "
              "whole object."]
    (RESULTS / "retention.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
