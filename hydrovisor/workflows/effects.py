"""What a workflow script yields to its driver, and what it gets back.

A script is a generator: it yields an effect, the driver carries it out (asynchronously, persisting
what must survive) and sends the result back in. Scripts stay sequential and pure: no I/O, no clock,
no actors; a unit test can drive one with plain values.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

from hydrovisor.zones.roles import Role


@dataclass(frozen=True)
class Stage:
    """A new stage begins (the previous one ends ``ok``); ``resumable``: after a crash or a restart the
    workflow may start this stage again, once everything is stopped (confirmed) and a probe matches."""

    name: str
    resumable: bool = False


@dataclass(frozen=True)
class Send:
    """Send ``cmd`` to the channel bound to ``role`` through the one command path (gate included).

    ``channel`` overrides the role's channel (sensor mode goes to the node's ``system`` channel).
    ``wait``: the result is the terminal status; else it comes back once the command is SENT and its
    terminal can be awaited with :class:`Wait` (``command``). ``best_effort``: a stop that could not go
    out is not sent again (a durable stop follows it); without it the driver resends a stop until it is out.
    """

    role: Role
    cmd: str
    params: dict[str, Any] = field(default_factory=dict)
    channel: str | None = None
    wait: bool = True
    best_effort: bool = False


@dataclass(frozen=True)
class Sent:
    """The result of :class:`Send`: the stored status (terminal when waited), or why it was refused
    (``refused``: a machine code such as ``pump_safety_blocked`` with the gate's ``reason_code``)."""

    cmd_id: str | None
    status: str | None
    error_code: str | None = None
    details: dict[str, Any] | None = None
    refused: str | None = None
    reason_code: str | None = None
    message: str | None = None

    @property
    def done(self) -> bool:
        """Only DONE confirms a mutating step (DOMAIN §1)."""
        return self.status == "DONE"

    @property
    def why(self) -> str:
        """The failure's most specific code."""
        return self.reason_code or self.refused or self.error_code or self.status or "unknown"


Condition = Callable[[Any], str | None]
"""Given the script's context, a reason to stop waiting, or None."""


@dataclass(frozen=True)
class Wait:
    """Wait until ``until`` gives a reason (evaluated on every change of the zone), one of ``events``
    arrives, the command ``command`` ends, or ``timeout_s`` zone seconds pass."""

    timeout_s: float
    until: Condition | None = None
    events: frozenset[str] = frozenset()
    command: str | None = None


@dataclass(frozen=True)
class Settle:
    """Wait until every command in ``cmd_ids`` has ended (or its timeout and a grace have passed): commands
    an earlier incarnation submitted may still be on their way to the node."""

    cmd_ids: tuple[str, ...]


@dataclass(frozen=True)
class AnswerStops:
    """Wait until every stop this workflow sent without waiting for it (blindly, or beside the script) is
    answered; the value is the roles such a stop of which was not answered DONE (each stop reported once)."""


@dataclass(frozen=True)
class Waited:
    """Why a :class:`Wait` ended: the condition's reason, ``event:<code>``, ``command:<status>`` or
    ``timeout``."""

    reason: str


@dataclass(frozen=True)
class Decide:
    """A decision (run|skip|retry|fail) with its reason code: a zone event."""

    decision: str
    reason_code: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Finish:
    """What a script returns: the workflow completed (``water_state``: what it leaves the zone in;
    ``solution_started``: the zone's solution is new from now on)."""

    reason_code: str
    water_state: str | None = None
    solution_started: bool = False


class Fail(Exception):
    """Raised by a script: the workflow fails with ``reason_code`` (after the driver's compensating stop)."""

    def __init__(self, reason_code: str, message: str = "", *, water_state: str | None = None) -> None:
        super().__init__(message or reason_code)
        self.reason_code = reason_code
        self.message = message or reason_code
        self.water_state = water_state


Effect = Stage | Send | Wait | Settle | AnswerStops | Decide
Script = Generator[Effect, Any, Finish]
