"""OTP restart intensity: more than ``max_restarts`` restarts within ``period`` seconds escalates."""

from __future__ import annotations


def add_restart(
    history: tuple[float, ...], now: float, max_restarts: int, period: float
) -> tuple[tuple[float, ...], bool]:
    """Record a restart at ``now``; return the pruned history and whether intensity is exceeded.

    Mirrors ``supervisor:add_restart/1``: a restart older than ``period`` no longer counts,
    and exactly ``max_restarts`` restarts inside the window are still allowed.
    """
    recent = (now, *(t for t in history if now - t <= period))
    return recent, len(recent) > max_restarts
