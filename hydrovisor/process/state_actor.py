"""``/system/state``: the one writer of the state machine.

Reports (errors, stalls, fatal errors) and evaluation cycles arrive as messages from any thread —
the cycle tick comes from the loop guard's thread, so the machine keeps evaluating (and SAFE_MODE's
TTL keeps running) while the loop is stuck. The machine itself lives outside the actor, so a crash
of this actor restarts it with the state intact.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec

from hydrovisor.process.states import StateMachine, Transition
from hydrovisor.supervisors import ActorContext, SupervisedActor

STATE_PATH = "/system/state"


class Cycle(msgspec.Struct, frozen=True):
    """Evaluate the component checks once."""


class ReportError(msgspec.Struct, frozen=True):
    """A component failed."""

    reason: str
    owner: str
    cause: str | None = None


class LoopStalled(msgspec.Struct, frozen=True):
    """The loop guard saw a stall (incident already opened, dump taken)."""

    incident_id: str
    blocked_s: float


class ReportFatal(msgspec.Struct, frozen=True):
    """An irrecoverable error: FATAL."""

    reason: str
    owner: str
    cause: str | None = None


Checks = Callable[[], list[str]]  # the failing checks' reasons; empty when all pass
OnTransition = Callable[[Transition], None]


class SystemStateActor(SupervisedActor):
    """Applies reports and cycles to the machine; hands every transition to ``on_transition``."""

    def __init__(self, ctx: ActorContext, machine: StateMachine, checks: Checks, on_transition: OnTransition) -> None:
        super().__init__(ctx)
        self._machine = machine
        self._checks = checks
        self._on_transition = on_transition
        self._failed_since_cycle = False

    def on_receive(self, message: Any) -> None:
        if isinstance(message, Cycle):
            self._cycle()
        elif isinstance(message, ReportError):
            self._failed_since_cycle = True
            self._apply(self._machine.record_error(message.reason, message.owner, message.cause))
        elif isinstance(message, LoopStalled):
            self._failed_since_cycle = True
            reason = f"loop_stall_detected ({message.blocked_s:.2f}s)"
            self._apply(self._machine.record_stall(reason, "loop_guard", message.incident_id))
        elif isinstance(message, ReportFatal):
            self._apply(self._machine.record_fatal(message.reason, message.owner, message.cause))

    def _cycle(self) -> None:
        failing = self._checks()
        if failing:
            self._apply(self._machine.record_error("; ".join(failing), "health_cycle"))
        good = not failing and not self._failed_since_cycle
        self._failed_since_cycle = False
        self._apply(self._machine.record_cycle(good))

    def _apply(self, transition: Transition | None) -> None:
        if transition is not None:
            self._on_transition(transition)
