"""Per-path state kept by the system: what introspection reads without asking any actor."""

from __future__ import annotations

import collections
import enum
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from hydrovisor.supervisors.mailbox import Mailbox

if TYPE_CHECKING:
    from hydrovisor.supervisors.context import ActorContext
    from hydrovisor.supervisors.exit import ExitReason
    from hydrovisor.supervisors.spec import ChildSpec, SupervisorFlags

RESTARTS_KEPT = 64  # restart times remembered per path (restart intensity reads the recent ones)

# One lock for the child lists of every cell: they change only when a supervisor starts or forgets
# a child, and a reader copies the list under it; a lock per cell was ~100 bytes x every actor.
_CHILDREN_LOCK = threading.Lock()


class CellState(enum.StrEnum):
    """Lifecycle of a path (not of one incarnation)."""

    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    STOPPING = "stopping"
    STOPPED = "stopped"


class Failure(msgspec.Struct, frozen=True):
    """The last abnormal exit of a path."""

    reason: str
    kind: str
    at: float  # unix seconds


class Cell:
    """One stable path: its mailbox (shared by incarnations) and what introspection shows.

    Mutated only by the owning supervisor's thread; read from any thread (single attribute
    reads and tuple swaps are atomic under the GIL, which is all a snapshot needs).

    One per live path (100,000 pooled actors in a process): slotted, and what most paths never
    use (restart history, a child list) is created on first use.
    """

    __slots__ = (
        "_children",
        "_restart_times",
        "actor_class",
        "consecutive_restarts",
        "ctx",
        "flags",
        "last_failure",
        "mailbox",
        "path",
        "restarts_total",
        "spec",
        "started_at",
        "state",
    )

    def __init__(self, path: str, spec: ChildSpec) -> None:
        self.path = path
        self.spec = spec
        self.mailbox = Mailbox(path)
        self.state = CellState.STARTING
        self.ctx: ActorContext | None = None
        self.actor_class = ""
        self.started_at = time.monotonic()
        # a deque of 64 slots is 624 bytes: only paths that restarted get one
        self._restart_times: collections.deque[float] | None = None
        self.restarts_total = 0
        self.consecutive_restarts = 0
        self.last_failure: Failure | None = None
        self.flags: SupervisorFlags | None = None
        # child paths in start order; a dict for O(1) add/remove with thousands of dynamic
        # children; None until the first child (leaf actors have none)
        self._children: dict[str, None] | None = None

    @property
    def name(self) -> str:
        """The child id (last path segment)."""
        return self.spec.id

    @property
    def children(self) -> tuple[str, ...]:
        """Paths of the children, in start order (a copy, safe to read from any thread)."""
        with _CHILDREN_LOCK:
            return () if self._children is None else tuple(self._children)

    def add_child(self, path: str) -> None:
        """Record a started child (owning supervisor only)."""
        with _CHILDREN_LOCK:
            if self._children is None:
                self._children = {}
            self._children[path] = None

    def remove_child(self, path: str) -> None:
        """Forget a child (owning supervisor only)."""
        with _CHILDREN_LOCK:
            if self._children is not None:
                self._children.pop(path, None)

    @property
    def restart_times(self) -> Sequence[float]:
        """Monotonic times of the last (up to 64) restarts, oldest first."""
        return () if self._restart_times is None else self._restart_times

    def record_failure(self, reason: ExitReason) -> None:
        """Remember an abnormal exit for introspection."""
        self.last_failure = Failure(reason=str(reason), kind=reason.kind.value, at=time.time())

    def record_restart(self) -> None:
        """Count one restart of this path."""
        if self._restart_times is None:
            self._restart_times = collections.deque(maxlen=RESTARTS_KEPT)
        self._restart_times.append(time.monotonic())
        self.restarts_total += 1
        self.consecutive_restarts += 1

    def restarts_within(self, period: float) -> int:
        """Restarts in the last ``period`` seconds."""
        now = time.monotonic()
        return sum(1 for t in self.restart_times if now - t < period)
