"""A zone's live state (issue 11 "Zone runtime"): what the zone's devices last reported, and what we asked.

:class:`ZoneState` is a plain mutable object owned by one zone actor (single-threaded, so no locks). It
is fed typed inputs (telemetry, events, errors, node liveness, commands sent and their terminals, state
snapshots, the passing of time) and each ``apply_*`` returns the :class:`~hydrovisor.zones.safety.Detection`
items the input revealed; the actor turns those into alerts and zone events. Detections are also recorded
here as active alerts at once, so the pump-safety gate locks before any database round trip.

Pure: no I/O, no clock; every method takes ``now`` (unix seconds).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import msgspec

from hydrovisor.zones import safety
from hydrovisor.zones.roles import ACTUATORS, LEVELS, PUMPS, Role
from hydrovisor.zones.settings import ResolvedDevice, ZoneSettings

SNAPSHOT_KEYS: dict[str, Role] = {
    "clean_level_max": Role.LEVEL_CLEAN_MAX,
    "clean_level_min": Role.LEVEL_CLEAN_MIN,
    "solution_level_max": Role.LEVEL_SOLUTION_MAX,
    "solution_level_min": Role.LEVEL_SOLUTION_MIN,
    "valve_clean_fill": Role.VALVE_CLEAN_FILL,
    "valve_clean_supply": Role.VALVE_CLEAN_SUPPLY,
    "valve_solution_fill": Role.VALVE_SOLUTION_FILL,
    "valve_solution_supply": Role.VALVE_SOLUTION_SUPPLY,
    "valve_irrigation": Role.VALVE_IRRIGATION,
    "pump_main": Role.PUMP_MAIN,
    "pump_drain": Role.PUMP_DRAIN,
    "valve_fill": Role.VALVE_FILL,
}
"""``storage_state`` snapshot keys (PROTOCOL §4; the last two from a single-tank node) -> roles; the level keys
differ from the role names."""

LEVEL_SWITCH_CHANGED = "level_switch_changed"
LINK_LOSS_FAILSAFE = "link_loss_failsafe"
_JUST_AFTER = 1e-3
"""How long after a strict boundary (``>``) a deadline falls (seconds: far above a float's resolution at
unix times, far below a tick)."""
FAILURE_STATUSES = frozenset({"ERROR", "TIMEOUT"})
"""Terminals of a pump start that count as a failure of that pump. ``INVALID``, ``BUSY`` and
``SEND_FAILED`` say nothing about the pump (a malformed command, a busy channel, the broker), and
``NO_EFFECT`` means it already ran."""



# the alert each persistent condition of _after_change raises
_CONDITION_CODES: dict[str, str] = {"no_flow": safety.NO_FLOW, "stuck_on": safety.PUMP_STUCK_ON,
                                    "running_dry": safety.DRY_RUN}

class Reading(msgspec.Struct, frozen=True, kw_only=True):
    """The latest reading of a role: device time ``ts``, server receipt time, the node's flags."""

    value: float
    ts: float
    received_at: float
    flags: dict[str, Any] | None = None


class Actuator(msgspec.Struct, frozen=True, kw_only=True):
    """What we asked of an actuator and what it confirmed (a ``DONE`` reply or a ``state`` snapshot).

    ``since`` is when ``confirmed`` last changed; ``desired_at`` when ``desired`` was last set; ``cmd_id``
    the latest command sent to it.
    """

    desired: bool | None = None
    confirmed: bool | None = None
    since: float | None = None
    cmd_id: str | None = None
    desired_at: float | None = None


class Level(msgspec.Struct, frozen=True, kw_only=True):
    """A level switch: wet (``True``) or dry, when it was last reported (``ts``) and last changed."""

    state: bool
    ts: float
    changed_at: float | None = None


class ActiveAlert(msgspec.Struct, frozen=True, kw_only=True):
    """An alert that is active in the zone, as far as this state knows."""

    code: str
    dedupe_key: str
    severity: safety.Severity
    first_seen: float
    last_seen: float
    count: int = 1


class _Pending(msgspec.Struct, frozen=True):
    role: Role
    on: bool
    seq: int
    timed: bool = False  # run_pump / dose / timed set_relay: ACK = running, DONE = ran and stopped


