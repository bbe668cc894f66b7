"""``WaterCycleActor``: the water cycle of a single-tank zone (``/zones/<uid>/water_cycle``), DOMAIN §4.

It watches its zone (``ZoneObserved``) and, every ``TICK_S`` zone seconds, in ``water_cycle.mode`` auto:

- **recirculation duty**: drives the normally-closed recirculation pump to what
  ``zones.water_cycle.recirc_desired`` says for the greenhouse's local time (off windows never longer
  than ``max_recirc_off_minutes``); with ``recirc.enabled`` false it never touches the relay. Turning the
  pump on passes the safety gate like every start (an empty tank keeps it off, recorded);
- **water change triggers**: schedule, solution age, EC drift (``zones.water_cycle.water_change_due``)
  start a ``water_change`` workflow. A failed water change raised ``biz_water_change_failed``: while that
  alert is active nothing is triggered again (never a silent retry loop; an operator resolves it).

While any workflow runs in the zone it owns the plant: the duty waits. Two-tank zones have no water
cycle of this kind: the actor idles. Every action and skip is a zone event (``RECIRC_DUTY``,
``WATER_CHANGE_TRIGGER``). It never blocks: its work runs on the loop (``WaterCyclePlane``) and comes back
as messages, one piece of work at a time.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
import zoneinfo
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import msgspec

from hydrovisor.actors.zone import ZoneObserved
from hydrovisor.commands.submit import SubmitRefused, SubmitRequest
from hydrovisor.runtime.bridge import Outcome
from hydrovisor.store.database import Database
from hydrovisor.store.repos import events, workflows
from hydrovisor.supervisors import ActorContext
from hydrovisor.workflows.plane import WorkflowPlane
from hydrovisor.workflows.watcher import ZoneWatcher
from hydrovisor.zones.clock import real_seconds
from hydrovisor.zones.roles import Role
from hydrovisor.zones.water_cycle import recirc_desired, water_change_due

log = logging.getLogger(__name__)

TICK_S = 30.0  # zone seconds between looks
MIN_TICK_REAL_S = 0.2
FAILED_ALERT = "biz_water_change_failed"
WATER_CYCLE = "water_cycle"

StartWorkflow = Callable[[str, str, Any, str], Coroutine[Any, Any, Any]]


@dataclass(frozen=True)
class WaterCyclePlane:
    """What the water-cycle actors need: the workflow plane (storage, commands, clock), a way to start a
    workflow through all of its checks, and the greenhouse's time zone."""

    workflows: WorkflowPlane
    start_workflow: StartWorkflow
    timezone: str = "UTC"

    @property
    def db(self) -> Database:
        """The database."""
        return self.workflows.db

    async def set_recirc(self, zone_uid: str, node_uid: str, channel: str, on: bool) -> str:
        """Drive the recirculation pump unless a workflow runs; returns what happened (a reason code)."""
        pool = self.db.pool
        if await workflows.running_ids(pool, zone_uid):
            return "workflow_running"
        cmd_id = f"wc-{uuid.uuid4().hex[:16]}"
        submitter = self.workflows.submitter
        try:
            await submitter.submit(SubmitRequest(cmd="set_relay", node_uid=node_uid, channel=channel,
                                                 params={"state": int(on)}, cmd_id=cmd_id, zone_uid=zone_uid,
                                                 source=WATER_CYCLE))
            row = await submitter.wait_terminal(cmd_id, 35.0)
        except SubmitRefused as exc:
            reason = str(exc.extra.get("reason_code") or exc.code)
            await events.add_zone_event(pool, zone_uid, node_uid, "RECIRC_DUTY", {"on": on, "message": exc.message},
                                        decision="skip", reason_code=reason)
            return reason
        outcome = "recirc_on" if on else "recirc_off"
        decision = "run" if row.status == "DONE" else "fail"
        await events.add_zone_event(pool, zone_uid, node_uid, "RECIRC_DUTY", {"on": on, "status": row.status},
                                    cmd_id=cmd_id, decision=decision, reason_code=outcome)
        return outcome if decision == "run" else f"{outcome}_{str(row.status).lower()}"

    async def maybe_water_change(self, zone_uid: str, local: dt.datetime, ec: float | None,
                                 observed: ZoneObserved) -> str | None:
        """Start a water change if one is due and nothing forbids it; returns the trigger acted on."""
        pool = self.db.pool
        change = observed.settings.water_cycle.water_change
        if not change.enabled or await workflows.running_ids(pool, zone_uid):
            return None
        if any(alert.code == FAILED_ALERT for alert in observed.state.alerts) or await pool.fetchval(
                "SELECT EXISTS (SELECT 1 FROM alerts WHERE zone_uid = $1 AND code = $2 AND status = 'ACTIVE')",
                zone_uid, FAILED_ALERT):
            return None
        automation = await workflows.automation(pool, zone_uid)
        started = automation.solution_started_at
        started_local = dt.datetime.fromtimestamp(started, local.tzinfo) if started is not None else None
        reason = water_change_due(change, local, started_local, ec, observed.settings.targets.ec.target)
        if reason is None:
            return None
        try:
            record = await self.start_workflow(zone_uid, "water_change", {}, WATER_CYCLE)
        except Exception as exc:  # WorkflowRefused: the gate, an emergency stop, a topology problem
            code = getattr(exc, "code", type(exc).__name__)
            await events.add_zone_event(pool, zone_uid, None, "WATER_CHANGE_TRIGGER", {
                "trigger": reason, "message": str(exc)}, decision="skip", reason_code=code)
            return None
        await events.add_zone_event(pool, zone_uid, None, "WATER_CHANGE_TRIGGER", {
            "trigger": reason, "workflow_id": record.id}, correlation_id=record.id, decision="run", reason_code=reason)
        return reason


