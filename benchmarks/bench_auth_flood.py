"""Benchmark: a correct client's rate under a flood of wrong-token calls (issue 18).

A real orchestrator (own process, local store, a fresh Redis) on loopback. A correct
client makes sequential GetJob calls alone for ``--alone`` seconds, then again while
``--clients`` closed-loop callers (another process) call with a wrong token for
``--seconds``. Reported: the correct client's calls/s and latencies alone and under the
flood, the flood's calls/s and codes, and the orchestrator's log lines about refused
calls (its reports come every second here).

    .venv/bin/python benchmarks/bench_auth_flood.py [--clients 200] [--seconds 10]
        [--label limited] [--orchestrator-pythonpath DIR]

``--orchestrator-pythonpath`` runs another checkout's package as the orchestrator (e.g.
the code before the limiter: ``git archive <commit> services | tar -x -C /tmp/old``, with
the generated ``services/styleprobe/v1`` copied in). Results are added, by ``--label``, to
benchmarks/results/auth_flood.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from styleprobe.testing.flood import correct_rate, flood_result, orchestrator, start_flood
from styleprobe.testing.redis import redis_server

RESULTS = Path(__file__).resolve().parent / "results"
TOKEN = "bench-token"


def measure(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    redis, url = redis_server(workdir)
    redis.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STYLEPROBE_")}
    env["STYLEPROBE_AUTH_LOG_INTERVAL_S"] = "1"
    if args.orchestrator_pythonpath:
        env["PYTHONPATH"] = args.orchestrator_pythonpath
    process, address = orchestrator(workdir, url, TOKEN, env)
    try:
        process.start(timeout_s=120)
        correct_rate(address, TOKEN, 0.5)
        alone = correct_rate(address, TOKEN, args.alone)
        log_before = process.log_path.stat().st_size
        flooding = start_flood(address, "not-the-token", args.clients, args.seconds)
        time.sleep(args.ramp)
        under = correct_rate(address, TOKEN, args.seconds - args.ramp - 1.0)
        flood = flood_result(flooding, timeout_s=args.seconds + 120)
        time.sleep(1.0)  # the limiter reports at least every second here
        lines, size = refusal_lines(process.log_path.read_bytes()[log_before:])
    finally:
        process.stop()
        redis.stop()
    return {"alone": alone, "under_flood": under, "flood": flood,
            "ratio": under["per_s"] / alone["per_s"], "refusal_log_lines": lines,
            "refusal_log_bytes": size,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def refusal_lines(log: bytes) -> tuple[int, int]:
    """Log lines about refused calls (one per call before the limiter; counts after it)
    and their bytes."""
    lines = [line for line in log.splitlines()
             if b'"UNAUTHENTICATED"' in line or b'"refused calls"' in line]
    return len(lines), sum(len(line) + 1 for line in lines)


def write(label: str, result: dict[str, Any]) -> None:
    path = RESULTS / "auth_flood.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[label] = result
    path.write_text(json.dumps(results, indent=2) + "\n")
    rows = ["| run | correct client alone | under the flood | ratio | flood calls/s | "
            "flood codes | log lines (bytes) about refusals |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        a, u, f = r["alone"], r["under_flood"], r["flood"]
        rows.append(f"| {name} | {a['per_s']:.1f}/s, p50 {a['p50_ms']:.1f} ms | "
                    f"{u['per_s']:.1f}/s, p50 {u['p50_ms']:.1f} ms, p95 {u['p95_ms']:.1f} ms | "
                    f"{r['ratio']:.2f} | {f['per_s']:.0f} ({f['clients']} clients) | "
                    f"{f['codes']} | {r['refusal_log_lines']} ({r['refusal_log_bytes']}) |")
    (RESULTS / "auth_flood.md").write_text(
        "# A correct client under a flood of wrong-token calls\n\n"
        "`.venv/bin/python benchmarks/bench_auth_flood.py --label LABEL` (see its docstring); "
        "loopback, one orchestrator process, GetJob calls of an unknown job.\n\n"
        + "\n".join(rows) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the flood")
    parser.add_argument("--alone", type=float, default=5.0,
                        help="seconds the correct client is measured alone")
    parser.add_argument("--ramp", type=float, default=2.0,
                        help="seconds of flood before the correct client is measured")
    parser.add_argument("--label", default="limited")
    parser.add_argument("--orchestrator-pythonpath", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-auth-flood-") as tmp:
        result = measure(args, Path(tmp))
    write(args.label, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
