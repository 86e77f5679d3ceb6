"""Triton restarted on the same ports: a call made while it is down waits and succeeds once
it is back, and the orchestrator's health check follows within its interval (issue 17)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
from grpc_health.v1 import health

import required
from styleprobe.backends import open_backend
from styleprobe.config import Settings
from styleprobe.jobs import JobStore
from styleprobe.orchestrator.health import HealthChecker, service_checks
from styleprobe.serving.tritonserver import TritonProcess
from styleprobe.storage.local import LocalStore

required.module("styleprobe.backends.triton")
OUTAGE_S = 10.0
INTERVAL_S = 2.0


def test_a_call_during_a_restart_waits_and_health_follows(
        two_set_repository: Path, triton_server: TritonProcess, tmp_path: Path) -> None:
    settings = Settings(model_repository=str(two_set_repository), backend="triton",
                        triton_url=triton_server.grpc_url, health_interval_s=INTERVAL_S)
    backend = open_backend(settings, "tiny")
    z = np.random.default_rng(0).standard_normal(
        (3, cast(Any, backend).model_set.z_dim)).astype(np.float32)
    expected = backend.mapping(z)
    checks = service_checks(settings, cast(JobStore, None), LocalStore(tmp_path))
    checker = HealthChecker(health.aio.HealthServicer(), {"triton": checks["triton"]},
                            INTERVAL_S)
    serving_at: list[float] = []  # when each round found Triton ready
    stop = threading.Event()

    def check_forever() -> None:
        async def rounds() -> None:
            while not stop.is_set():
                if not await checker.check_once():
                    serving_at.append(time.monotonic())
                await asyncio.sleep(INTERVAL_S)
        asyncio.run(rounds())

    outcome: dict[str, Any] = {}

    def call_during_the_outage() -> None:
        started = time.monotonic()
        try:
            outcome["w"] = backend.mapping(z)
        except Exception as exc:  # reported below
            outcome["error"] = exc
        outcome["waited_s"] = time.monotonic() - started

    checking = threading.Thread(target=check_forever, daemon=True)
    checking.start()
    caller = threading.Thread(target=call_during_the_outage, daemon=True)
    try:
        triton_server.stop()
        caller.start()
        time.sleep(OUTAGE_S)
        gave_up_early = "waited_s" in outcome
        triton_server.start(timeout_s=300)
        ready_at = time.monotonic()
        caller.join(60)
        deadline = time.monotonic() + 30
        while not [t for t in serving_at if t >= ready_at] and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        if not triton_server.is_running():  # other tests share this server
            triton_server.start(timeout_s=300)
        backend.close()
    checking.join(10)
    after = [t for t in serving_at if t >= ready_at]
    lag = after[0] - ready_at if after else float("inf")
    print(f"call waited {outcome.get('waited_s', float('nan')):.1f} s across a "
          f"{OUTAGE_S:g} s outage + restart; health SERVING {lag:.1f} s after Triton was ready")
    problems = []
    if gave_up_early or "error" in outcome:
        problems.append(f"the call made during the outage failed: {outcome.get('error')}")
    if lag > INTERVAL_S + 1.5:  # a round every INTERVAL_S, plus the check itself
        problems.append(f"health followed Triton only after {lag:.1f} s")
    assert not problems, problems
    np.testing.assert_array_equal(outcome["w"], expected)
    assert outcome["waited_s"] >= OUTAGE_S