class _Tick(msgspec.Struct, frozen=True):
    pass


class _Done(msgspec.Struct, frozen=True):
    what: str
    outcome: Outcome


class WaterCycleActor(ZoneWatcher):
    """See the module docstring."""

    def __init__(self, ctx: ActorContext, *, zone_uid: str, plane: WaterCyclePlane) -> None:
        super().__init__(ctx)
        self.zone_uid = zone_uid
        self._plane = plane
        self._tz = zoneinfo.ZoneInfo(plane.timezone)
        self._observed: ZoneObserved | None = None
        self._busy = False

    def on_start(self) -> None:
        self.watch_zone()
        clock = self._plane.workflows.clock
        self.tell_self_every(max(MIN_TICK_REAL_S, real_seconds(clock, TICK_S)), _Tick())

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ZoneObserved):
            if message.ready:
                self._observed = message
        elif isinstance(message, _Tick):
            self._tick()
        elif isinstance(message, _Done):
            self._busy = False
            if not message.outcome.ok:
                log.warning("zone %s: %s failed (%s)", self.zone_uid, message.what, message.outcome.error,
                            extra={"event": "water_cycle_failed", "zone_id": self.zone_uid})
        else:
            return super().on_receive(message)
        return None

    def _tick(self) -> None:
        observed = self._observed
        if self._busy or observed is None or observed.estop is not None:
            return
        settings = observed.settings
        if settings.topology != "single_tank" or settings.water_cycle.mode != "auto":
            return
        local = dt.datetime.fromtimestamp(self._plane.workflows.clock.now(), self._tz)
        desired = recirc_desired(settings.water_cycle.recirc, local)
        pump = observed.state.actuators.get(Role.PUMP_MAIN.value)
        device = observed.devices.get(Role.PUMP_MAIN)
        current = None if pump is None else (pump.desired if pump.desired is not None else pump.confirmed)
        if desired is not None and device is not None and current is not desired:
            self._run("recirculation duty",
                      self._plane.set_recirc(self.zone_uid, device.node_uid, device.channel, desired))
            return
        ec = observed.state.readings.get(Role.EC_SENSOR.value)
        self._run("water change check", self._plane.maybe_water_change(
            self.zone_uid, local, ec.value if ec is not None else None, observed))

    def _run(self, what: str, coro: Coroutine[Any, Any, Any]) -> None:
        self._busy = True
        self.pipe_to_self(coro, lambda outcome: _Done(what, outcome))
