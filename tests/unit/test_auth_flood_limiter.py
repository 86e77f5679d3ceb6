"""The refusal limiter's buckets, holds and count reports, on a fake clock."""

from __future__ import annotations

import asyncio
import logging

import pytest

from styleprobe.orchestrator.refusals import RefusalLimiter, TokenBuckets, peer_address, token_key


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    clock = Clock()
    buckets = TokenBuckets(rate=2.0, burst=3, clock=clock)
    assert [buckets.take("a") for _ in range(4)] == [True, True, True, False]
    assert buckets.take("b")  # another key has its own bucket
    clock.now += 0.5  # one token back
    assert [buckets.take("a") for _ in range(2)] == [True, False]
    clock.now += 100
    assert sum(buckets.take("a") for _ in range(10)) == 3  # never more than the burst


def test_buckets_are_bounded() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=2, clock=Clock())
    for key in ("a", "b", "c"):
        assert buckets.take(key)
    assert buckets.take("a")  # dropped as least recently used: it starts full again
    assert not buckets.take("c")


def test_peers_and_tokens_keys() -> None:
    assert peer_address("ipv4:10.0.0.7:51234") == "10.0.0.7"
    assert peer_address("ipv6:[::1]:443") == "::1"
    assert token_key("") == "none" and len(token_key("s3cret")) == 16
    assert "s3cret" not in token_key("s3cret")


def test_refusals_over_budget_are_held_and_logged_as_counts(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limiter = RefusalLimiter(rate=1.0, burst=2, delay_s=0.05, log_interval_s=60, clock=clock)
    held: list[float] = []

    async def refuse(peer: str, token: str) -> None:
        started = asyncio.get_running_loop().time()
        await limiter.refuse(peer, token, "invalid")
        held.append(asyncio.get_running_loop().time() - started)

    async def flood() -> None:
        for _ in range(4):
            await refuse("ipv4:10.0.0.7:1000", "wrong")
        await refuse("ipv4:10.0.0.8:1000", "other")  # a fresh peer and token

    with caplog.at_level(logging.INFO, "styleprobe.orchestrator.access"):
        asyncio.run(flood())
        assert [h >= 0.04 for h in held] == [False, False, True, True, False]
        assert not caplog.records  # nothing logged per call
        limiter.report()
    [line] = caplog.records
    assert line.message == "refused calls"
    assert (line.refused, line.delayed, line.peers) == (5, 2, 2)  # type: ignore[attr-defined]
    assert line.top_peers == {"10.0.0.7": 4, "10.0.0.8": 1}  # type: ignore[attr-defined]
    limiter.report()
    assert len(caplog.records) == 1  # nothing new: no line


def test_a_report_comes_once_the_interval_has_passed(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limiter = RefusalLimiter(rate=100.0, burst=100, log_interval_s=10, clock=clock)
    with caplog.at_level(logging.INFO, "styleprobe.orchestrator.access"):
        asyncio.run(limiter.refuse("ipv4:1.2.3.4:5", "", "missing"))
        clock.now += 11
        asyncio.run(limiter.refuse("ipv4:1.2.3.4:5", "", "missing"))
    assert [r.refused for r in caplog.records] == [2]  # type: ignore[attr-defined]
