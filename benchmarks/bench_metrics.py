"""Benchmark: what recording a metric costs, per call, in one process (the orchestrator,
the embedded mode) and in prometheus-client's multiprocess mode (a Celery worker, whose
samples go to memory-mapped files), and what serving /metrics costs.

    .venv/bin/python benchmarks/bench_metrics.py [--calls 20000] [--repeats 5]

Writes benchmarks/results/metrics.md and metrics.json. The multiprocess numbers come from
a child process started with ``PROMETHEUS_MULTIPROC_DIR`` set, as a worker runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def measure(calls: int, repeats: int) -> dict[str, float]:
    """Microseconds per call of each helper, and milliseconds per /metrics page."""
    from styleprobe import metrics
    from styleprobe.testing.ports import free_port

    def stage() -> None:
        with metrics.stage_timer("render"):
            pass

    helpers = {
        "observe_backend_call": lambda: metrics.observe_backend_call("decode", 17, 0.01),
        "stage_timer": stage,
        "count_job": lambda: metrics.count_job("explain", "succeeded"),
        "observe_rpc": lambda: metrics.observe_rpc("/styleprobe.v1.StyleProbe/GetJob", "OK",
                                                   0.002),
    }
    result = {}
    for name, call in helpers.items():
        runs = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(calls):
                call()
            runs.append((time.perf_counter() - started) / calls * 1e6)
        result[f"{name}_us"] = statistics.median(runs)
    port = free_port()
    metrics.start_metrics_server(port, "127.0.0.1")
    runs = []
    for _ in range(repeats * 4):
        started = time.perf_counter()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as page:
            size = len(page.read())
        runs.append((time.perf_counter() - started) * 1e3)
    result["scrape_ms"] = statistics.median(runs)
    result["page_bytes"] = size
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.calls, args.repeats)))
        return
    modes = {}
    with tempfile.TemporaryDirectory() as folder:
        for mode, extra in (("one process", {}),
                            ("multiprocess", {"PROMETHEUS_MULTIPROC_DIR": folder})):
            env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
            out = subprocess.run([sys.executable, __file__, "--child", "--calls",
                                  str(args.calls), "--repeats", str(args.repeats)],
                                 env={**env, **extra}, capture_output=True, text=True,
                                 check=True).stdout
            modes[mode] = json.loads(out)
    record = {"calls": args.calls, "repeats": args.repeats, "python": platform.python_version(),
              "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared)",
              "modes": modes}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")
    names = [k for k in modes["one process"] if k.endswith("_us")]
    lines = ["# Metrics: the cost of recording and serving", "",
             f"`.venv/bin/python benchmarks/bench_metrics.py --calls {args.calls} "
             f"--repeats {args.repeats}`; {record['machine']}, Python {record['python']}. "
             "Median of the repeats.", "",
             "| | " + " | ".join(modes) + " |", "| --- |" + " --- |" * len(modes)]
    for name in names:
        lines.append(f"| `{name[:-3]}` (µs per call) | "
                     + " | ".join(f"{m[name]:.2f}" for m in modes.values()) + " |")
    lines.append("| one `/metrics` page (ms) | "
                 + " | ".join(f"{m['scrape_ms']:.1f}" for m in modes.values()) + " |")
    lines.append("| page size (bytes) | "
                 + " | ".join(str(m["page_bytes"]) for m in modes.values()) + " |")
    lines += ["", "An explanation records a few dozen of these calls (one per model request, "
              "stage and RPC): well under a millisecond, against the seconds it takes. "
              "Multiprocess mode writes each sample to a memory-mapped file, hence its "
              "higher cost per call."]
    (RESULTS / "metrics.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
