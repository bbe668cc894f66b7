"""``WorkflowActor``: one running workflow (``/zones/<uid>/wf-<id>``), the driver of its script.

The script (``two_tank``, ``irrigation``) is a generator of effects; this actor carries each one out
without ever blocking: commands and writes are piped to the loop and come back as messages, waits are a
condition re-evaluated on every :class:`ZoneObserved` the zone actor tells it (it watches the zone) plus
one timer. Every stage change, decision and command is persisted (the command before it is submitted),
and every decision is a zone event.

Failure paths, all ending in a compensating stop before the outcome is stored:

- the script fails (``Fail``), or raises (a bug: ``workflow_error``);
- an operator cancels (``Cancel``) or the zone's emergency stop latches (the node's
  ``emergency_stop_activated`` or ``POST .../emergency-stop``): ``cancelled`` / ``failed emergency_stop``;
- this actor crashes and is restarted, or the process dies and the zone adopts the workflow again: the
  new incarnation knows nothing it did not store, so it stops every pump and valve of the plant
  (confirmed) and then resumes *only* a resumable stage (whose first step is a probe that must find the
  plant stopped); otherwise it fails ``workflow_interrupted``;
- a node driving a pump this workflow may have on sends nothing for ``safety.pump_node_silence_s``: the
  server cannot see that pump's tank, so the workflow fails closed (``pump_node_silent``).

While the script waits on a command rather than on a condition of its own (a start whose reply is late or
lost), no stage condition watches the tanks: a pump that may be on whose source tank shows dry is stopped
at once beside the script (``pump_source_empty`` on the timeline); the script then sees the empty tank itself.
So is every pump that may be on when a cancel, an emergency stop or a silent node interrupts such a wait:
the compensation starts only once that command's result is in.

The compensating stop stops every role a start was sent to (confirmed or not: an unanswered start may
have run) that no DONE stop followed, pumps first (and at once, before any reply is awaited); a stop that
is never DONE makes the outcome ``failed <stage>_stop_not_confirmed``, whatever it would have been.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import msgspec

from hydrovisor.actors.zone import EMERGENCY_STOP_EVENT, SetWaterState, ZoneObserved
from hydrovisor.commands.submit import SubmitRequest
from hydrovisor.protocol import CLOCK_ERRORS
from hydrovisor.runtime.bridge import Outcome
from hydrovisor.runtime.timers import Timer
from hydrovisor.store.repos.workflows import CommandRef, Progress, StageRecord, WorkflowRecord
from hydrovisor.supervisors import ActorContext
from hydrovisor.workflows import catalog, steps
from hydrovisor.workflows.context import WorkflowContext
from hydrovisor.workflows.effects import (
    AnswerStops,
    Decide,
    Effect,
    Fail,
    Finish,
    Script,
    Send,
    Sent,
    Settle,
    Stage,
    Wait,
    Waited,
)
from hydrovisor.workflows.plane import WorkflowPlane
from hydrovisor.workflows.watcher import ZoneWatcher
from hydrovisor.zoneplane.spawn import zone_actor_path
from hydrovisor.zones.clock import real_seconds
from hydrovisor.zones.roles import PUMPS, VALVES, Role
from hydrovisor.zones.safety import CLEAN_TANK, SOLUTION_TANK, Tank, starts_actuator
from hydrovisor.zones.settings import ResolvedDevice

log = logging.getLogger(__name__)

STOP_RETRY_S = 2.0  # real seconds between sends of a stop that could not go out (the database, the broker)
STOP_RETRIES = 60
# refusals that no retry changes: the stop is reported as it is
PERMANENT_REFUSALS = frozenset({"role_not_configured", "node_not_found", "node_not_bound", "node_not_validated",
                                "node_zone_mismatch", "channel_not_actuator", "cmd_id_conflict"})
SAVE_RETRY_S = 1.0
INTERRUPTED = "workflow_interrupted"
CLOCK_RETRIES = 3  # per role and incarnation: a node whose clock stays wrong is left to the confirmed stop
TIMED_COMMANDS = frozenset({"run_pump", "dose"})  # they stop by themselves: DONE means the run is over
EMERGENCY_STOP = "emergency_stop"
PUMP_NODE_SILENT = "pump_node_silent"
PUMP_SOURCE_EMPTY = "pump_source_empty"
VIGIL_S = (0.05, 5.0)  # real seconds between checks of the pumps' nodes: an eighth of the silence, within these


class Cancel(msgspec.Struct, frozen=True):
    """An operator cancelled the workflow (stored as requested by the caller)."""


class EmergencyStop(msgspec.Struct, frozen=True):
    """The zone's emergency stop latched: fail now, after the compensating stop."""

    reason: str


