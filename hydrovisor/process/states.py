"""The system state machine (DOMAIN §6), pure: counters in, transitions out.

``RUNNING → DEGRADED`` after ``degraded_after`` consecutive errors, ``→ SAFE_MODE`` after
``safe_mode_after`` (or at once on a loop stall), ``SAFE_MODE → RECOVERING`` after
``recovery_cycles`` good cycles, ``RECOVERING → RUNNING`` after as many more; ``DEGRADED → RUNNING``
after ``recovery_cycles`` good cycles. An error while RECOVERING sends it back to SAFE_MODE (the
episode's clock keeps running); SAFE_MODE lasting longer than ``safe_mode_ttl`` since the episode
began, or an irrecoverable error, is ``FATAL``, which nothing clears.

Thread-safe: the state actor drives it, the HTTP layer reads :meth:`snapshot`.
"""

from __future__ import annotations

import enum
import secrets
import threading
import time
from collections.abc import Callable

import msgspec


class SystemState(enum.StrEnum):
    """Where the whole process stands."""

    RUNNING = "RUNNING"
    DEGRADED = "DEGRADED"
    SAFE_MODE = "SAFE_MODE"
    RECOVERING = "RECOVERING"
    FATAL = "FATAL"


ACTUATION_BLOCKED = frozenset({SystemState.SAFE_MODE, SystemState.FATAL})
"""States that refuse new actuation (except fail-safe OFF commands)."""


class Thresholds(msgspec.Struct, frozen=True):
    """How many errors / good cycles move the machine, and how long SAFE_MODE may last."""

    degraded_after: int = 3
    safe_mode_after: int = 5
    recovery_cycles: int = 3
    safe_mode_ttl: float = 900.0


class Transition(msgspec.Struct, frozen=True):
    """One state change; ``cause`` is the incident that triggered it (a loop stall, a chaos run)."""

    incident_id: str
    from_state: SystemState
    to_state: SystemState
    reason: str
    owner: str
    at: float  # unix time
    in_old_state_s: float
    cause: str | None = None


class Counters(msgspec.Struct, frozen=True):
    """The machine's counters, as ``GET /api/v1/system`` shows them."""

    consecutive_errors: int
    good_cycles: int
    errors_total: int
    cycles_total: int
    stalls_total: int
    transitions_total: int


class Snapshot(msgspec.Struct, frozen=True):
    """A consistent read of the machine."""

    state: SystemState
    since: float  # unix time of the last transition (or of the start)
    in_state_s: float
    counters: Counters
    last_transition: Transition | None
    last_error: str | None
    safe_episode_s: float | None  # time since SAFE_MODE was first entered, until RUNNING again


def new_incident_id(prefix: str) -> str:
    """``state-1f2e3d4c``: short, random, greppable."""
    return f"{prefix}-{secrets.token_hex(4)}"


