"""How hard the notifier tries: retry backoff, attempts before the DLQ, batch, poll and HTTP timing."""

from __future__ import annotations

import random
from collections.abc import Callable

import msgspec


class DeliveryPolicy(msgspec.Struct, frozen=True):
    """Defaults follow DOMAIN §1: backoff ``min(300 s, 2^n s)`` ±10 %, 10 attempts, then the DLQ.

    ``base``/``cap``/``max_attempts`` are parameters so tests can use tiny values.
    """

    base: float = 1.0  # seconds; delay after the n-th failed attempt = min(cap, base * 2**n)
    cap: float = 300.0
    jitter: float = 0.1  # ± fraction applied to the delay
    max_attempts: int = 10  # failed attempts before the notification is dead-lettered
    timeout: float = 5.0  # seconds per webhook POST (all URLs of one notification run concurrently)
    batch_size: int = 10  # notifications claimed (and leased) per query
    poll_interval: float = 0.5
    counts_interval: float = 2.0  # how often the pending/DLQ gauges are refreshed
    lease_margin: float = 30.0  # added to the worst-case batch time, see ``lease``

    def __post_init__(self) -> None:
        if min(self.base, self.cap, self.timeout, self.poll_interval, self.counts_interval) <= 0:
            raise ValueError("base, cap, timeout, poll_interval and counts_interval must be > 0")
        if self.lease_margin < 0:
            raise ValueError("lease_margin must be >= 0")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        if self.max_attempts < 1 or self.batch_size < 1:
            raise ValueError("max_attempts and batch_size must be >= 1")

    @property
    def lease(self) -> float:
        """Seconds a claimed batch stays invisible to other claimers.

        The batch is delivered one notification after the other, each bounded by ``timeout``
        (plus its bookkeeping), so the lease outlasts the worst case with a margin. It is also
        how long a batch claimed by an instance that died waits before another one retries it.
        """
        return self.batch_size * (self.timeout + 1.0) + self.lease_margin

    def delay(self, failed_attempts: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds before the next attempt after ``failed_attempts`` (>= 1) failures."""
        raw = min(self.cap, self.base * 2.0 ** min(failed_attempts, 64))
        return raw * (1.0 + self.jitter * (2.0 * rand() - 1.0))

    def exhausted(self, failed_attempts: int) -> bool:
        """True once the notification has failed ``max_attempts`` times: it goes to the DLQ."""
        return failed_attempts >= self.max_attempts
