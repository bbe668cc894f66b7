"""Per-path state kept by the system: what introspection reads without asking any actor."""

from __future__ import annotations

import collections
import enum
import threading
import time
from typing import TYPE_CHECKING

import msgspec

from hydrovisor.supervisors.mailbox import Mailbox

if TYPE_CHECKING:
    from hydrovisor.supervisors.context import ActorContext
    from hydrovisor.supervisors.exit import ExitReason
    from hydrovisor.supervisors.spec import ChildSpec, SupervisorFlags


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
    """

    def __init__(self, path: str, spec: ChildSpec) -> None:
        self.path = path
        self.spec = spec
        self.mailbox = Mailbox(path)
        self.state = CellState.STARTING
        self.ctx: ActorContext | None = None
        self.actor_class = ""
        self.started_at = time.monotonic()
        self.restart_times: collections.deque[float] = collections.deque(maxlen=64)
        self.restarts_total = 0
        self.consecutive_restarts = 0
        self.last_failure: Failure | None = None
        self.flags: SupervisorFlags | None = None
        # child paths in start order; a dict for O(1) add/remove with thousands of dynamic children
        self._children: dict[str, None] = {}
        self._children_lock = threading.Lock()

    @property
    def name(self) -> str:
        """The child id (last path segment)."""
        return self.spec.id

    @property
    def children(self) -> tuple[str, ...]:
        """Paths of the children, in start order (a copy, safe to read from any thread)."""
        with self._children_lock:
            return tuple(self._children)

    def add_child(self, path: str) -> None:
        """Record a started child (owning supervisor only)."""
        with self._children_lock:
            self._children[path] = None

    def remove_child(self, path: str) -> None:
        """Forget a child (owning supervisor only)."""
        with self._children_lock:
            self._children.pop(path, None)

    def record_failure(self, reason: ExitReason) -> None:
        """Remember an abnormal exit for introspection."""
        self.last_failure = Failure(reason=str(reason), kind=reason.kind.value, at=time.time())

    def record_restart(self) -> None:
        """Count one restart of this path."""
        self.restart_times.append(time.monotonic())
        self.restarts_total += 1
        self.consecutive_restarts += 1

    def restarts_within(self, period: float) -> int:
        """Restarts in the last ``period`` seconds."""
        now = time.monotonic()
        return sum(1 for t in self.restart_times if now - t < period)
