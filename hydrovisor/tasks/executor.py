"""Executing one task through the zone's own paths: :meth:`TaskExecutor.execute` turns a :class:`TaskOrder` into a
:class:`Outcome`. The dispatcher calls it on the loop; it never blocks the loop and never asks an actor
synchronously (the workflow runtime, the command submitter and the zone runtime go through the bridge).

What each task type does:

- ``irrigation {duration_s}`` starts the ``irrigation`` workflow (two-tank), ``solution_change`` the ``water_change``
  workflow (single-tank), both through :meth:`WorkflowRuntime.start`, i.e. the same checks as an operator's start
  (ready water, emergency stop, the safety gate). The payload is the workflow's params, refused when they do not fit.
- ``lighting {state, mode, pwm_level}`` is one command to the zone's ``light`` role: ``set_relay`` 1/0, or with
  ``mode=pwm`` ``set_pwm`` (``pwm_level`` percent scaled to the node's 0..255; off is ``set_pwm`` 0). A relay
  switch the zone already shows confirmed in the asked state is ``completed``/``skip`` (nothing to do). The payload
  is the contract's :class:`~hydrovisor.tasks.contract.LightingPayload`.
- ``diagnostics`` is a ``state`` probe of the zone's ``storage_state`` node.
- ``ventilation`` and ``mist`` have no device role in a zone yet: ``failed``/``fail``, ``no_device_for_task``, not
  ``action_required`` (no setting makes them work). A lighting or diagnostics task whose zone lacks the role is
  the same reason with ``action_required`` (binding a node with that channel fixes it).

Outcome rules (DOMAIN §5), chosen for an operator who must trust the numbers:

- Only DONE (a completed workflow counts) sets ``command_effect_confirmed``; ``command_submitted`` means a command
  reached the broker (for a workflow: any of its commands).
- Refusals that a person must resolve are ``failed``/``fail`` with ``action_required``: safety locks, an emergency
  stop, a misconfigured zone (no role, wrong topology), an invalid payload. The reason code is the gate's own
  (``safety_lock_biz_overcurrent`` ...), the machine code of the refusal is ``error_code``.
- **Irrigation in a zone whose water is not ``ready``** is ``failed``/``fail``/``zone_not_ready`` with
  ``action_required``, not a ``skip``: the plants were not watered, and a skip would count as a success in every
  SLI. Nor a retry: nothing brings a two-tank zone back to ``ready`` by itself (an operator runs
  ``two_tank_startup``), so retries would only knock on the gate again.
- Transient conditions are ``decision=retry`` (the dispatcher schedules a retry task): node offline, stale level
  readings, the zone actor restarting, another workflow running in the zone, SAFE_MODE, the database or broker
  unavailable, a command answered SEND_FAILED / BUSY (a read-only one also TIMEOUT), a workflow that failed before
  it actuated anything
  because its state probe went unanswered.
- A workflow that fails after it actuated something is ``fail`` with ``action_required`` (its compensating stop
  ran; what is left — low solution, a stop not confirmed — needs a person); one an operator cancelled is ``fail``
  without it.
- The wait for a workflow or a command never runs past ``expires_at``. When it passes first the outcome is
  ``failed``/``fail``/``task_deadline_exceeded`` and the workflow is **left running**: cancelling it mid-stage
  would be an actuation nobody asked for, and it ends by itself with its own confirmed stops (its record says how).

Never twice: workflows are started with ``created_by = "task:<root correlation id>"`` (a retry's
``<root>:retry<N>`` shares the root), and a task finds its root's earlier workflow before starting one: running —
it waits for that one; completed — it reports it; failed after actuating — it reports that failure. Commands get a
``cmd_id`` derived from the task's correlation id, so a re-executed task gets the same command back from the
submitter (no second publish) and reports its terminal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import asyncpg
import msgspec

from hydrovisor.actors.zone import ZoneObserved
from hydrovisor.commands.submit import CommandSubmitter, SubmitRefused, SubmitRequest
from hydrovisor.runtime.bridge import AskTimeout
from hydrovisor.store.database import Database
from hydrovisor.store.errors import DatabaseUnavailable
from hydrovisor.store.repos import fleet, workflows
from hydrovisor.store.repos.commands import CommandRecord
from hydrovisor.store.repos.tasks import Outcome
from hydrovisor.store.repos.workflows import WorkflowRecord
from hydrovisor.supervisors import SupervisionError
from hydrovisor.tasks.contract import Decision, LightingPayload, TaskStatus
from hydrovisor.workflows.runtime import WorkflowRefused, WorkflowRuntime
from hydrovisor.zoneplane.runtime import ZoneRuntime, ZoneUnavailable
from hydrovisor.zones import safety
from hydrovisor.zones.roles import Role
from hydrovisor.zones.settings import ResolvedDevice

if TYPE_CHECKING:  # the services will hold the scheduler one day: no import cycle at run time
    from hydrovisor.services import Services

log = logging.getLogger(__name__)


WORKFLOW_POLL_S = 0.25
"""How often a running workflow's row is read while a task waits for it (a cheap primary-key read)."""
EARLIER_WORKFLOWS = 20
"""How many of the zone's newest workflows are searched for one the task's root already started."""
IDEMPOTENCY_S = 24 * 3600.0
"""A correlation id names one task for this long (DOMAIN §5): an older workflow of the same root is another task's."""

