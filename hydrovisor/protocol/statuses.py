"""Command statuses and their transition rule (PROTOCOL.md §6, DOMAIN.md §1).

The rule in one place, so the store's guarded ``UPDATE ... WHERE status IN (allowed predecessors)`` and
in-memory checks cannot disagree:

- a status never moves down the rank ``QUEUED < SENT < ACK < terminal``; repeating the current status
  is not a transition (duplicate replies are ignored);
- a terminal status never changes — with one exception: ``SEND_FAILED → SENT``, because re-publishing
  the same ``cmd_id`` is allowed from ``SEND_FAILED`` (PROTOCOL.md §6). ``SEND_FAILED`` still counts
  as terminal (it ends a command unless someone re-publishes it, and a device reply cannot move it);
- anything below terminal may jump to any higher rank (``ACK`` is optional, and a fast ``ACK`` may beat
  the broker's acknowledgement, hence ``QUEUED → ACK``).
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "DEVICE_REPORTABLE",
    "NODE_STATUSES",
    "SERVER_STATUSES",
    "TERMINAL",
    "CommandStatus",
    "allowed_predecessors",
    "can_transition",
    "is_success",
    "is_terminal",
    "parse_status",
    "rank",
]


class CommandStatus(StrEnum):
    """Lifecycle status of a command; the value is the wire/database spelling."""

    QUEUED = "QUEUED"
    SENT = "SENT"
    ACK = "ACK"
    DONE = "DONE"
    NO_EFFECT = "NO_EFFECT"
    ERROR = "ERROR"
    INVALID = "INVALID"
    BUSY = "BUSY"
    TIMEOUT = "TIMEOUT"
    SEND_FAILED = "SEND_FAILED"


_S = CommandStatus

TERMINAL: frozenset[CommandStatus] = frozenset(
    {_S.DONE, _S.NO_EFFECT, _S.ERROR, _S.INVALID, _S.BUSY, _S.TIMEOUT, _S.SEND_FAILED}
)
"""Statuses that end a command (only ``SEND_FAILED`` may still move, to ``SENT``)."""

NODE_STATUSES: frozenset[CommandStatus] = frozenset(
    {_S.ACK, _S.DONE, _S.NO_EFFECT, _S.ERROR, _S.INVALID, _S.BUSY}
)
"""Statuses a node sends in ``command_response``."""

DEVICE_REPORTABLE: frozenset[CommandStatus] = NODE_STATUSES | {_S.TIMEOUT}
"""What the decoder accepts from a device: ``TIMEOUT`` is in the device schema though no device sends it."""

SERVER_STATUSES: frozenset[CommandStatus] = frozenset({_S.QUEUED, _S.SENT, _S.SEND_FAILED, _S.TIMEOUT})
"""Statuses only the server assigns."""

_RANK: dict[CommandStatus, int] = {_S.QUEUED: 0, _S.SENT: 1, _S.ACK: 2} | {s: 3 for s in TERMINAL}


def rank(status: CommandStatus) -> int:
    """0 for QUEUED, 1 SENT, 2 ACK, 3 any terminal."""
    return _RANK[status]


def is_terminal(status: CommandStatus) -> bool:
    """True for the statuses in ``TERMINAL``."""
    return status in TERMINAL


def is_success(status: CommandStatus) -> bool:
    """Only ``DONE`` is success for a command that must change something."""
    return status is _S.DONE


def can_transition(current: CommandStatus, target: CommandStatus) -> bool:
    """May a command in ``current`` be moved to ``target``? See the module docstring for the rule."""
    if current is target:
        return False
    if current is _S.SEND_FAILED and target is _S.SENT:
        return True  # re-publish of the same cmd_id
    if current in TERMINAL:
        return False
    return _RANK[target] > _RANK[current]


_PREDECESSORS: dict[CommandStatus, frozenset[CommandStatus]] = {
    target: frozenset(s for s in CommandStatus if can_transition(s, target)) for target in CommandStatus
}


def allowed_predecessors(target: CommandStatus) -> frozenset[CommandStatus]:
    """The statuses from which ``target`` may be reached: the ``WHERE status IN (...)`` of a guarded
    update. Empty for ``QUEUED`` (only ever inserted)."""
    return _PREDECESSORS[target]


def parse_status(raw: object) -> CommandStatus | None:
    """The status named by ``raw`` (whitespace and case tolerated), or None."""
    if not isinstance(raw, str):
        return None
    try:
        return CommandStatus(raw.strip().upper())
    except ValueError:
        return None