# ------------------------------------------------------------------------------------------------- view

class ReadingView(msgspec.Struct, frozen=True, kw_only=True):
    """A reading with its age."""

    value: float
    ts: float
    age_s: float
    flags: dict[str, Any] | None = None


class ActuatorView(msgspec.Struct, frozen=True, kw_only=True):
    """Desired vs confirmed state of one actuator."""

    desired: bool | None
    confirmed: bool | None
    since: float | None
    cmd_id: str | None


class LevelView(msgspec.Struct, frozen=True, kw_only=True):
    """A level switch with its age."""

    state: bool
    ts: float
    age_s: float


class SafetyLock(msgspec.Struct, frozen=True, kw_only=True):
    """Something that makes the gate refuse until an operator reset (or, for failures, until they age)."""

    reason_code: str
    role: str | None = None
    detail: str = ""


class ZoneStateView(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /api/v1/zones/{uid}/state``."""

    readings: dict[str, ReadingView]
    actuators: dict[str, ActuatorView]
    levels: dict[str, LevelView]
    nodes_online: dict[str, bool]
    alerts: list[ActiveAlert]
    safety_locks: list[SafetyLock]
    water_state: str | None = None
    workflow: str | None = None


# ------------------------------------------------------------------------------------------------ state

class ZoneState:
    """The live state of one zone; see the module docstring. Every ``apply_*`` is also a :meth:`tick`: the
    time-based detections are evaluated and old failures dropped whatever the input.

    Invariants (checked by the property tests): ``actuators`` has an entry for every role in ``ACTUATORS``;
    ``levels`` only holds ``LEVELS`` roles; every reading is finite; a command's first terminal is the only
    one applied; failures are kept only for pumps and only within the failure window; every detection
    returned is also an active alert.
    """

    def __init__(self, settings: ZoneSettings | None = None,
                 devices: Mapping[Role, ResolvedDevice] | None = None) -> None:
        self.settings = settings if settings is not None else ZoneSettings()
        self.devices: dict[Role, ResolvedDevice] = dict(devices or {})
        self.readings: dict[Role, Reading] = {}
        self.actuators: dict[Role, Actuator] = {role: Actuator() for role in ACTUATORS}
        self.levels: dict[Role, Level] = {}
        self.nodes_online: dict[str, bool] = {}
        self.alerts: dict[tuple[str, str], ActiveAlert] = {}
        self.failures: dict[Role, list[float]] = {}
        # set by the zone actor from its workflows; shown in the view only
        self.water_state: str | None = None
        self.workflow: str | None = None
        self._pending: dict[str, _Pending] = {}
        self._seq = 0
        self._confirmed_seq: dict[Role, int] = {}
        # conditions currently true: a persistent condition is reported once per episode, not per input
        self._episodes: set[tuple[str, str]] = set()

    # --- configuration ---------------------------------------------------------------------------------

    def update_settings(self, settings: ZoneSettings, devices: Mapping[Role, ResolvedDevice] | None = None) -> None:
        """A new settings version (and its resolved devices) applies from the next input on."""
        self.settings = settings
        if devices is not None:
            self.devices = dict(devices)

    def role_of(self, node_uid: str, channel: str) -> Role | None:
        """The role bound to ``node_uid``/``channel``, if any (the actor routes device messages with it)."""
        for role, device in self.devices.items():
            if device.node_uid == node_uid and device.channel == channel:
                return role
        return None

    # --- queries the gate uses ---------------------------------------------------------------------------

    def maybe_open(self, role: Role) -> bool:
        """True when ``role`` is open/running or being opened (desired or confirmed on)."""
        actuator = self.actuators.get(role)
        return actuator is not None and (actuator.desired is True or actuator.confirmed is True)

    def active_lock_codes(self) -> frozenset[str]:
        """The lock alert codes active in the zone."""
        return frozenset(code for code, _ in self.alerts if code in safety.LOCK_CODES)

    def failures_within(self, role: Role, now: float, window: float) -> int:
        """How many failures of ``role`` happened in ``(now - window, now]``."""
        return sum(1 for at in self.failures.get(role, ()) if now - window < at <= now)

    # --- inputs ------------------------------------------------------------------------------------------

    def apply_telemetry(self, role: Role, value: float, ts: float, flags: Mapping[str, Any] | None,
                        now: float) -> list[safety.Detection]:
        """A telemetry sample of ``role`` (device time ``ts``). Older than the latest known: kept out
        (the store has it; "latest" must not go back). A level role's value is its switch (non-zero = wet)."""
        if not (_finite(value) and _finite(ts)):
            return self._after_change(now)
        latest = self.readings.get(role)
        if latest is not None and ts < latest.ts:
            return self._after_change(now)
        self.readings[role] = Reading(value=float(value), ts=float(ts), received_at=now,
                                      flags=dict(flags) if flags is not None else None)
        if role in LEVELS:
            self._set_level(role, value != 0, ts)
        return self._after_change(now)

    def apply_event(self, role: Role | None, code: str, details: Mapping[str, Any], now: float, *,
                    node_uid: str | None = None) -> list[safety.Detection]:
        """A node event (``details`` = the event's other fields). Understood here: ``level_switch_changed``
        (``state``), any attached ``snapshot``, and ``link_loss_failsafe`` (``stopped_pumps``: those channels of
        ``node_uid`` are now off). Everything else only becomes a zone event, which the actor records."""
        ts = details.get("ts")
        event_ts = float(ts) if _finite(ts) and isinstance(ts, int | float) and not isinstance(ts, bool) else now
        if code == LEVEL_SWITCH_CHANGED:
            level_role = role if role in LEVELS else _level_role(details.get("channel"))
            wet = _bool(details.get("state"))
            if level_role is not None and wet is not None:
                self._set_level(level_role, wet, event_ts)
        snapshot = details.get("snapshot")
        if isinstance(snapshot, Mapping):
            self._apply_snapshot(snapshot, now)
        if code == LINK_LOSS_FAILSAFE and node_uid is not None:
            stopped = details.get("stopped_pumps")
            for channel in stopped if isinstance(stopped, list) else ():
                stopped_role = self.role_of(node_uid, channel) if isinstance(channel, str) else None
                if stopped_role is not None:
                    self._confirm(stopped_role, False, now)
        return self._after_change(now)

    def apply_error(self, role: Role | None, error_code: str | None, details: Mapping[str, Any],
                    now: float) -> list[safety.Detection]:
        """A node ``error`` message (level ERROR). ``overcurrent`` on a pump (or on a node channel we cannot
        place) is a detection and a failure of that pump."""
        if error_code != "overcurrent" or (role is not None and role not in PUMPS):
            return self._after_change(now)
        detection = safety.overcurrent(role, details)
        if role is not None:
            self._record_failure(role, now)
        return [self._record(detection, now), *self._after_change(now)]

    def apply_node_online(self, node_uid: str, online: bool, now: float) -> list[safety.Detection]:
        """A node went online or offline (from heartbeats/last-seen, not a replayed LWT)."""
        self.nodes_online[node_uid] = online
        return self._after_change(now)

    def apply_command_sent(self, role: Role, on: bool, cmd_id: str, now: float, *,
                           timed: bool = False) -> list[safety.Detection]:
        """A start (``on``) or stop command for ``role`` was sent: it is now the desired state. Commands to
        roles that are not actuators (``state`` probes, sensor mode) are not tracked here. A ``timed`` start
        (``run_pump``, ``dose``, a ``set_relay`` with a duration) runs from its ``ACK`` and has stopped by
        itself when it is ``DONE``."""
        if role not in ACTUATORS:
            return self._after_change(now)
        self._seq += 1
        self._pending[cmd_id] = _Pending(role, on, self._seq, timed=timed and on)
        current = self.actuators.get(role, Actuator())
        self.actuators[role] = msgspec.structs.replace(current, desired=on, desired_at=now, cmd_id=cmd_id)
        return self._after_change(now)

    def apply_command_ack(self, cmd_id: str, now: float) -> list[safety.Detection]:
        """The node accepted a command: a timed run is running now (until its terminal)."""
        pending = self._pending.get(cmd_id)
        if pending is not None and pending.timed and pending.seq >= self._confirmed_seq.get(pending.role, 0):
            self._confirmed_seq[pending.role] = pending.seq
            self._confirm(pending.role, True, now)
        return self._after_change(now)

    def apply_command_terminal(self, role: Role | None, cmd_id: str, status: str, error_code: str | None,
                               now: float) -> list[safety.Detection]:
        """The first terminal status of a command this state saw sent (later ones and unknown ``cmd_id``
        change nothing: the first terminal is final). ``DONE`` confirms the command's state, unless a newer
        command of that role was already confirmed; a failed pump start counts as a failure of the pump."""
        del role  # the command's own role (from when it was sent) decides: cmd_ids are unique
        pending = self._pending.pop(cmd_id, None)
        if pending is None:
            return self._after_change(now)
        detections: list[safety.Detection] = []
        if status == "DONE" and pending.timed:
            if pending.seq >= self._confirmed_seq.get(pending.role, 0):  # no newer command confirmed since
                self._confirmed_seq[pending.role] = pending.seq
                self._confirm(pending.role, False, now)  # the run is over: the node stopped it
                current = self.actuators[pending.role]
                if current.cmd_id == cmd_id:
                    self.actuators[pending.role] = msgspec.structs.replace(current, desired=False)
        elif status == "DONE":
            if pending.seq > self._confirmed_seq.get(pending.role, 0):
                self._confirmed_seq[pending.role] = pending.seq
                self._confirm(pending.role, pending.on, now)
        elif pending.on and pending.role in PUMPS and status in FAILURE_STATUSES:
            self._record_failure(pending.role, now)
            if error_code == "overcurrent":
                detections.append(self._record(safety.overcurrent(pending.role, {"cmd_id": cmd_id}), now))
        return [*detections, *self._after_change(now)]

    def apply_snapshot(self, snapshot: Mapping[str, Any], now: float) -> list[safety.Detection]:
        """A ``storage_state`` snapshot: the node's own view of its valves, pump and level switches."""
        self._apply_snapshot(snapshot, now)
        return self._after_change(now)

    def tick(self, now: float) -> list[safety.Detection]:
        """Time passed: the detections that need no input (no flow), and failures leave the window."""
        return self._after_change(now)

    def next_deadline(self, now: float) -> float | None:
        """The earliest time after ``now`` at which :meth:`tick` may find something no input brings, or
        None when nothing time-based is pending: ticking at any moment before the next input would then
        change nothing (no detection, no episode ending, no failure leaving the window).

        What depends on time in this state, all of it evaluated by ``_after_change`` (the gate and the view
        read the clock themselves, when asked), and when each may flip with no input:

        - ``no_flow``: the main pump confirmed running (no stop on its way, a flow sensor bound or heard)
          for ``no_flow_window_s``, with the last flow reading above ``flow_present_min`` and the last
          level switch change both older than the window: due at the latest of ``since + window``,
          ``flow.ts + window`` and ``changed_at + window`` of every level;
        - ``pump_stuck_on``: a stop was asked ``no_flow_window_s`` ago (``desired_at + window``); after
          that the evidence (readings taken since) needs no more time;
        - running dry: its episode ends (so that the next dry report is a new alert) when the dry minimum
          switch under the running main pump goes stale (``ts + level_stale_s``);
        - a pump's failure leaves ``failure_window_s`` (``at + window``).

        Each is monotone between two inputs (once flipped it stays flipped until an input changes the
        state), so a tick at each deadline sees everything a tick every second would, no later.
        Strict comparisons flip just after their boundary: those deadlines are ``_JUST_AFTER`` later.

        As of the last evaluation: ask after an ``apply_*`` or a :meth:`tick`. What changes the state without
        one (:meth:`update_settings`, :meth:`reset_safety_locks`) is followed by a tick (the zone actor does).
        """
        rules = self.settings.safety
        due: list[float] = []
        pump = self.actuators.get(Role.PUMP_MAIN)
        if pump is not None and pump.confirmed is True and pump.since is not None and pump.desired is not False \
                and (Role.FLOW in self.devices or Role.FLOW in self.readings):
            window = rules.no_flow_window_s
            at = pump.since + window
            flow = self.readings.get(Role.FLOW)
            if flow is not None and flow.value > rules.flow_present_min:
                at = max(at, flow.ts + window + _JUST_AFTER)
            for level in self.levels.values():
                if level.changed_at is not None:
                    at = max(at, level.changed_at + window + _JUST_AFTER)
            due.append(at)
        if pump is not None and pump.desired is False and pump.desired_at is not None:
            due.append(pump.desired_at + rules.no_flow_window_s)
        if pump is not None and pump.confirmed is True:
            for tank in safety.source_tanks(self, self.settings, Role.PUMP_MAIN):
                low = self.levels.get(tank.min_role)
                if low is not None and not low.state:
                    due.append(low.ts + rules.level_stale_s + _JUST_AFTER)
        for ats in self.failures.values():
            due.extend(at + rules.failure_window_s + _JUST_AFTER for at in ats)
        return min((at for at in due if at > now), default=None)

    # --- alerts ------------------------------------------------------------------------------------------

    def record_detection(self, detection: safety.Detection, now: float) -> safety.Detection:
        """Record a detection made elsewhere (the gate's dry run) as an active alert; returns it. Not a
        failure of the pump: a refused start never ran it."""
        return self._record(detection, now)

    def restore_alert(self, code: str, dedupe_key: str, severity: safety.Severity, *, first_seen: float,
                      last_seen: float, count: int = 1) -> None:
        """An alert active in the database (at boot): the gate must honour it before anything happens."""
        self.alerts[(code, dedupe_key)] = ActiveAlert(code=code, dedupe_key=dedupe_key, severity=severity,
                                                      first_seen=first_seen, last_seen=last_seen, count=count)

    def resolve_alert(self, code: str, dedupe_key: str | None = None) -> list[ActiveAlert]:
        """An alert was resolved (by an operator, or the actor): forget it (all keys when ``dedupe_key`` is
        None). Returns what was resolved."""
        keys = [key for key in self.alerts if key[0] == code and (dedupe_key is None or key[1] == dedupe_key)]
        resolved = [self.alerts.pop(key) for key in keys]
        # the condition behind it starts a new episode: still present at the next tick, it is raised
        # again (a reset never silences a pump that still has no flow)
        self._episodes.difference_update(
            (name, role) for name, role in list(self._episodes)
            if _CONDITION_CODES.get(name) == code and (dedupe_key is None or role == dedupe_key))
        return resolved

    def reset_safety_locks(self) -> list[ActiveAlert]:
        """The operator's "reset safety lock": every lock alert resolved and the pumps' failure history
        cleared (the person who inspected the plant vouches for it). Returns the alerts resolved."""
        resolved: list[ActiveAlert] = []
        for code in safety.LOCK_CODES:
            resolved.extend(self.resolve_alert(code))
        self.failures.clear()
        return resolved

    # --- view --------------------------------------------------------------------------------------------

    def safety_locks(self, now: float) -> list[SafetyLock]:
        """What currently makes the gate refuse regardless of levels: lock alerts and failure limits."""
        locks = [SafetyLock(reason_code=safety.lock_reason(alert.code), role=alert.dedupe_key,
                            detail=f"{alert.code} x{alert.count}")
                 for alert in sorted(self.alerts.values(), key=lambda a: (a.code, a.dedupe_key))
                 if alert.code in safety.LOCK_CODES]
        rules = self.settings.safety
        for role in sorted(self.failures):
            count = self.failures_within(role, now, rules.failure_window_s)
            if count >= rules.max_failures:
                locks.append(SafetyLock(reason_code=safety.PUMP_FAILURE_LIMIT, role=role.value,
                                        detail=f"{count} failures in {rules.failure_window_s} s"))
        return locks

    def to_view(self, now: float) -> ZoneStateView:
        """The state as ``GET /api/v1/zones/{uid}/state`` shows it, ages computed at ``now``."""
        return ZoneStateView(
            readings={role.value: ReadingView(value=r.value, ts=r.ts, age_s=max(0.0, now - r.ts), flags=r.flags)
                      for role, r in sorted(self.readings.items())},
            actuators={role.value: ActuatorView(desired=a.desired, confirmed=a.confirmed, since=a.since,
                                                cmd_id=a.cmd_id)
                       for role, a in sorted(self.actuators.items())},
            levels={role.value: LevelView(state=lv.state, ts=lv.ts, age_s=max(0.0, now - lv.ts))
                    for role, lv in sorted(self.levels.items())},
            nodes_online=dict(sorted(self.nodes_online.items())),
            alerts=sorted(self.alerts.values(), key=lambda a: (a.code, a.dedupe_key)),
            safety_locks=self.safety_locks(now),
            water_state=self.water_state,
            workflow=self.workflow,
        )

    # --- internals ---------------------------------------------------------------------------------------

    def _set_level(self, role: Role, wet: bool, ts: float) -> None:
        previous = self.levels.get(role)
        if previous is None:
            # the first report is not a change: no_flow must not take a restart's report for movement
            self.levels[role] = Level(state=wet, ts=ts)
        elif ts >= previous.ts:  # an older report must not undo a newer one
            changed_at = previous.changed_at if previous.state == wet else ts
            self.levels[role] = Level(state=wet, ts=ts, changed_at=changed_at)

    def _apply_snapshot(self, snapshot: Mapping[str, Any], now: float) -> None:
        for key, value in snapshot.items():
            role = SNAPSHOT_KEYS.get(key) if isinstance(key, str) else None
            state = _bool(value)
            if role is None or state is None:
                continue
            if role in LEVELS:
                self._set_level(role, state, now)
            else:
                self._confirm(role, state, now)

    def _confirm(self, role: Role, on: bool, now: float) -> None:
        if role not in ACTUATORS:
            return
        current = self.actuators.get(role, Actuator())
        if current.confirmed is on and current.since is not None:
            return
        self.actuators[role] = msgspec.structs.replace(current, confirmed=on, since=now)

    def _record_failure(self, role: Role, now: float) -> None:
        self.failures.setdefault(role, []).append(now)
        self._prune_failures(now)

    def _prune_failures(self, now: float) -> None:
        window = self.settings.safety.failure_window_s
        for role in list(self.failures):
            kept = [at for at in self.failures[role] if at > now - window]
            if kept:
                self.failures[role] = kept
            else:
                del self.failures[role]

    def _record(self, detection: safety.Detection, now: float) -> safety.Detection:
        key = (detection.code, detection.dedupe_key)
        alert = self.alerts.get(key)
        if alert is None:
            self.alerts[key] = ActiveAlert(code=detection.code, dedupe_key=detection.dedupe_key,
                                           severity=detection.severity, first_seen=now, last_seen=now)
        else:
            severity: safety.Severity = "critical" if "critical" in (alert.severity, detection.severity) \
                else "warning"
            self.alerts[key] = msgspec.structs.replace(alert, last_seen=max(alert.last_seen, now),
                                                       count=alert.count + 1, severity=severity)
        return detection

    def _after_change(self, now: float) -> list[safety.Detection]:
        """The condition detections, each reported once per episode (entering it), and the dry run of a
        running main pump whose source tank went dry."""
        self._prune_failures(now)
        found: list[safety.Detection] = []
        conditions = (("no_flow", safety.no_flow(self, self.settings, now)),
                      ("stuck_on", safety.pump_stuck_on(self, self.settings, now)),
                      ("running_dry", self._running_dry(now)))
        for name, detection in conditions:
            key = (name, Role.PUMP_MAIN.value)
            if detection is None:
                self._episodes.discard(key)
                continue
            if key in self._episodes:
                continue
            self._episodes.add(key)
            if detection.dedupe_key in PUMPS:
                self._record_failure(Role(detection.dedupe_key), now)
            found.append(self._record(detection, now))
        return found

    def _running_dry(self, now: float) -> safety.Detection | None:
        # the gate catches a dry start; this catches a tank running dry under a pump that is on
        settings = self.settings
        pump = self.actuators.get(Role.PUMP_MAIN)
        if pump is None or pump.confirmed is not True:
            return None
        for tank in safety.source_tanks(self, settings, Role.PUMP_MAIN):
            low = self.levels.get(tank.min_role)
            if low is not None and not low.state and now - low.ts <= settings.safety.level_stale_s:
                return safety.dry_run(Role.PUMP_MAIN, tank, reason="running")
        return None


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _bool(value: object) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return value == 1
    return None


def _level_role(channel: object) -> Role | None:
    if isinstance(channel, str) and channel in {role.value for role in LEVELS}:
        return Role(channel)
    return None