WORKFLOW_OF: dict[str, str] = {"irrigation": "irrigation", "solution_change": "water_change"}
NO_DEVICE_TYPES = frozenset({"ventilation", "mist"})

# The gate's refusals that pass by themselves (a node back online, a fresh reading, a zone actor reloaded);
# every other refusal waits for a person (locks, emergency stop, configuration, dry tank).
TRANSIENT_REFUSALS = frozenset({safety.NODE_OFFLINE, safety.TANK_LEVEL_STALE, "zone_unavailable", "zone_not_ready"})
# the submitter's refusals that mean "not now" rather than "never"
TRANSIENT_SUBMIT_CODES = frozenset({"safe_mode_active", "too_many_commands", "command_send_failed"})
# terminal command statuses worth another attempt: nothing happened, the node was busy, or (read-only commands
# only) no answer came
RETRY_STATUSES = frozenset({"TIMEOUT", "SEND_FAILED", "BUSY"})
# statuses of a command that never reached the broker
UNSENT_STATUSES = frozenset({"QUEUED", "SEND_FAILED"})

# what an unreachable database, a lost connection or an actor that did not answer surfaces as
_TRANSIENT_ERRORS = (DatabaseUnavailable, asyncpg.PostgresError, asyncpg.InterfaceError, OSError, AskTimeout,
                     SupervisionError, ZoneUnavailable)
_RETRY_SUFFIX = re.compile(r":retry\d+$")
PWM_MAX = 255  # set_pwm's value range on the node (PROTOCOL §5)


class TaskOrder(msgspec.Struct, frozen=True, kw_only=True):
    """One task to execute, as the dispatcher hands it over. ``expires_at`` must be timezone-aware."""

    task_id: str
    zone_uid: str
    task_type: str
    payload: dict[str, Any]
    correlation_id: str
    expires_at: dt.datetime


def _fail(reason: str, message: str, *, error_code: str | None = None, action_required: bool = False,
          **fields: Any) -> Outcome:
    return Outcome(status=TaskStatus.FAILED, decision=Decision.FAIL, reason_code=reason, error_code=error_code,
                   action_required=action_required, message=message, **fields)


def _retry(reason: str, message: str, *, error_code: str | None = None, **fields: Any) -> Outcome:
    return Outcome(status=TaskStatus.FAILED, decision=Decision.RETRY, reason_code=reason, error_code=error_code,
                   message=message, **fields)


class _Deadline:
    """``expires_at`` on the loop's clock: the wall clock read once, so a clock step cannot stretch a wait."""

    def __init__(self, expires_at: dt.datetime) -> None:
        loop = asyncio.get_running_loop()
        self._end = loop.time() + (expires_at.timestamp() - time.time())
        self._loop = loop

    def remaining(self) -> float:
        return max(0.0, self._end - self._loop.time())


