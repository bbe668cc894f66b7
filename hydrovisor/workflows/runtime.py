"""``WorkflowRuntime``: the loop-side door to zone workflows (start, cancel, adopt) and the emergency stop.

Starting a workflow checks, in order: the type and its parameters (400/422), the zone (404), its live
state and topology, the emergency-stop latch, the water state the type needs (``ready``), corrections
not failed closed, the safety gate for the type's first actuation (409 ``pump_safety_blocked`` with the
gate's reason), and finally the row itself (409 when one already runs: a unique index decides). Then the
actor starts under ``/zones/<uid>``. A zone adopts its running workflows whenever its actor (re)starts,
so a process restart or a zone subtree restart never leaves one hanging.

The emergency stop latches first (stored, the zone refuses every start from then on), then tells the
running workflow to fail, then stops every pump and valve of the zone (pump first), each confirmed or
reported as not confirmed. A stop not confirmed (its node just reconnecting, its reply lost) is sent
again in the background every ``RESEND_S`` until it is, for ``RESEND_FOR_S``, while the latch holds; the
timeline says how that ended. Nothing resumes by itself; an operator clears the latch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

import msgspec

from hydrovisor.actors.zone import SetEmergencyStop, ZoneObserved
from hydrovisor.commands.submit import SubmitRefused, SubmitRequest
from hydrovisor.refusals import Refused
from hydrovisor.store.errors import DB_DOWN
from hydrovisor.store.repos import events, fleet, workflows
from hydrovisor.store.repos.workflows import WorkflowRecord
from hydrovisor.supervisors import (
    ActorSystem,
    DuplicateChild,
    NoSuchActor,
    StartChild,
    SupervisionError,
    TerminateChild,
)
from hydrovisor.workflows import catalog, steps
from hydrovisor.workflows.actor import PERMANENT_REFUSALS, Cancel, EmergencyStop
from hydrovisor.workflows.plane import WorkflowPlane
from hydrovisor.workflows.spawn import WATER_CYCLE, water_cycle_spec, workflow_path, workflow_spec
from hydrovisor.workflows.water_cycle import WaterCyclePlane
from hydrovisor.zoneplane.runtime import ZoneRuntime, ZoneUnavailable
from hydrovisor.zoneplane.spawn import zone_actor_path, zone_path
from hydrovisor.zones.roles import PUMPS, Role

log = logging.getLogger(__name__)

START_WITHIN_S = 15.0
STOP_WAIT_S = 30.0
RESEND_S = 2.0  # real seconds between the rounds of an emergency stop's unconfirmed stops
RESEND_FOR_S = 120.0


class WorkflowRefused(Refused):
    """A workflow request that cannot be carried out."""


# a resend round that fails this way waits for the next one
RESEND_ROUND_FAILURES: tuple[type[BaseException], ...] = (WorkflowRefused, *DB_DOWN)


class StopOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """One actuator's stop during an emergency stop."""

    role: str
    node_uid: str
    channel: str
    cmd_id: str | None
    status: str | None
    confirmed: bool
    error: str | None = None


class EmergencyStopReport(msgspec.Struct, frozen=True, kw_only=True):
    """``POST /api/v1/zones/{uid}/emergency-stop``."""

    zone_uid: str
    latched: bool
    workflow_id: str | None
    stops: list[StopOutcome]
    all_confirmed: bool
    resending: list[str] = []
    """Roles whose stop was not confirmed and is being sent again (see the module docstring)."""


