"""Benchmark: fetching an artifact through the API (GetArtifact, streamed in 1 MiB chunks,
with a bearer token) against its presigned URL (straight from S3), for a large artifact
(throughput) and a small one (time to first byte and whole).

    .venv/bin/python benchmarks/bench_get_artifact.py [--mib 64] [--repeats 5]

One orchestrator (no workers: the finished job's record and objects are written here) on
Redis and SeaweedFS, started on free ports; loopback, plaintext. Writes
benchmarks/results/get_artifact.md and get_artifact.json. Median of the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc

from styleprobe.api import pb, rpc
from styleprobe.config import Settings
from styleprobe.explain.spec import JobSpec
from styleprobe.jobs import QUEUED, RUNNING, SUCCEEDED, JobRequest, JobStore
from styleprobe.storage import open_store
from styleprobe.testing.stack import ServiceStack

RESULTS = Path(__file__).resolve().parent / "results"
JOB = "bench-artifact"
SMALL_BYTES = 64 << 10  # a strip or a frame


def through_api(stub: rpc.StyleProbeStub, token: str, name: str) -> tuple[float, float, int]:
    """Seconds to the first chunk and to the last, and the bytes received."""
    started = time.perf_counter()
    first, size = 0.0, 0
    for chunk in stub.GetArtifact(pb.GetArtifactRequest(job_id=JOB, name=name),
                                  metadata=(("authorization", f"Bearer {token}"),),
                                  timeout=300):
        first = first or time.perf_counter() - started
        size += len(chunk.data)
    return first, time.perf_counter() - started, size


def through_url(url: str) -> tuple[float, float, int]:
    started = time.perf_counter()
    size = 0
    with urllib.request.urlopen(url, timeout=300) as response:
        first = 0.0
        while data := response.read(1 << 20):
            first = first or time.perf_counter() - started
            size += len(data)
    return first, time.perf_counter() - started, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    repository = Path(Settings.from_env().model_repository).resolve()
    large, small = os.urandom(args.mib << 20), os.urandom(SMALL_BYTES)
    runs: dict[str, list[tuple[float, float, int]]] = {
        f"{way} {kind}": [] for way in ("GetArtifact", "presigned URL")
        for kind in ("large", "small")}
    with tempfile.TemporaryDirectory(prefix="bench-artifact-") as tmp, \
            ServiceStack(Path(tmp), repository, workers=0) as stack, \
            grpc.insecure_channel(stack.grpc_address) as channel:
        settings = stack.settings()
        store = open_store(settings)
        keys = {"report": f"jobs/{JOB}/report.html", "strip": f"jobs/{JOB}/strip.png"}
        store.put(keys["report"], large, "text/html")
        store.put(keys["strip"], small, "image/png")
        store.put(f"jobs/{JOB}/manifest.json", b"{}", "application/json")
        jobs = JobStore(settings.redis_url)
        jobs.create(JOB, "explain", JobRequest(JobSpec(model_set="knee-oa", target="OA")))
        jobs.transition(JOB, [QUEUED], state=RUNNING)
        jobs.transition(JOB, [RUNNING], state=SUCCEEDED, keys={
            "outputs": keys, "manifest": f"jobs/{JOB}/manifest.json"})
        jobs.close()
        stub = rpc.StyleProbeStub(channel)
        for _ in range(args.repeats):
            for kind, name in (("large", "report"), ("small", "strip")):
                runs[f"GetArtifact {kind}"].append(through_api(stub, stack.token, name))
                runs[f"presigned URL {kind}"].append(
                    through_url(store.presigned_url(keys[name])))
    assert all(run[2] == (len(large) if "large" in way else SMALL_BYTES)
               for way, values in runs.items() for run in values)
    result = {way: {"first_ms": statistics.median(r[0] for r in values) * 1e3,
                    "total_ms": statistics.median(r[1] for r in values) * 1e3}
              for way, values in runs.items()}
    for way in result:
        if "large" in way:
            result[way]["mib_s"] = args.mib / (result[way]["total_ms"] / 1e3)
    machine = (f"{platform.machine()}, {os.cpu_count()} CPUs (shared), Python "
               f"{platform.python_version()}")
    record = {"mib": args.mib, "small_bytes": SMALL_BYTES, "repeats": args.repeats,
              "machine": machine, "load_average": os.getloadavg(), "results": result}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "get_artifact.json").write_text(json.dumps(record, indent=2) + "\n")
    lines = ["# Fetching an artifact: GetArtifact against a presigned URL", "",
             f"`.venv/bin/python benchmarks/bench_get_artifact.py --mib {args.mib} --repeats "
             f"{args.repeats}`; {machine}; load average {record['load_average'][0]:.1f}. "
             "One orchestrator on Redis and SeaweedFS, loopback, plaintext; median of the "
             "repeats.", "",
             f"| | {args.mib} MiB: MiB/s | {args.mib} MiB: first chunk (ms) | "
             f"{SMALL_BYTES >> 10} KiB: first byte (ms) | {SMALL_BYTES >> 10} KiB: whole (ms) |",
             "| --- | --- | --- | --- | --- |"]
    for way in ("GetArtifact", "presigned URL"):
        big, little = result[f"{way} large"], result[f"{way} small"]
        lines.append(f"| {way} | {big['mib_s']:.0f} | {big['first_ms']:.0f} | "
                     f"{little['first_ms']:.1f} | {little['total_ms']:.1f} |")
    lines += ["", "GetArtifact reads the job's record (Redis), stats the object and streams "
              "it from S3 through the orchestrator: a hop and a token check more than a "
              "presigned URL, in exchange for working where the bucket cannot be reached."]
    (RESULTS / "get_artifact.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