class TaskExecutor:
    """See the module docstring. Loop-side; one per process, shared by every dispatch."""

    def __init__(self, *, db: Database, zones: ZoneRuntime, workflows: WorkflowRuntime, submitter: CommandSubmitter,
                 poll_s: float = WORKFLOW_POLL_S) -> None:
        self._db = db
        self._zones = zones
        self._workflows = workflows
        self._submitter = submitter
        self._poll_s = poll_s

    @classmethod
    def from_services(cls, services: Services) -> TaskExecutor:
        """The executor of a running instance."""
        return cls(db=services.db, zones=services.zones, workflows=services.workflows, submitter=services.submitter)

    async def execute(self, order: TaskOrder) -> Outcome:
        """Execute ``order`` and return its outcome; never raises for what a task can meet (refusals, outages,
        timeouts all become outcomes). Cancellation propagates (the dispatcher is shutting down)."""
        fields = _log_fields(order)
        log.info("task %s (%s) executing", order.task_id, order.task_type, extra={**fields, "event": "task_executing"})
        try:
            outcome = await self._execute(order)
        except _TRANSIENT_ERRORS as exc:
            # before anything was submitted (a submitted command or a started workflow is handled where it is)
            outcome = _retry(_transient_reason(exc), f"{order.task_type} not started: {_describe(exc)}",
                             error_code=getattr(exc, "code", None) or type(exc).__name__)
        level = logging.INFO if outcome.status == TaskStatus.COMPLETED else logging.WARNING
        log.log(level, "task %s (%s): %s/%s %s", order.task_id, order.task_type, outcome.status, outcome.decision,
                outcome.reason_code, extra={**fields, "event": "task_executed", "status": outcome.status,
                                            "decision": outcome.decision, "reason_code": outcome.reason_code,
                                            "error_code": outcome.error_code, "workflow_id": outcome.workflow_id,
                                            "cmd_id": outcome.cmd_id, "action_required": outcome.action_required})
        return outcome

    async def _execute(self, order: TaskOrder) -> Outcome:
        if order.expires_at.tzinfo is None:
            return _fail("invalid_deadline", "expires_at has no time zone", action_required=True)
        deadline = _Deadline(order.expires_at)
        if deadline.remaining() <= 0:
            return _fail("task_expired", f"expires_at {order.expires_at.isoformat()} has passed; nothing was done")
        if order.task_type in NO_DEVICE_TYPES:
            # not action_required: no setting makes it work today, and paging for it at every window helps nobody
            return _fail("no_device_for_task", f"{order.task_type}: zones have no device role for it yet "
                         "(no fan or mister role exists); nothing was done")
        wf_type = WORKFLOW_OF.get(order.task_type)
        if wf_type is not None:
            return await self._workflow(order, wf_type, deadline)
        handlers: dict[str, Callable[[TaskOrder, _Deadline], Awaitable[Outcome]]] = {
            "lighting": self._lighting, "diagnostics": self._diagnostics}
        handler = handlers.get(order.task_type)
        if handler is None:
            return _fail("unknown_task_type", f"no executor for task type {order.task_type!r}", action_required=True)
        return await handler(order, deadline)

    # workflows ------------------------------------------------------------------------------------------------

    async def _workflow(self, order: TaskOrder, wf_type: str, deadline: _Deadline) -> Outcome:
        tag = workflow_tag(order.correlation_id)
        record = await self._earlier_workflow(order.zone_uid, tag)
        if record is not None and (record.status in ("running", "completed") or _actuated(record)):
            log.info("task %s: %s %s of the same root found, not started again", order.task_id, record.status,
                     record.id, extra={**_log_fields(order), "event": "task_workflow_adopted",
                                       "workflow_id": record.id})
        else:
            try:
                record = await self._workflows.start(order.zone_uid, wf_type, order.payload, tag)
            except WorkflowRefused as exc:
                return refusal_outcome(exc)
            except _TRANSIENT_ERRORS as exc:
                # the row may exist (the actor's start was not confirmed): the zone adopts it, and a retry of
                # this task finds it by its tag instead of starting a second one
                return _retry(_transient_reason(exc), f"{wf_type} start not confirmed: {_describe(exc)}",
                              error_code=getattr(exc, "code", None) or type(exc).__name__)
            log.info("task %s: workflow %s started", order.task_id, record.id,
                     extra={**_log_fields(order), "event": "task_workflow_started", "workflow_id": record.id})
        return await self._await_workflow(record, deadline)

    async def _earlier_workflow(self, zone_uid: str, tag: str) -> WorkflowRecord | None:
        """The newest workflow this task's root started in the zone within the idempotency window."""
        since = time.time() - IDEMPOTENCY_S
        for record in await workflows.list_for_zone(self._db.pool, zone_uid, None, EARLIER_WORKFLOWS):
            if record.created_by == tag and record.created_at >= since:
                return record
        return None

    async def _await_workflow(self, record: WorkflowRecord, deadline: _Deadline) -> Outcome:
        """Poll the workflow's row until it is terminal or the task's deadline has passed."""
        while record.status == "running":
            left = deadline.remaining()
            if left <= 0:
                return _fail("task_deadline_exceeded", f"workflow {record.id} still running (stage {record.stage}) "
                             "at expires_at; left running, it ends with its own confirmed stops",
                             command_submitted=_submitted(record), workflow_id=record.id)
            await asyncio.sleep(min(self._poll_s, left))
            try:
                fresh = await workflows.by_id(self._db.pool, record.id)
            except _TRANSIENT_ERRORS:
                continue  # the workflow goes on without us reading it; the deadline bounds the wait
            if fresh is None:
                return _fail("workflow_vanished", f"workflow {record.id} no longer exists (its zone was deleted?)",
                             action_required=True, command_submitted=_submitted(record), workflow_id=record.id)
            record = fresh
        return workflow_outcome(record)

    # commands -------------------------------------------------------------------------------------------------

    async def _lighting(self, order: TaskOrder, deadline: _Deadline) -> Outcome:
        try:
            payload = msgspec.convert(order.payload, LightingPayload)
        except msgspec.ValidationError as exc:
            return _fail("invalid_payload", f"lighting payload: {exc}", error_code="invalid_params",
                         action_required=True)
        on = payload.state == "on"
        if payload.mode == "pwm":
            if on and payload.pwm_level is None:
                return _fail("invalid_payload", "lighting on with mode=pwm needs pwm_level",
                             error_code="invalid_params", action_required=True)
            cmd, params = "set_pwm", {"value": round((payload.pwm_level or 0) * PWM_MAX / 100) if on else 0}
        elif payload.pwm_level is not None:
            return _fail("invalid_payload", "pwm_level is only allowed with mode=pwm", error_code="invalid_params",
                         action_required=True)
        else:
            cmd, params = "set_relay", {"state": 1 if on else 0}
        observed = await self._observed(order)
        if isinstance(observed, Outcome):
            return observed
        device = _device(observed, Role.LIGHT, order)
        if isinstance(device, Outcome):
            return device
        actuator = observed.state.actuators.get(Role.LIGHT.value)
        # only a relay switch is skipped: the zone tracks on/off, not the dimming level a pwm task asks for
        if cmd == "set_relay" and actuator is not None and actuator.confirmed is on and actuator.desired in (None, on):
            return Outcome(status=TaskStatus.COMPLETED, decision=Decision.SKIP, reason_code="already_in_state",
                           message=f"the light is already confirmed {payload.state} (since {actuator.since})")
        return await self._command(order, device, cmd, params, deadline)

    async def _diagnostics(self, order: TaskOrder, deadline: _Deadline) -> Outcome:
        observed = await self._observed(order)
        if isinstance(observed, Outcome):
            return observed
        device = _device(observed, Role.STORAGE_STATE, order)
        if isinstance(device, Outcome):
            return device
        return await self._command(order, device, "state", {}, deadline)

    async def _observed(self, order: TaskOrder) -> ZoneObserved | Outcome:
        """The zone as its actor sees it; a missing zone fails, a zone that cannot answer now is a retry."""
        if await fleet.get_zone(self._db.pool, order.zone_uid) is None:
            return _fail("zone_not_found", f"zone {order.zone_uid} does not exist", action_required=True)
        return await self._zones.observed(order.zone_uid)  # ZoneUnavailable: a retry (see execute)

    async def _command(self, order: TaskOrder, device: ResolvedDevice, cmd: str, params: dict[str, Any],
                       deadline: _Deadline) -> Outcome:
        """Submit through the one command path and wait for the terminal, never past the deadline."""
        cmd_id = command_id(order)
        request = SubmitRequest(cmd=cmd, node_uid=device.node_uid, channel=device.channel, params=params,
                                cmd_id=cmd_id, zone_uid=order.zone_uid, source=f"task:{order.task_type}",
                                trace_id=order.correlation_id)
        row: CommandRecord | None = None
        try:
            row = (await self._submitter.submit(request)).row
        except SubmitRefused as exc:
            if exc.code != "command_state_sync_failed":
                return _submit_refused(exc, cmd_id)
            # published, its SENT row not stored: the status is reconciled; wait for it like any other
        try:
            if row is None or not row.terminal:
                row = await self._submitter.wait_terminal(cmd_id, deadline.remaining())
        except SubmitRefused as exc:  # its row is gone (command_not_found): what happened cannot be known
            return _fail("command_state_unknown", f"{cmd} {cmd_id}: {exc.message}", error_code=exc.code,
                         action_required=True, command_submitted=True, cmd_id=cmd_id)
        except _TRANSIENT_ERRORS as exc:
            return _retry(_transient_reason(exc), f"{cmd} sent, its terminal could not be read: {_describe(exc)}",
                          error_code=getattr(exc, "code", None), command_submitted=True, cmd_id=cmd_id)
        return command_outcome(row, order.task_type)


