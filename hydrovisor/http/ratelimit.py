"""Per-client token buckets (on the loop: no locking needed)."""

from __future__ import annotations

import math
import time


class RateLimiter:
    """``rate`` requests per second per client with bursts up to ``burst``."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, client: str) -> float:
        """Take one token; returns 0 when allowed, else the seconds to wait before retrying."""
        now = time.monotonic()
        tokens, stamp = self._buckets.get(client, (self._burst, now))
        tokens = min(self._burst, tokens + (now - stamp) * self._rate)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self._rate
        if len(self._buckets) >= self._max_clients and client not in self._buckets:
            self._buckets.clear()  # bounded memory; a reset only ever lets clients through
        self._buckets[client] = (tokens - 1.0, now)
        return 0.0

    @staticmethod
    def retry_after(wait: float) -> str:
        """``Retry-After`` header value (whole seconds, at least 1)."""
        return str(max(1, math.ceil(wait)))
