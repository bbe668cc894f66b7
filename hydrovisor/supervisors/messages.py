"""Messages a supervisor handles."""

from __future__ import annotations

from typing import ClassVar

import msgspec

from hydrovisor.supervisors.exit import ExitReason
from hydrovisor.supervisors.spec import ChildSpec


class ChildExited(msgspec.Struct, frozen=True):
    """Sent by a child's thread as its last act; ``generation`` tells stale reports apart."""

    internal: ClassVar[bool] = True

    child_id: str
    generation: int
    reason: ExitReason
    parent_generation: int = 0  # the supervisor incarnation that started the child


class CheckLiveness(msgspec.Struct, frozen=True):
    """Periodic tick from the timer service: look for hung children."""

    internal: ClassVar[bool] = True


class RestartDue(msgspec.Struct, frozen=True):
    """A backed-off restart whose delay elapsed."""

    internal: ClassVar[bool] = True

    child_ids: tuple[str, ...]
    token: int


class StartChild(msgspec.Struct, frozen=True):
    """Ask a dynamic supervisor to start one more child; replies with its path."""

    spec: ChildSpec


class StartChildren(msgspec.Struct, frozen=True):
    """Ask a dynamic supervisor to start many children at once (all launched, then all awaited);
    replies with a :class:`StartedChildren`. Nothing starts if one id is taken or the cap would be exceeded."""

    specs: tuple[ChildSpec, ...]


class StartedChildren(msgspec.Struct, frozen=True):
    """Reply to :class:`StartChildren`: the paths started, and ``(path, reason)`` of those that failed."""

    started: tuple[str, ...]
    failed: tuple[tuple[str, str], ...] = ()


class TerminateChild(msgspec.Struct, frozen=True):
    """Ask a supervisor to stop one child for good (its mailbox is closed)."""

    child_id: str


class KillChild(msgspec.Struct, frozen=True):
    """Stop a child's current incarnation as a failure (OTP ``exit(Pid, kill)``): it is
    restarted by policy and the kill counts toward restart intensity."""

    child_id: str
    reason: str