# ---------------------------------------------------------------------------------------------------- mapping

def workflow_tag(correlation_id: str) -> str:
    """``created_by`` of the workflows a task starts: the root correlation id (a retry shares its parent's)."""
    return f"task:{_RETRY_SUFFIX.sub('', correlation_id)}"


def command_id(order: TaskOrder) -> str:
    """The task's command id: stable for one correlation id (a re-execution gets its command back), new for
    a retry (``<root>:retry<N>`` is another correlation id, and the retry is meant to send again)."""
    digest = hashlib.sha256(f"{order.task_type}\0{order.correlation_id}".encode()).hexdigest()
    return f"task-{digest[:32]}"


def _log_fields(order: TaskOrder) -> dict[str, Any]:
    return {"task_id": order.task_id, "zone_id": order.zone_uid, "correlation_id": order.correlation_id,
            "task_type": order.task_type}


def _device(observed: ZoneObserved, role: Role, order: TaskOrder) -> ResolvedDevice | Outcome:
    """The role's node channel, online; or why the task cannot go to it."""
    device = observed.devices.get(role)
    if device is None:
        return _fail("no_device_for_task", f"{order.task_type}: zone {order.zone_uid} has no {role.value} role "
                     "(name it in the settings' devices or bind a node with that channel)", action_required=True)
    if observed.state.nodes_online.get(device.node_uid) is not True:
        # a command now would only time out; the node may well be back for the retry
        return _retry(safety.NODE_OFFLINE, f"node {device.node_uid} of {role.value} is offline")
    return device


