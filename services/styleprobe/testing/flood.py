"""A flood of calls with a wrong token, and a correct client's rate beside it.

The flood runs in a process of its own (so it does not share this interpreter with the
client being measured)::

    python -m styleprobe.testing.flood ADDRESS --clients 200 --seconds 10

prints one JSON line: calls made, their status codes, seconds. :func:`correct_rate`
measures a correct client (sequential ``GetJob`` calls for an unknown job, answered
NOT_FOUND once authenticated). :func:`orchestrator` is an orchestrator process on a free
port with a local store, for these measurements.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import grpc

from styleprobe.api import pb, rpc
from styleprobe.healthcheck import grpc_serving
from styleprobe.testing.ports import free_port
from styleprobe.testing.process import ServerProcess, venv_program

UNKNOWN_JOB = "0" * 32
CHANNELS = 20  # the flood's connections; its callers share them


def orchestrator(workdir: Path, redis_url: str, token: str,
                 env: dict[str, str]) -> tuple[ServerProcess, str]:
    """A (not yet started) orchestrator on a free loopback port, and its address."""
    address = f"127.0.0.1:{free_port()}"
    settings = {"STYLEPROBE_REDIS_URL": redis_url, "STYLEPROBE_STORE": "local",
                "STYLEPROBE_STORE_DIR": str(workdir / "store"),
                "STYLEPROBE_API_TOKENS": token, "STYLEPROBE_GRPC_LISTEN": address,
                "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    command = [venv_program("styleprobe"), "--log-level", "INFO", "serve", "orchestrator"]
    process = ServerProcess("orchestrator", command, lambda: grpc_serving(address),
                            workdir / "orchestrator.log", {**env, **settings})
    return process, address


def correct_rate(address: str, token: str, seconds: float) -> dict[str, float]:
    """Sequential authenticated calls for ``seconds``: calls per second and latencies."""
    latencies = []
    metadata = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(address) as channel:
        stub = rpc.StyleProbeStub(channel)
        end = time.perf_counter() + seconds
        while (started := time.perf_counter()) < end:
            try:
                stub.GetJob(pb.GetJobRequest(job_id=UNKNOWN_JOB), metadata=metadata, timeout=30)
            except grpc.RpcError as exc:
                if exc.code() != grpc.StatusCode.NOT_FOUND:
                    raise
            latencies.append(time.perf_counter() - started)
    ordered = sorted(latencies)
    return {"calls": len(latencies), "per_s": len(latencies) / seconds,
            "p50_ms": 1000 * statistics.median(ordered),
            "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))]}


async def flood(address: str, token: str, clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` callers, each calling again as soon as it is answered, for ``seconds``."""
    codes: Counter[str] = Counter()
    metadata = (("authorization", f"Bearer {token}"),)
    channels = [grpc.aio.insecure_channel(address,
                                          options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(min(CHANNELS, clients))]
    started = time.perf_counter()
    end = started + seconds

    async def caller(stub: rpc.StyleProbeStub) -> None:
        while time.perf_counter() < end:
            try:
                await stub.GetJob(pb.GetJobRequest(job_id=UNKNOWN_JOB), metadata=metadata,
                                  timeout=30)
                codes["OK"] += 1
            except grpc.aio.AioRpcError as exc:
                codes[exc.code().name] += 1

    stubs = [rpc.StyleProbeStub(channels[i % len(channels)]) for i in range(clients)]
    await asyncio.gather(*(caller(stub) for stub in stubs))
    took = time.perf_counter() - started
    for channel in channels:
        await channel.close()
    calls = sum(codes.values())
    return {"clients": clients, "calls": calls, "per_s": calls / took, "codes": dict(codes),
            "seconds": took}


def start_flood(address: str, token: str, clients: int, seconds: float
                ) -> subprocess.Popen[bytes]:
    """The flood, in a process of its own (read its JSON line from stdout)."""
    return subprocess.Popen([sys.executable, "-m", "styleprobe.testing.flood", address,
                             "--token", token, "--clients", str(clients),
                             "--seconds", str(seconds)], stdout=subprocess.PIPE)


def flood_result(process: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    """The JSON line a :func:`start_flood` process printed (it is killed if late)."""
    try:
        out, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    if process.returncode:
        raise RuntimeError(f"the flood exited with code {process.returncode}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address")
    parser.add_argument("--token", default="not-the-token")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    result = asyncio.run(flood(args.address, args.token, args.clients, args.seconds))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
