"""Refused calls, limited and counted.

A flood of calls with a wrong token must not slow the clients that have the right one,
nor fill the log. Each refused call takes a token from two buckets, one for its peer's
address and one for the token it presented (its fingerprint; "no token" is one key): while
both have tokens, the refusal is answered at once; once either is empty, the refusal is
held ``delay_s`` seconds before it is answered, so a client that keeps trying slows
itself down (a held call costs the server a sleeping coroutine, nothing more; at most
``max_held`` are held at a time). Calls with a valid token never touch the buckets.

Refusals are logged as counts, one line per interval (:meth:`RefusalLimiter.report`),
never one line each.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Callable

log = logging.getLogger("styleprobe.orchestrator.access")
MAX_KEYS = 10_000  # buckets kept per kind; the least recently used beyond are dropped
MAX_HELD = 1_000  # refusals held at once; beyond, they are answered at once
TOP_PEERS = 5  # peers named in a report line


class TokenBuckets:
    """A token bucket per key: ``rate`` tokens a second up to ``burst``. At most
    ``max_keys`` buckets are kept (the least recently used are dropped: they start full)."""

    def __init__(self, rate: float, burst: int, max_keys: int = MAX_KEYS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"need a rate > 0 and a burst >= 1, got {rate} and {burst}")
        self.rate, self.burst, self.max_keys, self.clock = rate, burst, max_keys, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> bool:
        """Take a token from ``key``'s bucket; False if it was empty."""
        now = self.clock()
        tokens, last = self._buckets.pop(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        taken = tokens >= 1.0
        self._buckets[key] = (tokens - 1.0 if taken else tokens, now)
        if len(self._buckets) > self.max_keys:
            self._buckets.popitem(last=False)
        return taken


def peer_address(peer: str) -> str:
    """The address of a gRPC peer string (``ipv4:10.0.0.7:51234`` -> ``10.0.0.7``)."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rpartition(":")[0].strip("[]")
    return peer


def token_key(token: str) -> str:
    """A presented token's bucket key: a short fingerprint, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:16] if token else "none"


class RefusalLimiter:
    """Buckets of refused calls per peer and per token, and their counts for the log."""

    def __init__(self, rate: float = 5.0, burst: int = 20, delay_s: float = 1.0,
                 log_interval_s: float = 30.0, max_held: int = MAX_HELD,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.peers = TokenBuckets(rate, burst, clock=clock)
        self.tokens = TokenBuckets(rate, burst, clock=clock)
        self.delay_s, self.log_interval_s, self.max_held = delay_s, log_interval_s, max_held
        self.clock = clock
        self.held = 0
        self._reasons: Counter[str] = Counter()
        self._peers: Counter[str] = Counter()
        self._delayed = 0
        self._since = clock()

    async def refuse(self, peer: str, token: str, reason: str) -> None:
        """Count one refused call (``reason``: why); return when it may be answered."""
        address = peer_address(peer)
        # both buckets pay for every refusal (no short circuit)
        within = self.peers.take(address) & self.tokens.take(token_key(token))
        self._reasons[reason] += 1
        self._peers[address] += 1
        if self.clock() - self._since >= self.log_interval_s:
            self.report()
        if within or self.delay_s <= 0 or self.held >= self.max_held:
            return
        self._delayed += 1
        self.held += 1
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.held -= 1

    def report(self) -> None:
        """Log the refusals counted since the last report (nothing if there were none)."""
        now = self.clock()
        if self._reasons:
            log.warning("refused calls", extra={
                "refused": sum(self._reasons.values()), "delayed": self._delayed,
                "reasons": dict(self._reasons), "peers": len(self._peers),
                "top_peers": dict(self._peers.most_common(TOP_PEERS)),
                "seconds": round(now - self._since, 1)})
        self._reasons.clear()
        self._peers.clear()
        self._delayed = 0
        self._since = now

    async def report_every_interval(self) -> None:
        """Report every ``log_interval_s`` until cancelled (then once more)."""
        try:
            while True:
                await asyncio.sleep(self.log_interval_s)
                self.report()
        finally:
            self.report()
