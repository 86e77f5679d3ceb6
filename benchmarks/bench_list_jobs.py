"""Benchmark: ListJobs pages and idempotent submission on a fresh Redis (issue 16).

``--jobs`` job records are written (as JobStore.create does: record, events, index), a
tenth of them succeeded, a fifth of them cohorts, every fiftieth with an idempotency key.
Reported, as the median of ``--repeat`` calls: the first page of 100 with no filter; every
page of 100 walked to the end (pages/s); a selective filter (succeeded cohorts, about 2%
of the jobs: a page reads ids until it has 100 or has read 5000); a lookup by key; and a
retried submission under an existing key (:func:`submit_once` finding the job) against a
new submission's claim.

    .venv/bin/python benchmarks/bench_list_jobs.py [--jobs 20000] [--repeat 20]

Results: benchmarks/results/list_jobs.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from styleprobe.api import pb
from styleprobe.explain.spec import JobSpec
from styleprobe.jobs import ACTIVE, SUCCEEDED, JobRecord, JobRequest, JobStore, new_job_id
from styleprobe.orchestrator.idempotency import submit_once
from styleprobe.orchestrator.listing import list_jobs
from styleprobe.testing.redis import redis_server

RESULTS = Path(__file__).resolve().parent / "results"
REQUEST = JobRequest(JobSpec(model_set="knee-oa", target="OA"))


def median_ms(call: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def fill(jobs: JobStore, count: int) -> str:
    """``count`` jobs; the key of one in the middle."""
    middle = ""
    for index in range(count):
        key = f"key-{index}" if index % 50 == 0 else ""
        kind = "cohort" if index % 5 == 0 else "explain"
        record = submit_once(jobs, key, kind, lambda job_id, k=kind, key=key: jobs.create(
            job_id, k, REQUEST, idempotency_key=key))
        if key and index < count // 2:
            middle = key
        if index % 10 == 0:
            jobs.transition(record.job_id, ACTIVE, state=SUCCEEDED)
    return middle


def walk(jobs: JobStore, **fields: Any) -> int:
    pages, token = 0, ""
    while True:
        answer = list_jobs(jobs, pb.ListJobsRequest(page_token=token, **fields))
        pages += 1
        token = answer.next_page_token
        if not token:
            return pages


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    server, url = redis_server(workdir)
    server.start()
    try:
        jobs = JobStore(url, ttl_s=3600)
        start = time.perf_counter()
        key = fill(jobs, args.jobs)
        fill_s = time.perf_counter() - start
        first = median_ms(lambda: list_jobs(jobs, pb.ListJobsRequest()), args.repeat)
        start = time.perf_counter()
        pages = walk(jobs)
        walk_s = time.perf_counter() - start
        selective = median_ms(lambda: list_jobs(jobs, pb.ListJobsRequest(
            kind="cohort", states=[pb.JOB_STATE_SUCCEEDED])), args.repeat)
        by_key = median_ms(lambda: list_jobs(jobs, pb.ListJobsRequest(idempotency_key=key)),
                           args.repeat)

        def create(job_id: str) -> JobRecord:
            return jobs.create(job_id, "explain", REQUEST, idempotency_key="retry-me")

        submit_once(jobs, "retry-me", "explain", create)
        retry = median_ms(lambda: submit_once(jobs, "retry-me", "explain", create),
                          args.repeat)
        fresh = median_ms(lambda: submit_once(jobs, new_job_id(), "explain", create),
                          args.repeat)
        jobs.close()
    finally:
        server.stop()
    return {"jobs": args.jobs, "fill_s": round(fill_s, 2),
            "first_page_ms": round(first, 2), "pages": pages,
            "walk_s": round(walk_s, 3), "pages_per_s": round(pages / walk_s, 1),
            "selective_page_ms": round(selective, 2), "by_key_ms": round(by_key, 3),
            "retried_submit_ms": round(retry, 3), "new_submit_ms": round(fresh, 3),
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, "
                       f"Python {platform.python_version()}"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = measure(args, Path(folder))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "list_jobs.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# ListJobs and idempotency keys", "",
             f"Fresh redis-server, {result['jobs']} job records; median of {args.repeat} "
             f"calls. `.venv/bin/python benchmarks/bench_list_jobs.py --jobs {args.jobs} "
             f"--repeat {args.repeat}`; {result['machine']}.", "",
             "| measure | value |", "| --- | --- |",
             f"| first page of 100, no filter | {result['first_page_ms']} ms |",
             f"| every page walked ({result['pages']} pages) | {result['walk_s']} s, "
             f"{result['pages_per_s']} pages/s |",
             f"| first page, succeeded cohorts (~2% of jobs) | "
             f"{result['selective_page_ms']} ms |",
             f"| by idempotency key | {result['by_key_ms']} ms |",
             f"| submission retried under an existing key | "
             f"{result['retried_submit_ms']} ms |",
             f"| new submission (claim + create) | {result['new_submit_ms']} ms |"]
    (RESULTS / "list_jobs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