class StateMachine:
    """The transitions of DOMAIN §6; each ``record_*`` returns the transition it caused, if any."""

    def __init__(
        self,
        thresholds: Thresholds,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.thresholds = thresholds
        self._clock = clock
        self._wall = wall
        self._lock = threading.Lock()
        self._state = SystemState.RUNNING
        self._since = clock()
        self._since_wall = wall()
        self._episode_since: float | None = None
        self._consecutive_errors = 0
        self._good_cycles = 0
        self._errors_total = 0
        self._cycles_total = 0
        self._stalls_total = 0
        self._transitions_total = 0
        self._last_transition: Transition | None = None
        self._last_error: str | None = None

    @property
    def state(self) -> SystemState:
        """The current state."""
        return self._state

    def record_error(self, reason: str, owner: str, cause: str | None = None) -> Transition | None:
        """A component failed (a failing health check, an actor crash, a lost status write)."""
        with self._lock:
            if self._state is SystemState.FATAL:
                return None
            self._errors_total += 1
            self._consecutive_errors += 1
            self._good_cycles = 0
            self._last_error = reason
            n, t = self._consecutive_errors, self.thresholds
            if self._state is SystemState.RECOVERING:
                return self._move(SystemState.SAFE_MODE, f"recovery failed: {reason}", owner, cause)
            if self._state in (SystemState.RUNNING, SystemState.DEGRADED) and n >= t.safe_mode_after:
                return self._move(SystemState.SAFE_MODE, f"consecutive_errors={n}: {reason}", owner, cause)
            if self._state is SystemState.RUNNING and n >= t.degraded_after:
                return self._move(SystemState.DEGRADED, f"consecutive_errors={n}: {reason}", owner, cause)
            return None

    def record_stall(self, reason: str, owner: str, cause: str | None = None) -> Transition | None:
        """The event loop stalled: straight to SAFE_MODE (recovery starts over if already there)."""
        with self._lock:
            if self._state is SystemState.FATAL:
                return None
            self._stalls_total += 1
            self._good_cycles = 0
            self._last_error = reason
            if self._state is SystemState.SAFE_MODE:
                return None
            return self._move(SystemState.SAFE_MODE, reason, owner, cause)

    def record_cycle(self, good: bool, owner: str = "recovery_cycle") -> Transition | None:
        """End of one evaluation cycle. ``good``: every check passed and nothing failed since the last one."""
        with self._lock:
            if self._state is SystemState.FATAL:
                return None
            self._cycles_total += 1
            expired = self._ttl_expired()
            if expired is not None:
                return self._move(SystemState.FATAL, expired, "safe_mode_ttl")
            if not good:
                self._good_cycles = 0
                return None
            self._consecutive_errors = 0
            self._good_cycles += 1
            if self._good_cycles < self.thresholds.recovery_cycles:
                return None
            cycles = f"recovery_cycles={self._good_cycles}"
            if self._state is SystemState.SAFE_MODE:
                return self._move(SystemState.RECOVERING, cycles, owner)
            if self._state in (SystemState.RECOVERING, SystemState.DEGRADED):
                return self._move(SystemState.RUNNING, f"{cycles}: recovered", owner)
            return None

    def record_fatal(self, reason: str, owner: str, cause: str | None = None) -> Transition | None:
        """An irrecoverable error: FATAL (the process must exit with code 10)."""
        with self._lock:
            if self._state is SystemState.FATAL:
                return None
            self._last_error = reason
            return self._move(SystemState.FATAL, reason, owner, cause)

    def snapshot(self) -> Snapshot:
        """Everything at once, under the lock."""
        with self._lock:
            now = self._clock()
            return Snapshot(
                state=self._state,
                since=self._since_wall,
                in_state_s=round(now - self._since, 3),
                counters=Counters(
                    consecutive_errors=self._consecutive_errors, good_cycles=self._good_cycles,
                    errors_total=self._errors_total, cycles_total=self._cycles_total,
                    stalls_total=self._stalls_total, transitions_total=self._transitions_total),
                last_transition=self._last_transition,
                last_error=self._last_error,
                safe_episode_s=None if self._episode_since is None else round(now - self._episode_since, 3),
            )

    def _ttl_expired(self) -> str | None:
        if self._state is not SystemState.SAFE_MODE or self._episode_since is None:
            return None
        age = self._clock() - self._episode_since
        if age <= self.thresholds.safe_mode_ttl:
            return None
        return f"SAFE_MODE outlived its TTL ({age:.1f}s > {self.thresholds.safe_mode_ttl:g}s)"

    def _move(self, to: SystemState, reason: str, owner: str, cause: str | None = None) -> Transition:
        now = self._clock()
        transition = Transition(
            incident_id=new_incident_id("state"), from_state=self._state, to_state=to, reason=reason,
            owner=owner, at=self._wall(), in_old_state_s=round(now - self._since, 3), cause=cause)
        if to is SystemState.SAFE_MODE and self._episode_since is None:
            self._episode_since = now
        elif to is SystemState.RUNNING:
            self._episode_since = None
        if to in (SystemState.SAFE_MODE, SystemState.RECOVERING, SystemState.RUNNING):
            self._good_cycles = 0
        if to is SystemState.RUNNING:
            self._consecutive_errors = 0
        self._state = to
        self._since = now
        self._since_wall = transition.at
        self._transitions_total += 1
        self._last_transition = transition
        return transition
