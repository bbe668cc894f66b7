"""Child specifications, the OTP way: small, validated, immutable."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    import pykka

    from hydrovisor.supervisors.context import ActorContext

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")


class Restart(enum.StrEnum):
    """When a child that exited is started again."""

    PERMANENT = "permanent"  # always
    TRANSIENT = "transient"  # only after an abnormal exit
    TEMPORARY = "temporary"  # never


class Strategy(enum.StrEnum):
    """Which siblings restart together with a failed child."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class Execution(enum.StrEnum):
    """How a child's incarnations run."""

    THREAD = "thread"  # its own OS thread: may block (supervisors, workers that wait on I/O)
    POOL = "pool"  # turns on the system's worker pool: must never block; thousands are cheap


class Backoff(msgspec.Struct, frozen=True):
    """Delay before restart attempt n (1-based): ``min(maximum, initial * factor**(n-1))``.

    The attempt counter resets once the child has run for ``reset_after`` seconds.
    """

    initial: float = 0.1
    maximum: float = 10.0
    factor: float = 2.0
    reset_after: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before the given consecutive restart attempt."""
        return float(min(self.maximum, self.initial * self.factor ** max(0, attempt - 1)))


StartFn = Callable[["ActorContext"], "pykka.ActorRef[Any]"]


class ChildSpec(msgspec.Struct, frozen=True):
    """How a supervisor starts, restarts and stops one child.

    ``start`` receives the child's :class:`ActorContext` and must start exactly one
    :class:`SupervisedActor` with it (``lambda ctx: MyActor.start(ctx, ...)``).
    """

    id: str
    start: StartFn
    restart: Restart = Restart.PERMANENT
    shutdown_timeout: float = 5.0
    start_timeout: float = 10.0
    hang_timeout: float | None = 30.0
    backoff: Backoff | None = None
    kind: str = "worker"
    execution: Execution = Execution.THREAD

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise ValueError(f"invalid child id {self.id!r}: use [A-Za-z0-9_.:@-], 1-128 chars")
        for name in ("shutdown_timeout", "start_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 for child {self.id!r}")
        if self.hang_timeout is not None and self.hang_timeout <= 0:
            raise ValueError(f"hang_timeout must be > 0 or None for child {self.id!r}")
        if self.kind == "supervisor" and self.execution is Execution.POOL:
            raise ValueError(f"supervisor {self.id!r} waits for its children: it runs on its own thread")


class SupervisorFlags(msgspec.Struct, frozen=True):
    """Restart strategy and intensity of one supervisor (OTP ``sup_flags``)."""

    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = 3
    period: float = 5.0
    dynamic: bool = False
    max_children: int | None = None
    liveness_interval: float = 1.0

    def __post_init__(self) -> None:
        if self.max_restarts < 0:
            raise ValueError("max_restarts must be >= 0")
        if self.period <= 0:
            raise ValueError("period must be > 0")
        if self.max_children is not None and self.max_children < 1:
            raise ValueError("max_children must be >= 1 or None")
        if self.dynamic and self.strategy is not Strategy.ONE_FOR_ONE:
            raise ValueError("dynamic supervisors use one_for_one")


def supervisor_spec(
    child_id: str,
    flags: SupervisorFlags,
    children: Sequence[ChildSpec] | Callable[[], Sequence[ChildSpec]] = (),
    *,
    restart: Restart = Restart.PERMANENT,
    shutdown_timeout: float = 30.0,
) -> ChildSpec:
    """Child spec of a nested supervisor (no hang probe: it blocks while stopping children)."""
    from hydrovisor.supervisors.supervisor import Supervisor  # noqa: PLC0415 - import cycle

    return ChildSpec(
        id=child_id,
        start=lambda ctx: Supervisor.start(ctx, flags, children),
        restart=restart,
        shutdown_timeout=shutdown_timeout,
        hang_timeout=None,
        kind="supervisor",
    )