def refusal_outcome(exc: WorkflowRefused) -> Outcome:
    """The outcome of a workflow start the runtime refused (see the module docstring)."""
    message = exc.message
    if exc.status in (400, 422):
        return _fail("invalid_payload", message, error_code=exc.code, action_required=True)
    if exc.code == "pump_safety_blocked":
        return _gate(str(exc.extra.get("reason_code") or exc.code), message)
    if exc.code == "zone_not_ready" and "water_state" in exc.extra:  # the water, not the zone actor loading
        return _fail("zone_not_ready", message, error_code=exc.code, action_required=True)
    if exc.code == "workflow_already_running":
        return _retry("zone_busy", f"{message} ({exc.extra.get('workflow_id')})", error_code=exc.code)
    if exc.code in ("zone_not_ready", "zone_not_running", "zone_not_answering"):  # the zone actor, not the water
        return _retry("zone_unavailable", message, error_code=exc.code)
    # emergency_stop_active, zone_not_found, a zone not set up for the task (topology_mismatch,
    # recirc_not_automated, role_not_configured) and any refusal added later: not something a retry fixes
    return _fail(exc.code, message, error_code=exc.code, action_required=True)


def _gate(reason: str, message: str, **fields: Any) -> Outcome:
    """A refusal of the pump-safety gate: a retry when it passes by itself, else a person's job."""
    if reason in TRANSIENT_REFUSALS:
        return _retry(reason, message, error_code="pump_safety_blocked", **fields)
    return _fail(reason, message, error_code="pump_safety_blocked", action_required=True, **fields)