class WorkflowRuntime:
    """See the module docstring."""

    def __init__(self, system: ActorSystem, plane: WorkflowPlane, zones: ZoneRuntime, *, timezone: str = "UTC") -> None:
        self._system = system
        self._plane = plane
        self._zones = zones
        self._water_cycle = WaterCyclePlane(plane, self.start, timezone)
        self._resends: dict[str, asyncio.Task[None]] = {}  # zone uid -> its emergency stop's resending

    @property
    def _pool(self) -> Any:
        return self._plane.db.pool

    async def start(self, zone_uid: str, wf_type: str, raw_params: Any, created_by: str) -> WorkflowRecord:
        """Check and start a workflow (see the module docstring); raises :class:`WorkflowRefused`."""
        kind = catalog.KINDS.get(wf_type)
        if kind is None:
            raise WorkflowRefused(400, "unknown_workflow_type",
                                  f"type must be one of {', '.join(sorted(catalog.KINDS))}")
        try:
            params = msgspec.convert(raw_params if raw_params is not None else {}, kind.params)
        except msgspec.ValidationError as exc:
            raise WorkflowRefused(422, "invalid_params", f"invalid params: {exc}") from None
        if await fleet.get_zone(self._pool, zone_uid) is None:
            raise WorkflowRefused(404, "zone_not_found", f"zone {zone_uid} does not exist")
        observed = await self._observed(zone_uid)
        automation = await workflows.automation(self._pool, zone_uid)
        await self._preconditions(zone_uid, kind, params, automation, observed)
        wf_id = f"wf-{uuid.uuid4().hex[:16]}"
        created = await workflows.create(self._pool, wf_id=wf_id, zone_uid=zone_uid, wf_type=kind.name,
                                         params=msgspec.to_builtins(params), stage=kind.first_stage,
                                         created_by=created_by)
        if isinstance(created, str):
            code, _, running = created.partition(":")
            extra: dict[str, Any] = {"workflow_id": running} if running else {}
            raise WorkflowRefused(409, code, f"zone {zone_uid}: {code.replace('_', ' ')}", **extra)
        await self._start_actor(zone_uid, wf_id)
        return created

    async def _preconditions(self, zone_uid: str, kind: catalog.Kind, params: Any,
                             automation: workflows.Automation, observed: ZoneObserved) -> None:
        settings = observed.settings
        if settings.topology != kind.topology:
            raise WorkflowRefused(409, "topology_mismatch",
                                  f"{kind.name} needs a {kind.topology} zone; {zone_uid} is {settings.topology}")
        if kind.restore and not settings.water_cycle.recirc.enabled:
            raise WorkflowRefused(409, "recirc_not_automated", f"{kind.name} stops and restarts the recirculation "
                                  "pump, and water_cycle.recirc.enabled is false (automation may not touch it)")
        if automation.estop_active:
            raise WorkflowRefused(409, "emergency_stop_active",
                                  f"the zone's emergency stop is latched ({automation.estop_reason}); clear it first")
        if kind.needs_ready and automation.water_state != "ready":
            raise WorkflowRefused(409, "zone_not_ready", f"{kind.name} runs only in a ready zone; the water state "
                                  f"is {automation.water_state} (run two_tank_startup)",
                                  water_state=automation.water_state)
        if kind.name == "correction" and automation.correction_blocked_until is not None \
                and automation.correction_blocked_until > self._plane.clock.now():
            raise WorkflowRefused(409, "correction_fail_closed", "corrections are off after doses with no effect",
                                  until=automation.correction_blocked_until)
        if isinstance(params, catalog.IrrigationParams) and params.duration_s > settings.timeouts.irrigation_s:
            raise WorkflowRefused(422, "invalid_params", f"duration_s must not exceed the zone's timeouts.irrigation_s "
                                  f"({settings.timeouts.irrigation_s})")
        device = observed.devices.get(kind.gate_role)
        if device is None:
            raise WorkflowRefused(409, "role_not_configured", f"{kind.gate_role.value} is not bound in zone {zone_uid}")
        refusal = await self._zones.check_start(zone_uid, node_uid=device.node_uid, channel=device.channel,
                                                cmd="set_relay",
                                                params={"state": 1}, source=f"workflow:{kind.name}")
        if refusal is not None:
            raise WorkflowRefused(409, "pump_safety_blocked", f"the safety gate refuses {kind.name}: {refusal.message}",
                                  reason_code=refusal.reason_code)

    async def _observed(self, zone_uid: str) -> ZoneObserved:
        try:
            return await self._zones.observed(zone_uid)
        except ZoneUnavailable as exc:
            raise WorkflowRefused(409, exc.code, str(exc)) from None

    async def _start_actor(self, zone_uid: str, wf_id: str) -> None:
        try:
            await self._system.bridge.ask(zone_path(zone_uid), StartChild(workflow_spec(zone_uid, wf_id, self._plane)),
                                          within=START_WITHIN_S)
        except DuplicateChild:
            return

    async def adopt(self, zone_uid: str, topology: str) -> None:
        """Start an actor for each running workflow of the zone that has none (after a restart), and the
        zone's water cycle when it is single-tank (stopped when it no longer is)."""
        for wf_id in await workflows.running_ids(self._pool, zone_uid):
            log.info("zone %s: adopting workflow %s", zone_uid, wf_id,
                     extra={"event": "workflow_adopted", "zone_id": zone_uid})
            await self._start_actor(zone_uid, wf_id)
        if topology == "single_tank":
            with contextlib.suppress(DuplicateChild):
                await self._system.bridge.ask(zone_path(zone_uid), StartChild(
                    water_cycle_spec(zone_uid, self._water_cycle)), within=START_WITHIN_S)
        else:
            with contextlib.suppress(NoSuchActor):
                await self._system.bridge.ask(zone_path(zone_uid), TerminateChild(WATER_CYCLE), within=START_WITHIN_S)

    async def cancel(self, zone_uid: str, wf_id: str) -> WorkflowRecord:
        """Request the cancel (stored), tell the actor; the compensating stop runs there."""
        record = await workflows.get(self._pool, zone_uid, wf_id)
        if record is None:
            raise WorkflowRefused(404, "workflow_not_found", f"workflow {wf_id} does not exist in zone {zone_uid}")
        if record.status != "running":
            raise WorkflowRefused(409, "workflow_not_running", f"workflow {wf_id} is {record.status}")
        requested = await workflows.request_cancel(self._pool, zone_uid, wf_id)
        assert requested is not None
        self._tell_workflow(zone_uid, wf_id, Cancel())
        return requested

    async def emergency_stop(self, zone_uid: str, reason: str, by: str) -> EmergencyStopReport:
        """Latch, fail the running workflow, stop everything (see the module docstring)."""
        if await fleet.get_zone(self._pool, zone_uid) is None:
            raise WorkflowRefused(404, "zone_not_found", f"zone {zone_uid} does not exist")
        text = f"{reason} (by {by})"
        latched = await workflows.set_estop(self._pool, zone_uid, text)
        await events.add_zone_event(self._pool, zone_uid, None, "EMERGENCY_STOP", {"reason": reason, "by": by},
                                    decision="stop", reason_code="emergency_stop_active")
        self._tell_zone(zone_uid, SetEmergencyStop(text))
        running = await workflows.running_ids(self._pool, zone_uid)
        for wf_id in running:
            self._tell_workflow(zone_uid, wf_id, EmergencyStop(text))
        stops = await self._stop_everything(zone_uid)
        resending = [s.role for s in stops if not s.confirmed and s.error not in PERMANENT_REFUSALS]
        earlier = self._resends.pop(zone_uid, None)
        if earlier is not None:
            earlier.cancel()  # a new emergency stop of the zone: one resending at a time
        if resending:
            task = asyncio.get_running_loop().create_task(self._keep_stopping(zone_uid, set(resending)),
                                                          name=f"estop-resend-{zone_uid}")
            self._resends[zone_uid] = task
            task.add_done_callback(lambda done: self._resends.pop(zone_uid, None) if self._resends.get(
                zone_uid) is done else None)
        return EmergencyStopReport(zone_uid=zone_uid, latched=latched, workflow_id=running[0] if running else None,
                                   stops=stops, all_confirmed=all(s.confirmed for s in stops), resending=resending)

    async def stop(self) -> None:
        """Stop resending emergency stops (the process is stopping)."""
        tasks = list(self._resends.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _keep_stopping(self, zone_uid: str, roles: set[str]) -> None:
        """Send the stops of ``roles`` again until each is confirmed, the latch is cleared (an operator took
        over) or ``RESEND_FOR_S`` has passed; the outcome goes on the timeline."""
        log.warning("zone %s: emergency stop of %s not confirmed; sending it again", zone_uid, sorted(roles),
                    extra={"event": "estop_resend", "zone_id": zone_uid})
        deadline = asyncio.get_running_loop().time() + RESEND_FOR_S
        while roles and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(RESEND_S)
            try:
                if not (await workflows.automation(self._pool, zone_uid)).estop_active:
                    return
                stops = await self._stop_everything(zone_uid, only=roles)
            except RESEND_ROUND_FAILURES as exc:  # the zone or the database is away: the next round
                log.info("zone %s: emergency stop resend round failed: %s", zone_uid, exc,
                         extra={"event": "estop_resend_failed", "zone_id": zone_uid})
                continue
            roles = {s.role for s in stops if not s.confirmed and s.error not in PERMANENT_REFUSALS}
        confirmed = not roles
        with contextlib.suppress(*DB_DOWN):
            await events.add_zone_event(
                self._pool, zone_uid, None, "EMERGENCY_STOP_CONFIRMED" if confirmed else "EMERGENCY_STOP_NOT_CONFIRMED",
                {"roles": sorted(roles)}, decision="stop",
                reason_code="estop_confirmed" if confirmed else "estop_stop_not_confirmed")
        log.log(logging.INFO if confirmed else logging.ERROR, "zone %s: emergency stop %s", zone_uid,
                "confirmed after resending" if confirmed else f"of {sorted(roles)} still not confirmed",
                extra={"event": "estop_resend_ended", "zone_id": zone_uid})

    async def clear_emergency_stop(self, zone_uid: str, by: str, reason: str) -> bool:
        """An operator clears the latch (audited on the timeline); False when it was not latched."""
        cleared = await workflows.clear_estop(self._pool, zone_uid, by)
        if cleared:
            await events.add_zone_event(self._pool, zone_uid, None, "EMERGENCY_STOP_CLEARED",
                                        {"by": by, "reason": reason}, decision="run", reason_code="estop_cleared")
            self._tell_zone(zone_uid, SetEmergencyStop(None))
        return cleared

    async def _stop_everything(self, zone_uid: str, only: set[str] | None = None) -> list[StopOutcome]:
        """Pumps first (each awaited), then every valve at once (``only``: those roles); a stop answered
        ``NO_EFFECT`` ("already off") is confirmed by the node's own snapshot (a ``state`` probe) showing it
        off, as in the workflows."""
        view = await self._observed(zone_uid)
        bound = [(role, device) for role in steps.PLANT if (device := view.devices.get(role)) is not None
                 and (only is None or role.value in only)]
        pumps = [item for item in bound if item[0] in PUMPS]
        outcomes = [await self._stop_one(zone_uid, role, device) for role, device in pumps]
        outcomes += await asyncio.gather(*(self._stop_one(zone_uid, role, device) for role, device in bound
                                           if role not in PUMPS))
        if any(o.status == "NO_EFFECT" for o in outcomes):
            off = await self._probe_off(zone_uid, view)
            outcomes = [msgspec.structs.replace(o, confirmed=True) if o.status == "NO_EFFECT" and o.role in off else o
                        for o in outcomes]
        return outcomes

    async def _stop_one(self, zone_uid: str, role: Any, device: Any) -> StopOutcome:
        cmd_id = f"estop-{uuid.uuid4().hex[:12]}"
        request = SubmitRequest(cmd="set_relay", node_uid=device.node_uid, channel=device.channel,
                                params={"state": 0}, cmd_id=cmd_id, zone_uid=zone_uid, source="emergency_stop")
        try:
            await self._plane.submitter.submit(request)
            row = await self._plane.submitter.wait_terminal(cmd_id, STOP_WAIT_S)
        except SubmitRefused as exc:
            return StopOutcome(role=role.value, node_uid=device.node_uid, channel=device.channel, cmd_id=cmd_id,
                               status=None, confirmed=False, error=exc.code)
        return StopOutcome(role=role.value, node_uid=device.node_uid, channel=device.channel, cmd_id=cmd_id,
                           status=row.status, confirmed=row.status == "DONE", error=row.error_code)

    async def _probe_off(self, zone_uid: str, view: ZoneObserved) -> set[str]:
        """The roles the zone's ``storage_state`` snapshot shows off (empty when it cannot be had)."""
        device = view.devices.get(Role.STORAGE_STATE)
        if device is None:
            return set()
        cmd_id = f"estop-probe-{uuid.uuid4().hex[:12]}"
        try:
            await self._plane.submitter.submit(SubmitRequest(
                cmd="state", node_uid=device.node_uid, channel=device.channel, cmd_id=cmd_id, zone_uid=zone_uid,
                source="emergency_stop"))
            row = await self._plane.submitter.wait_terminal(cmd_id, STOP_WAIT_S)
        except SubmitRefused:
            return set()
        snapshot = (row.details or {}).get("snapshot") if row.status == "DONE" else None
        if not isinstance(snapshot, dict):
            return set()
        return {role.value for role, on in steps.snapshot_state(snapshot).items() if not on}

    def _tell_zone(self, zone_uid: str, message: Any) -> None:
        try:
            self._system.tell(zone_actor_path(zone_uid), message)
        except SupervisionError:
            log.warning("zone %s not running: %s not delivered (it loads the latch when it starts)", zone_uid,
                        type(message).__name__, extra={"event": "zone_message_undelivered", "zone_id": zone_uid})

    def _tell_workflow(self, zone_uid: str, wf_id: str, message: Any) -> None:
        try:
            self._system.tell(workflow_path(zone_uid, wf_id), message)
        except (NoSuchActor, SupervisionError):
            # not running: the stored cancel request / latch is what its next incarnation acts on
            log.info("workflow %s not running: %s stored for its next start", wf_id, type(message).__name__,
                     extra={"event": "workflow_message_deferred", "zone_id": zone_uid})