class _Loaded(msgspec.Struct, frozen=True):
    outcome: Outcome


class _Sent(msgspec.Struct, frozen=True):
    seq: int
    outcome: Outcome


class _Terminal(msgspec.Struct, frozen=True):
    cmd_id: str
    outcome: Outcome


class _Timeout(msgspec.Struct, frozen=True):
    seq: int


class _Resend(msgspec.Struct, frozen=True):
    seq: int


class _Settled(msgspec.Struct, frozen=True):
    seq: int
    outcome: Outcome


class _Saved(msgspec.Struct, frozen=True):
    what: str
    outcome: Outcome


class _FinalStored(msgspec.Struct, frozen=True):
    outcome: Outcome


class _RetryFinal(msgspec.Struct, frozen=True):
    pass


class _DrySent(msgspec.Struct, frozen=True):
    cmd_id: str
    outcome: Outcome


class _Vigil(msgspec.Struct, frozen=True):
    """Time to check that the nodes of the pumps that may be on are still heard from."""


class _Interrupt(msgspec.Struct, frozen=True, kw_only=True):
    status: str  # failed | cancelled
    reason_code: str
    message: str


class WorkflowActor(ZoneWatcher):
    """See the module docstring."""

    def __init__(self, ctx: ActorContext, *, wf_id: str, zone_uid: str, plane: WorkflowPlane) -> None:
        super().__init__(ctx)
        self.wf_id = wf_id
        self.zone_uid = zone_uid
        self._plane = plane
        self._record: WorkflowRecord | None = None
        self._context: WorkflowContext | None = None
        self._script: Script | None = None
        self._stages: list[StageRecord] = []
        self._commands: list[CommandRef] = []
        self._maybe_on: set[Role] = set()  # roles a start went to that no DONE stop followed
        self._sensors_active = False
        self._seq = 0
        self._pending: Effect | None = None  # the Send or Wait the script waits on
        self._timer: Timer | None = None
        self._terminals: dict[str, str] = {}  # cmd_id -> terminal status, for commands sent without waiting
        # node events since the stage began: one that arrives while a command is on its way (no wait armed
        # yet) still ends the stage's next wait (a leak reported before the pump's DONE is not lost)
        self._stage_events: list[str] = []
        self._interrupt: _Interrupt | None = None  # why the script was (or is to be) abandoned
        self._compensating = False
        self._resuming = False
        self._done = False
        self._failed_water_state: str | None = None
        self._solution_started = False
        self._stop_retries = 0  # resends of the stop on its way (see _stop_not_sent)
        self._final: tuple[Progress, str | None, str | None] | None = None
        self._heard_since = 0.0  # zone time this incarnation began to listen: no node is silent before it
        self._stopped_beside: set[Role] = set()  # pumps stopped beside the script since their last start
        self._pending_cmd_id: str | None = None  # the cmd_id of the pending Send
        self._loose_stops: dict[str, Role] = {}  # stops sent without waiting, until an AnswerStops reports them
        self._clock_retries: dict[Role, int] = {}  # loose stops sent again after a clock refusal, by role

    # lifecycle ------------------------------------------------------------------------------------------

    def on_start(self) -> None:
        self.pipe_to_self(self._plane.load(self.wf_id), _Loaded)

    def on_stop(self) -> None:
        self._cancel_timer()
        super().on_stop()

    def on_failure(self, *_: Any) -> None:
        self._cancel_timer()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Loaded):
            self._loaded(message.outcome)
        elif isinstance(message, ZoneObserved):
            self._observed(message)
        elif isinstance(message, _Sent):
            if message.seq == self._seq and isinstance(self._pending, Send):
                self._pending_sent(message.outcome)
        elif isinstance(message, _Terminal):
            self._terminal(message)
        elif isinstance(message, _Timeout):
            if message.seq == self._seq and isinstance(self._pending, Wait):
                self._resume(Waited("timeout"))
        elif isinstance(message, _Settled):
            if message.seq == self._seq and isinstance(self._pending, Settle) and not self._done:
                self._resume(None)  # the previous incarnation's commands have ended (or timed out)
            elif message.seq == self._seq and isinstance(self._pending, AnswerStops) and not self._done:
                self._resume(self._loose_answered(message.outcome.value if message.outcome.ok else {}))
        elif isinstance(message, _Vigil):
            self._vigil()
        elif isinstance(message, _DrySent):
            self._dry_sent(message)
        elif isinstance(message, _Resend):
            if message.seq == self._seq and isinstance(self._pending, Send):
                immediate = self._send(self._pending)
                if immediate is not None:  # its role is no longer bound: the script hears so
                    self._resume(immediate)
        elif isinstance(message, Cancel):
            self._abandon(_Interrupt(status="cancelled", reason_code="cancelled", message="cancelled by an operator"))
        elif isinstance(message, EmergencyStop):
            self._abandon(_Interrupt(status="failed", reason_code=EMERGENCY_STOP, message=message.reason))
        elif isinstance(message, _Saved):
            if not message.outcome.ok:  # the next write carries everything again; the final one is retried
                log.warning("workflow %s: %s not stored (%s)", self.wf_id, message.what, message.outcome.error,
                            extra={"event": "workflow_write_failed", "zone_id": self.zone_uid})
        elif isinstance(message, _FinalStored):
            self._final_stored(message.outcome)
        elif isinstance(message, _RetryFinal):
            self._store_final()
        else:
            return super().on_receive(message)
        return None

    def _loaded(self, outcome: Outcome) -> None:
        if outcome.error is not None:
            raise outcome.error  # a crash: restarted, the next incarnation loads again
        record: WorkflowRecord | None = outcome.value
        if record is None or record.status != "running":
            self.stop()
            return
        self._record = record
        self._stages = list(record.stages)
        self._commands = list(record.commands)
        kind = catalog.KINDS[record.type]
        self._context = WorkflowContext(record.zone_uid, record.id, msgspec.convert(record.params, kind.params))
        self.watch_zone()
        self._heard_since = self._plane.clock.now()
        self._vigil()
        # nothing runs before the zone's first view arrives (its settings, devices and state)

    # inputs ---------------------------------------------------------------------------------------------

    def _observed(self, observed: ZoneObserved) -> None:
        ctx = self._context
        if ctx is None or self._done or not observed.ready:
            return
        first = ctx.observed is None
        ctx.observe(observed)
        if first:
            self._begin()
            return
        event = observed.event
        estop = observed.estop or (f"{EMERGENCY_STOP_EVENT} from {event.node_uid}"
                                   if event is not None and event.code == EMERGENCY_STOP_EVENT else None)
        if estop is not None and not self._compensating:
            self._abandon(_Interrupt(status="failed", reason_code=EMERGENCY_STOP, message=estop))
            return
        if event is not None:
            self._stage_events.append(event.code)
        self._guard_dry_run()
        if isinstance(self._pending, Wait):
            reason = self._wait_reason(self._pending, event.code if event is not None else None)
            if reason is not None:
                self._resume(Waited(reason))

    def _terminal(self, message: _Terminal) -> None:
        sent: Sent = message.outcome.value if message.outcome.ok else Sent(cmd_id=message.cmd_id, status="TIMEOUT")
        status = sent.status or "TIMEOUT"
        self._terminals[message.cmd_id] = status
        self._note_result(message.cmd_id, sent)
        self._retry_clock_refusal(message.cmd_id, sent)
        pending = self._pending
        if isinstance(pending, Wait) and pending.command == message.cmd_id:
            self._resume(Waited(f"command:{status}"))

    # the script -----------------------------------------------------------------------------------------

    def _begin(self) -> None:
        record, ctx = self._record, self._context
        assert record is not None and ctx is not None
        kind = catalog.KINDS[record.type]
        if self._stages:  # a new incarnation knows only what was stored: anything of the plant may be on
            self._maybe_on = set(steps.PLANT)
            self._sensors_active = True
        if record.cancel_requested:
            self._resuming = bool(self._stages)
            self._abandon(_Interrupt(status="cancelled", reason_code="cancelled", message="cancelled by an operator"))
            return
        if ctx.estop() is not None:
            self._resuming = bool(self._stages)
            self._abandon(_Interrupt(status="failed", reason_code=EMERGENCY_STOP, message=ctx.estop() or ""))
            return
        if not self._stages:
            self._script = kind.script(ctx, None)
            self._event("WORKFLOW_STARTED", "run", "workflow_started", {"params": record.params})
            self._advance(None)
            return
        # a new incarnation: everything this workflow may have started is stopped first (confirmed)
        self._resuming = True
        last = self._stages[-1]
        resume_at = last.name if last.resumable else None
        self._maybe_on = set(steps.PLANT)
        self._sensors_active = True
        self._compensating = True
        if resume_at is None:
            self._interrupt = _Interrupt(status="failed", reason_code=INTERRUPTED,
                                         message=f"interrupted in stage {last.name}, which cannot be resumed")
        self._event("WORKFLOW_RECOVERY", "retry" if resume_at else "fail",
                    "workflow_resumed" if resume_at else INTERRUPTED, {"stage": last.name})
        self._script = self._recovery(resume_at, tuple(c.cmd_id for c in self._commands if c.status is None))
        self._advance(None)

    def _recovery(self, then: str | None, in_flight: tuple[str, ...]) -> Script:
        """A new incarnation's compensation. A command the previous one submitted may still be on its way to
        the node: the compensation waits for it to end, or it could act after the stop (a pump started
        behind the compensation's back); the pumps are stopped blindly meanwhile (one may be running dry)."""
        if in_flight:
            yield from steps.stop_blindly(self._maybe_on)
            yield Settle(in_flight)
            self._maybe_on = set(steps.PLANT)  # a start on its way may have landed after the blind stop
        result: Finish = yield from self._compensation(then)
        return result

    def _compensation(self, then: str | None) -> Script:
        """Stop what may be on; then resume ``then`` (a resumable stage) or end as interrupted (after putting
        the type's ``restore`` roles back on: their fail-safe state)."""
        ctx, record = self._context, self._record
        assert ctx is not None and record is not None
        kind = catalog.KINDS[record.type]
        unconfirmed: list[Role] = yield from steps.compensate(sorted(self._maybe_on), ctx, self._sensors_active)
        stage = self._stages[-1].name if self._stages else kind.first_stage
        if unconfirmed:
            raise Fail(f"{stage}_stop_not_confirmed",
                       f"compensating stop of {', '.join(r.value for r in unconfirmed)} not confirmed")
        if then is None or self._interrupt is not None:
            yield from self._restore(kind, stage)
            interrupt = self._interrupt
            assert interrupt is not None
            raise _Ended(interrupt)
        self._compensating = False
        self._resuming = False
        result: Finish = yield from kind.script(ctx, then)
        return result

    def _restore(self, kind: catalog.Kind, stage: str) -> Script:
        """Put ``kind.restore`` roles back on; a refusal (the gate: an empty tank) is a decision, not a failure."""
        if kind.restore:
            yield from steps.confirm_loose_stops(stage)
        for role in kind.restore:
            sent: Sent = yield Send(role, "set_relay", {"state": 1})
            if not sent.done:
                yield Decide("skip", "restore_refused", {"role": role.value, "why": sent.why})
        return Finish("restored")

    def _advance(self, value: Any) -> None:
        """Run the script until it waits on a command or a condition, or ends."""
        script = self._script
        assert script is not None
        while True:
            self._pending = None
            try:
                effect = script.send(value)
            except StopIteration as stop:
                self._script_finished(stop.value)
                return
            except _Ended as ended:
                self._finish(ended.interrupt.status, ended.interrupt.reason_code, ended.interrupt.message)
                return
            except Fail as failed:
                self._script_failed(failed)
                return
            except Exception as exc:  # a bug in a script: contain it, stop the plant, say so
                log.exception("workflow %s: script raised", self.wf_id,
                              extra={"event": "workflow_script_error", "zone_id": self.zone_uid})
                self._script_failed(Fail("workflow_error", f"{type(exc).__name__}: {exc}"))
                return
            value = None
            if isinstance(effect, Stage):
                self._stage(effect)
            elif isinstance(effect, Decide):
                self._event("WORKFLOW_DECISION", effect.decision, effect.reason_code, dict(effect.details))
            elif isinstance(effect, Send):
                immediate = self._send(effect)
                if immediate is None:
                    return
                value = immediate
            elif isinstance(effect, Settle | AnswerStops):
                cmd_ids = list(effect.cmd_ids if isinstance(effect, Settle) else self._loose_stops)
                if not cmd_ids:
                    value = []
                    continue
                self._seq += 1
                seq = self._seq
                self._pending = effect
                self.pipe_to_self(self._plane.settle(cmd_ids), functools.partial(_Settled, seq))
                return
            else:
                reason = self._wait(effect)
                if reason is None:
                    return
                value = Waited(reason)

    def _loose_answered(self, statuses: dict[str, str]) -> list[Role]:
        """The roles of the loose stops not answered DONE (all of them when the answers are unknown)."""
        roles = {role for cmd_id, role in self._loose_stops.items() if statuses.get(cmd_id) != "DONE"}
        self._loose_stops.clear()
        return steps.stop_order(roles)

    def _resume(self, value: Any) -> None:
        self._cancel_timer()
        self._pending = None
        if self._interrupt is not None and not self._compensating:
            self._start_compensation()
            return
        self._advance(value)

    def _script_finished(self, finish: Finish) -> None:
        self._solution_started = finish.solution_started
        self._finish("completed", finish.reason_code, None, water_state=finish.water_state)

    def _script_failed(self, failed: Fail) -> None:
        restore = catalog.KINDS[self._record.type].restore if self._record is not None else ()
        if self._compensating or (not self._maybe_on and not self._sensors_active and not restore):
            interrupt = self._interrupt
            if interrupt is not None and self._compensating and not failed.reason_code.endswith("_stop_not_confirmed"):
                failed = Fail(interrupt.reason_code, interrupt.message)
            self._finish(self._status_for(failed), failed.reason_code, failed.message,
                         water_state=failed.water_state or "unknown")
            return
        self._interrupt = _Interrupt(status="failed", reason_code=failed.reason_code, message=failed.message)
        self._failed_water_state = failed.water_state
        self._start_compensation()

    def _status_for(self, failed: Fail) -> str:
        interrupt = self._interrupt
        if interrupt is not None and interrupt.status == "cancelled" and not failed.reason_code.endswith(
                "_stop_not_confirmed"):
            return "cancelled"
        return "failed"

    def _abandon(self, interrupt: _Interrupt) -> None:
        """Cancel / emergency stop: the script is abandoned, the compensating stop runs next."""
        if self._done:
            return
        if self._compensating:  # already stopping everything: end with this instead of resuming
            self._interrupt = self._interrupt or interrupt
            return
        self._interrupt = interrupt
        if isinstance(self._pending, Send):
            # a command is on its way: its result arrives first, then the compensation starts; a pump that
            # may be on is not left running meanwhile (the start may be the one whose reply is late)
            if not steps.is_stop(self._pending):
                for role in steps.stop_order(self._maybe_on & PUMPS - self._stopped_beside):
                    self._stop_beside(role, interrupt.reason_code, {"role": role.value})
            return
        self._cancel_timer()
        self._start_compensation()

    def _start_compensation(self) -> None:
        if self._script is not None:
            self._script.close()
        self._compensating = True
        self._script = self._compensation(then=None)
        self._advance(None)

    # effects --------------------------------------------------------------------------------------------

    def _stage(self, stage: Stage) -> None:
        now = self._plane.clock.now()
        if self._stages and self._stages[-1].ended_at is None:
            self._stages[-1].ended_at = now
            self._stages[-1].outcome = "ok"
        self._stages.append(StageRecord(name=stage.name, started_at=now, resumable=stage.resumable))
        self._stage_events.clear()
        self._event("WORKFLOW_STAGE", "run", f"stage_{stage.name}", {"stage": stage.name})
        self._save()

    def _send(self, send: Send) -> Sent | None:
        """Start a command; a result known at once (the role is not bound) is returned."""
        ctx, record = self._context, self._record
        assert ctx is not None and record is not None
        device = ctx.device(send.role)
        if device is None:
            return Sent(cmd_id=None, status=None, refused="role_not_configured",
                        message=f"{send.role.value} is not bound to a node channel")
        cmd_id, request = self._record_command(send.role, device, send.cmd, send.params, send.channel)
        if starts_actuator(send.cmd, send.params):
            self._stopped_beside.discard(send.role)
        if (send.role in PUMPS or send.role in VALVES) and starts_actuator(send.cmd, send.params) \
                and send.cmd not in TIMED_COMMANDS:
            # an unanswered start may have run: assume it did (a timed run stops by itself on the node, and a
            # relay stop to an idle dosing pump can only be answered NO_EFFECT, which nothing can confirm)
            self._maybe_on.add(send.role)
        if send.cmd == "activate_sensor_mode":
            self._sensors_active = True
        if not send.wait and steps.is_stop(send):
            self._loose_stops[cmd_id] = send.role
        self._seq += 1
        seq = self._seq
        self._pending = send
        self._pending_cmd_id = cmd_id
        self.pipe_to_self(self._plane.send(self.wf_id, self._progress(), request, send.wait),
                          lambda outcome: _Sent(seq, outcome))
        return None

    def _record_command(self, role: Role, device: ResolvedDevice, cmd: str, params: dict[str, Any],
                        channel: str | None = None) -> tuple[str, SubmitRequest]:
        """Number a command and add it to the record (stored before it is submitted); its id and request."""
        assert self._record is not None
        cmd_id = f"{self.wf_id}-{len(self._commands) + 1:03d}"
        stage = self._stages[-1].name if self._stages else "startup"
        channel = channel or device.channel
        self._commands.append(CommandRef(cmd_id=cmd_id, stage=stage, role=role.value, node_uid=device.node_uid,
                                         channel=channel, cmd=cmd, params=dict(params)))
        return cmd_id, SubmitRequest(cmd=cmd, node_uid=device.node_uid, channel=channel, params=dict(params),
                                     cmd_id=cmd_id, zone_uid=self.zone_uid, source=f"workflow:{self._record.type}",
                                     trace_id=self.wf_id)

    def _pending_sent(self, outcome: Outcome) -> None:
        send = self._pending
        assert isinstance(send, Send) and self._pending_cmd_id is not None
        cmd_id = self._pending_cmd_id
        if outcome.ok:
            sent: Sent = outcome.value
        else:  # the loop side failed (the database): the command may or may not have gone out
            sent = Sent(cmd_id=cmd_id, status=None, refused="command_outcome_unknown", message=str(outcome.error))
        self._note_result(cmd_id, sent)
        if self._stop_not_sent(send, sent):
            return
        if sent.refused is not None and send.role in self._maybe_on and starts_actuator(send.cmd, send.params) \
                and sent.refused != "command_outcome_unknown":
            self._maybe_on.discard(send.role)  # refused before it was stored: it never went out
        if not send.wait:
            self._follow(cmd_id, sent, send.params)
        self._resume(sent)

    def _stop_not_sent(self, send: Send, sent: Sent) -> bool:
        """A stop that could not go out for a reason of ours (the database or the broker down, too many
        commands in flight) is sent again every ``STOP_RETRY_S`` real seconds, ``STOP_RETRIES`` times, before
        the script hears of it: stopping must outlast an outage. True when a resend is scheduled."""
        transient = (sent.status is None and sent.refused not in PERMANENT_REFUSALS) or sent.status == "SEND_FAILED"
        if starts_actuator(send.cmd, send.params) or send.cmd == "state" or not transient or send.best_effort:
            self._stop_retries = 0
            return False
        if self._stop_retries >= STOP_RETRIES:
            self._stop_retries = 0
            return False
        self._stop_retries += 1
        if self._stop_retries == 1 or self._stop_retries % 10 == 0:
            log.warning("workflow %s: %s on %s could not go out (%s); sending it again", self.wf_id, send.cmd,
                        send.role.value, sent.why, extra={"event": "workflow_stop_resent", "zone_id": self.zone_uid,
                                                          "attempt": self._stop_retries})
        self._seq += 1
        self._timer = self.tell_self_after(STOP_RETRY_S, _Resend(self._seq))
        return True

    def _note_result(self, cmd_id: str, sent: Sent) -> None:
        for ref in self._commands:
            if ref.cmd_id == cmd_id:
                ref.status = sent.status or (f"REFUSED:{sent.refused}" if sent.refused else None)
                ref.error_code = sent.reason_code or sent.error_code
                role = Role(ref.role)
                stopping = not starts_actuator(ref.cmd, ref.params) and ref.cmd not in ("state", "activate_sensor_mode")
                if sent.done and (stopping or ref.cmd in TIMED_COMMANDS):
                    self._maybe_on.discard(role)  # confirmed stopped (a timed run is over when DONE)
                if sent.done and ref.cmd == "deactivate_sensor_mode":
                    self._sensors_active = False
                snapshot = (sent.details or {}).get("snapshot") if sent.done and ref.cmd == "state" else None
                if isinstance(snapshot, dict):  # the node's own word: what it shows off is confirmed off
                    off = {r for r, on in steps.snapshot_state(snapshot).items() if not on}
                    self._maybe_on -= off
                    # a loose stop answered before this snapshot is confirmed by it (one still unanswered is
                    # not: it may be published again after the probe)
                    for loose_id, loose_role in list(self._loose_stops.items()):
                        if loose_role in off and loose_id in self._terminals:
                            del self._loose_stops[loose_id]
                return

    def _wait(self, wait: Wait) -> str | None:
        """Arm a wait; a reason already true (an event of this stage included) is returned at once."""
        seen = next((code for code in self._stage_events if code in wait.events), None)
        if seen is not None:
            self._stage_events.clear()  # consumed: a later wait of the stage waits for a new one
            return f"event:{seen}"
        reason = self._wait_reason(wait, None)
        if reason is not None:
            return reason
        if wait.timeout_s <= 0:
            return "timeout"
        self._seq += 1
        self._pending = wait
        delay = real_seconds(self._plane.clock, wait.timeout_s)
        self._timer = self.tell_self_after(max(0.0, delay), _Timeout(self._seq))
        return None

    def _wait_reason(self, wait: Wait, event_code: str | None) -> str | None:
        if event_code is not None and event_code in wait.events:
            return f"event:{event_code}"
        if wait.command is not None and wait.command in self._terminals:
            return f"command:{self._terminals[wait.command]}"
        if wait.until is not None and self._context is not None:
            return wait.until(self._context)
        return None

    def _vigil(self) -> None:
        """Fail closed when a pump this workflow may have on is on a node not heard from for
        ``safety.pump_node_silence_s`` (zone time; the router's last traffic, heartbeats included); then check
        again in an eighth of that."""
        ctx = self._context
        if ctx is None or self._done:
            return
        limit = ctx.settings.safety.pump_node_silence_s
        now = self._plane.clock.now()
        if ctx.observed is not None and not self._compensating and self._interrupt is None:
            for role in steps.stop_order(self._maybe_on & PUMPS):
                device = ctx.device(role)
                if device is None:
                    continue
                silent = now - max(self._plane.last_heard(device.node_uid) or 0.0, self._heard_since)
                if silent > limit:
                    log.warning("workflow %s: %s's node %s silent for %.0f s; failing closed", self.wf_id,
                                role.value, device.node_uid, silent, extra={
                                    "event": PUMP_NODE_SILENT, "zone_id": self.zone_uid, "node_uid": device.node_uid})
                    self._event("WORKFLOW_DECISION", "fail", PUMP_NODE_SILENT, {
                        "role": role.value, "node_uid": device.node_uid, "silent_s": round(silent, 1)})
                    self._abandon(_Interrupt(status="failed", reason_code=PUMP_NODE_SILENT, message=(
                        f"{role.value} may be on and its node {device.node_uid} sent nothing for {silent:.0f} s")))
                    break
        low, high = VIGIL_S
        self.tell_self_after(min(high, max(low, real_seconds(self._plane.clock, limit) / 8)), _Vigil())

    def _guard_dry_run(self) -> None:
        """A pump that may be on, whose source tank shows dry while the script waits on a start, a probe or a
        dose (not on a stop, and not on a condition of its own, which watches the tanks): stopped now, beside
        the script (see the module docstring)."""
        ctx, pending = self._context, self._pending
        if ctx is None or self._done or self._compensating or not isinstance(pending, Send) or steps.is_stop(pending):
            return
        for role in steps.stop_order(self._maybe_on & PUMPS - self._stopped_beside):
            dry = next((tank for tank in self._sources(role) if ctx.level(tank.min_role) is False), None)
            if dry is not None:
                self._stop_beside(role, PUMP_SOURCE_EMPTY, {"role": role.value, "tank": dry.name})

    def _stop_beside(self, role: Role, reason_code: str, details: dict[str, Any]) -> None:
        """Stop ``role`` now, beside the script (which waits on another command), once per start; the stop
        goes out only after that command has (it must not overtake a start on its way)."""
        device = self._context.device(role) if self._context is not None else None
        if device is None or self._pending_cmd_id is None:
            return
        self._stopped_beside.add(role)
        self._event("WORKFLOW_DECISION", "stop", reason_code, details)
        self._send_loose_stop(role, device, self._pending_cmd_id)

    def _send_loose_stop(self, role: Role, device: ResolvedDevice, after: str) -> None:
        """Stop ``role`` without waiting, once the command ``after`` has gone out."""
        cmd_id, request = self._record_command(role, device, "set_relay", {"state": 0})
        self._loose_stops[cmd_id] = role
        self.pipe_to_self(self._plane.send_after(after, self.wf_id, self._progress(), request),
                          functools.partial(_DrySent, cmd_id))

    def _retry_clock_refusal(self, cmd_id: str, sent: Sent) -> None:
        """A loose stop the node refused for its clock is sent again at once: the router has told the node the
        time before the refusal reached us (a new process's first stops race the nodes' resync)."""
        role = self._loose_stops.get(cmd_id)
        device = self._context.device(role) if self._context is not None and role is not None else None
        if device is None or role is None or self._done or sent.error_code not in CLOCK_ERRORS:
            return
        tries = self._clock_retries.get(role, 0)
        if tries >= CLOCK_RETRIES:
            return
        self._clock_retries[role] = tries + 1
        self._event("WORKFLOW_DECISION", "retry", "stop_refused_for_clock", {"role": role.value, "cmd_id": cmd_id})
        self._send_loose_stop(role, device, cmd_id)

    def _sources(self, role: Role) -> tuple[Tank, ...]:
        """The tanks ``role`` draws from, as far as this workflow opened them."""
        assert self._context is not None
        single = self._context.settings.topology == "single_tank"
        if role is Role.PUMP_DRAIN or (role is Role.PUMP_MAIN and single):
            return (SOLUTION_TANK,)
        if role is not Role.PUMP_MAIN:
            return ()
        return tuple(tank for tank, valve in ((CLEAN_TANK, Role.VALVE_CLEAN_SUPPLY),
                                              (SOLUTION_TANK, Role.VALVE_SOLUTION_SUPPLY)) if valve in self._maybe_on)

    def _dry_sent(self, message: _DrySent) -> None:
        if not message.outcome.ok:  # not stored (the database): published without its row if it could be
            return
        sent: Sent = message.outcome.value
        self._note_result(message.cmd_id, sent)
        self._follow(message.cmd_id, sent, {"state": 0})

    def _follow(self, cmd_id: str, sent: Sent, params: dict[str, Any]) -> None:
        """A command sent without waiting: its terminal, known now or piped in once it comes."""
        if sent.status is not None and sent.status not in ("SENT", "ACK", "QUEUED"):
            self._terminals[cmd_id] = sent.status
            self._retry_clock_refusal(cmd_id, sent)
        elif sent.cmd_id is not None and sent.status is not None:
            self.pipe_to_self(self._plane.wait_terminal(cmd_id, params), lambda outcome: _Terminal(cmd_id, outcome))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # persistence ----------------------------------------------------------------------------------------

    def _progress(self, status: str = "running", reason_code: str | None = None,
                  message: str | None = None) -> Progress:
        stage = self._stages[-1].name if self._stages else "startup"
        return Progress(stage=stage, stages=[msgspec.structs.replace(s) for s in self._stages],
                        commands=[msgspec.structs.replace(c) for c in self._commands], status=status,
                        reason_code=reason_code, message=message)

    def _save(self) -> None:
        self.pipe_to_self(self._plane.save(self.wf_id, self._progress()), lambda outcome: _Saved("progress", outcome))

    def _finish(self, status: str, reason_code: str, message: str | None, *, water_state: str | None = None) -> None:
        if self._done:
            return
        kind = catalog.KINDS[self._record.type] if self._record is not None else None
        # a failure raises its own alert (no effect, a stop not confirmed) or the type's (every failure)
        alert = (_alert_for(reason_code) or (kind.alert if kind else None)) if status == "failed" else None
        self._done = True
        self._cancel_timer()
        if self._stages and self._stages[-1].ended_at is None:
            self._stages[-1].ended_at = self._plane.clock.now()
            self._stages[-1].outcome = "ok" if status == "completed" else status
            self._stages[-1].reason_code = None if status == "completed" else reason_code
        if status != "completed" and water_state is None:
            water_state = self._failed_water_state or "unknown"
        self._final = (self._progress(status, reason_code, message), water_state, alert)
        log.log(logging.INFO if status == "completed" else logging.WARNING, "workflow %s %s: %s", self.wf_id, status,
                reason_code, extra={"event": "workflow_ended", "zone_id": self.zone_uid, "reason_code": reason_code})
        self._store_final()

    def _store_final(self) -> None:
        record, final = self._record, self._final
        assert record is not None and final is not None
        progress, water_state, alert = final
        block = record.type == "correction" and progress.reason_code == "correction_no_effect"
        cfg = self._context.settings.correction if self._context is not None else None

        async def store() -> bool:
            return await self._plane.finish(record, progress, water_state, alert,
                                            cfg.fail_closed_s if block and cfg is not None else None,
                                            solution_started=self._solution_started)

        self.pipe_to_self(store(), _FinalStored)

    def _final_stored(self, outcome: Outcome) -> None:
        if not outcome.ok:
            log.warning("workflow %s: outcome not stored (%s); retrying", self.wf_id, outcome.error,
                        extra={"event": "workflow_write_failed", "zone_id": self.zone_uid})
            self.tell_self_after(SAVE_RETRY_S, _RetryFinal())
            return
        assert self._final is not None
        _, water_state, _ = self._final
        if water_state is not None:
            self.ctx.system.tell(zone_actor_path(self.zone_uid), SetWaterState(water_state))
        self.stop()

    def _event(self, event_type: str, decision: str, reason_code: str, details: dict[str, Any]) -> None:
        record = self._record
        details = {"workflow_id": self.wf_id, "type": record.type if record else None, **details}
        self.pipe_to_self(self._plane.event(self.zone_uid, event_type, details, decision=decision,
                                            reason_code=reason_code), lambda outcome: _Saved(event_type, outcome))


class _Ended(Exception):
    """The compensation of an interrupted workflow is over: end with the interrupt's status."""

    def __init__(self, interrupt: _Interrupt) -> None:
        super().__init__(interrupt.reason_code)
        self.interrupt = interrupt


def _alert_for(reason_code: str) -> str | None:
    if reason_code == "correction_no_effect":
        return "biz_correction_no_effect"
    if reason_code.endswith("_stop_not_confirmed"):
        return "biz_stop_not_confirmed"
    return None