def _submit_refused(exc: SubmitRefused, cmd_id: str) -> Outcome:
    if exc.code == "pump_safety_blocked":
        return _gate(str(exc.extra.get("reason_code") or exc.code), exc.message, cmd_id=cmd_id)
    if exc.code in TRANSIENT_SUBMIT_CODES:
        return _retry(exc.code, exc.message, error_code=exc.code, cmd_id=cmd_id)
    # the target is wrong (node unknown, unbound, not validated, in another zone) or the id was reused
    return _fail(exc.code, exc.message, error_code=exc.code, action_required=True, cmd_id=cmd_id)


def command_outcome(row: CommandRecord, task_type: str) -> Outcome:
    """The outcome of a task's command as its row stands (not terminal: the deadline ended the wait)."""
    status = str(row.status)
    submitted = status not in UNSENT_STATUSES
    fields: dict[str, Any] = {"command_submitted": submitted, "cmd_id": row.cmd_id}
    target = f"{row.cmd} on {row.node_uid}/{row.channel}"
    if status == "DONE":
        return Outcome(status=TaskStatus.COMPLETED, decision=Decision.RUN, reason_code=f"{task_type}_done",
                       command_effect_confirmed=True, message=f"{target}: DONE", **fields)
    if not row.terminal:
        return _fail("task_deadline_exceeded", f"{target} still {status} at expires_at", **fields)
    detail = f"{target}: {status}" + (f" ({row.error_code})" if row.error_code else "")
    if status == "TIMEOUT" and row.cmd not in safety.READ_ONLY:
        # the command reached the broker and no answer came: the node may well have done it (a reply lost with a
        # killed server is the usual case). A retry is a new command: it would actuate a second time
        return _fail("command_outcome_unknown", f"{detail}: the node may have acted; check before running it again",
                     error_code=row.error_code or "command_timeout", action_required=True, **fields)
    if status in RETRY_STATUSES:
        return _retry(f"command_{status.lower()}", detail, error_code=row.error_code or status.lower(), **fields)
    # NO_EFFECT, ERROR, INVALID: the node did not do it and saying it again will not change that;
    # ERROR and INVALID (a device fault, a command the node cannot take) need a person
    return _fail(f"command_{status.lower()}", detail, error_code=row.error_code or status.lower(),
                 action_required=status != "NO_EFFECT", **fields)


def workflow_outcome(record: WorkflowRecord) -> Outcome:
    """The outcome of a task's terminal workflow; also what restart recovery can finalise a task with once the
    workflow it started has ended."""
    fields: dict[str, Any] = {"command_submitted": _submitted(record), "workflow_id": record.id}
    reason = record.reason_code or record.status
    message = f"workflow {record.id} {record.status}: {record.message or reason}"
    if record.status == "completed":
        return Outcome(status=TaskStatus.COMPLETED, decision=Decision.RUN, reason_code=reason,
                       command_effect_confirmed=True, message=message, **fields)
    if record.status == "cancelled":  # an operator's decision, already taken: nothing more to ask of them
        return _fail("workflow_cancelled", message, error_code=reason, **fields)
    if not _actuated(record) and reason.endswith("_probe_failed"):
        return _retry(reason, message, error_code="workflow_failed", **fields)  # nothing moved: safe to try again
    return _fail(reason, message, error_code="workflow_failed", action_required=True, **fields)


def _submitted(record: WorkflowRecord) -> bool:
    """Any of the workflow's commands reached the broker."""
    return any(c.status is not None and not c.status.startswith("REFUSED") and c.status not in UNSENT_STATUSES
               for c in record.commands)


def _actuated(record: WorkflowRecord) -> bool:
    """The workflow may have moved something: a command other than a read that was not refused (one with no
    status yet counts: it was written ahead and may have gone out)."""
    return any(c.cmd not in safety.READ_ONLY and not (c.status or "").startswith("REFUSED")
               and c.status != "SEND_FAILED" for c in record.commands)


def _transient_reason(exc: BaseException) -> str:
    if isinstance(exc, DatabaseUnavailable | asyncpg.PostgresError | asyncpg.InterfaceError):
        return "database_unavailable"
    if isinstance(exc, TimeoutError | SupervisionError | ZoneUnavailable):  # an actor that did not answer
        return "zone_unavailable"
    return "io_error"


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
