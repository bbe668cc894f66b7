"""The one pump-safety gate (DOMAIN §4 "Pump safety"), the safety detections, and SAFE_MODE's rule.

- :func:`can_run_pump` is asked before **every** pump or valve start, by automation and by operators alike;
  a :class:`Refusal` carries the reason code the caller records as a zone event (and returns as 409
  ``pump_safety_blocked``). Stops are never gated: stopping is always the safer direction.
- The detections (:class:`Detection`: ``biz_overcurrent``, ``biz_no_flow``, ``biz_pump_stuck_on``,
  ``biz_dry_run``) are pure functions over the zone's state; ``ZoneState`` calls them as inputs arrive and
  the zone actor turns them into alerts. An active one of these alerts locks every pump of the zone
  until an operator resets it.
- :func:`fail_safe_allowed` is what SAFE_MODE lets through: only commands that drive an actuator to its
  fail-safe state (per its relay type) and read-only commands.

Pure: no I/O, no clock (``now`` is a parameter).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from hydrovisor.zones.roles import PUMPS, VALVES, Role
from hydrovisor.zones.settings import ResolvedDevice, ZoneSettings

if TYPE_CHECKING:  # state imports this module at run time; the gate only reads the state
    from hydrovisor.zones.state import ZoneState

# The alert codes that lock the zone's pumps until a reset, most serious first: when several are active
# the refusal names the first of this order.
OVERCURRENT: Final = "biz_overcurrent"
NO_FLOW: Final = "biz_no_flow"
DRY_RUN: Final = "biz_dry_run"
PUMP_STUCK_ON: Final = "biz_pump_stuck_on"
LOCK_CODES: Final = (PUMP_STUCK_ON, OVERCURRENT, DRY_RUN, NO_FLOW)

# Refusal reason codes (the zone event's ``reason_code``; the HTTP 409 carries the same).
ROLE_NOT_CONFIGURED: Final = "role_not_configured"
NODE_OFFLINE: Final = "node_offline"
PUMP_FAILURE_LIMIT: Final = "pump_failure_limit"
TANK_LEVEL_STALE: Final = "TANK_LEVEL_STALE"  # DOMAIN §4 spells this one in upper case
LEVEL_BELOW_MINIMUM: Final = "level_below_minimum"
SENSOR_STATE_INCONSISTENT: Final = "sensor_state_inconsistent"


def lock_reason(code: str) -> str:
    """The refusal reason for an active lock alert: ``safety_lock_biz_overcurrent`` ..."""
    return f"safety_lock_{code}"


Severity = Literal["warning", "critical"]


class Detection(msgspec.Struct, frozen=True, kw_only=True):
    """Something unsafe was observed: the zone actor raises (or counts) the alert ``code``.

    ``dedupe_key`` is the pump role, so one alert per (zone, code, pump) with a growing count.
    """

    code: str
    severity: Severity
    dedupe_key: str
    details: dict[str, Any] = {}


class Refusal(msgspec.Struct, frozen=True, kw_only=True):
    """Why a start is refused. ``detection`` is set when the refusal itself is an alarm (dry run)."""

    reason_code: str
    message: str
    detection: Detection | None = None


class Tank(msgspec.Struct, frozen=True):
    """A tank's level switches."""

    name: Literal["clean", "solution"]
    min_role: Role
    max_role: Role


CLEAN_TANK: Final = Tank("clean", Role.LEVEL_CLEAN_MIN, Role.LEVEL_CLEAN_MAX)
SOLUTION_TANK: Final = Tank("solution", Role.LEVEL_SOLUTION_MIN, Role.LEVEL_SOLUTION_MAX)


# -------------------------------------------------------------------------------------------------- gate

def can_run_pump(
    state: ZoneState, devices: Mapping[Role, ResolvedDevice], settings: ZoneSettings, role: Role, now: float
) -> Refusal | None:
    """None when ``role`` may start now, else the first reason it may not (DOMAIN §4).

    Checked in this order: the role is bound to a channel; no lock alert active in the zone; the role's
    node online; fewer than ``safety.max_failures`` failures of that pump within
    ``safety.failure_window_s``; for a pump that draws from a tank, that tank's minimum switch is fresh,
    consistent with its maximum switch, and wet. Roles that are neither pumps nor valves are not gated.
    """
    if role not in PUMPS and role not in VALVES:
        return None
    device = devices.get(role)
    if device is None:
        return Refusal(reason_code=ROLE_NOT_CONFIGURED, message=f"{role.value} is not bound to a node channel")
    active = state.active_lock_codes()
    for code in LOCK_CODES:
        if code in active:
            return Refusal(reason_code=lock_reason(code),
                           message=f"{code} is active in the zone; an operator must reset the safety lock")
    if state.nodes_online.get(device.node_uid) is not True:  # unknown counts as offline: fail closed
        return Refusal(reason_code=NODE_OFFLINE, message=f"node {device.node_uid} of {role.value} is offline")
    safety = settings.safety
    if role in PUMPS:
        failures = state.failures_within(role, now, safety.failure_window_s)
        if failures >= safety.max_failures:
            return Refusal(reason_code=PUMP_FAILURE_LIMIT,
                           message=f"{role.value} failed {failures} times in the last {safety.failure_window_s} s")
    for tank in source_tanks(state, settings, role):
        refusal = _tank_refusal(state, settings, role, tank, now)
        if refusal is not None:
            return refusal
    return None


def source_tanks(state: ZoneState, settings: ZoneSettings, role: Role) -> tuple[Tank, ...]:
    """The tanks ``role`` would draw water from when started now.

    Only the main and drain pumps draw from a tank (dosing pumps draw from their reservoirs, which have no
    switches; valves move no water by themselves); the drain pump empties the solution tank. The main pump
    draws, on a single tank, from the solution tank; on two tanks from the tank whose supply valve is open
    or being opened, and both when neither is: the node would refuse the start anyway (interlock), and not
    knowing the source must not be the way around the level check.
    """
    if role is Role.PUMP_DRAIN:
        return (SOLUTION_TANK,)
    if role is not Role.PUMP_MAIN:
        return ()
    if settings.topology == "single_tank":
        return (SOLUTION_TANK,)
    tanks = tuple(tank for tank, valve in ((CLEAN_TANK, Role.VALVE_CLEAN_SUPPLY),
                                           (SOLUTION_TANK, Role.VALVE_SOLUTION_SUPPLY))
                  if state.maybe_open(valve))
    return tanks or (CLEAN_TANK, SOLUTION_TANK)


def _tank_refusal(state: ZoneState, settings: ZoneSettings, role: Role, tank: Tank, now: float) -> Refusal | None:
    stale_after = settings.safety.level_stale_s
    low = state.levels.get(tank.min_role)
    if low is None or now - low.ts > stale_after:
        age = "no reading" if low is None else f"{now - low.ts:.0f} s old"
        return Refusal(reason_code=TANK_LEVEL_STALE,
                       message=f"{tank.min_role.value} is stale ({age}, limit {stale_after} s)")
    high = state.levels.get(tank.max_role)
    if high is not None and now - high.ts <= stale_after and high.state and not low.state:
        return Refusal(reason_code=SENSOR_STATE_INCONSISTENT,
                       message=f"{tank.max_role.value}=1 while {tank.min_role.value}=0")
    if not low.state:
        detection = dry_run(role, tank, reason="start_refused")
        return Refusal(reason_code=LEVEL_BELOW_MINIMUM,
                       message=f"the {tank.name} tank is below its minimum ({tank.min_role.value}=0)",
                       detection=detection)
    return None


# -------------------------------------------------------------------------------------------- detections

def overcurrent(role: Role | None, details: Mapping[str, Any]) -> Detection:
    """The node reported ``ERROR overcurrent`` for ``role`` (``None``: a pump of the node, unknown which)."""
    key = role.value if role is not None else "unknown"
    return Detection(code=OVERCURRENT, severity="critical", dedupe_key=key,
                     details={"role": key, **_plain(details)})


def dry_run(role: Role, tank: Tank, *, reason: str) -> Detection:
    """``role`` was asked to (or does) draw from ``tank`` below its minimum."""
    return Detection(code=DRY_RUN, severity="warning", dedupe_key=role.value,
                     details={"role": role.value, "tank": tank.name, "switch": tank.min_role.value,
                              "reason": reason})


def no_flow(state: ZoneState, settings: ZoneSettings, now: float) -> Detection | None:
    """The main pump has run (confirmed) for a whole ``no_flow_window_s`` with neither a flow reading
    above ``flow_present_min`` nor a level switch change in that window.

    Evaluated only where a flow sensor exists (the ``flow`` role bound, or flow readings seen): with level
    switches alone a healthy pump recirculating for hours changes nothing, and the alarm would be false.
    """
    pump = state.actuators.get(Role.PUMP_MAIN)
    if pump is None or pump.confirmed is not True or pump.since is None:
        return None
    if pump.desired is False:  # a stop is on its way: no flow is what we asked for
        return None
    if Role.FLOW not in state.devices and Role.FLOW not in state.readings:
        return None
    window = settings.safety.no_flow_window_s
    if now - pump.since < window:
        return None
    window_start = now - window
    flow = state.readings.get(Role.FLOW)
    if flow is not None and flow.ts >= window_start and flow.value > settings.safety.flow_present_min:
        return None
    if any(level.changed_at is not None and level.changed_at >= window_start for level in state.levels.values()):
        return None
    last_flow = None if flow is None else {"value": flow.value, "ts": flow.ts}
    return Detection(code=NO_FLOW, severity="warning", dedupe_key=Role.PUMP_MAIN.value,
                     details={"role": Role.PUMP_MAIN.value, "running_since": pump.since, "window_s": window,
                              "last_flow": last_flow})


def pump_stuck_on(state: ZoneState, settings: ZoneSettings, now: float) -> Detection | None:
    """The main pump was told to stop at least ``no_flow_window_s`` ago, yet a later reading shows pump
    current or flow: critical, needs a person (the relay may be welded).

    Flow is not evidence while the clean-fill valve is open, or within that window of its last change: mains
    water may pass the line with the pump off. Current is always evidence.
    """
    pump = state.actuators.get(Role.PUMP_MAIN)
    if pump is None or pump.desired is not False or pump.desired_at is None:
        return None
    safety = settings.safety
    settled_at = pump.desired_at + safety.no_flow_window_s  # spin-down and the sensors' sampling lag
    if now < settled_at:
        return None
    evidence: dict[str, Any] = {}
    current = state.readings.get(Role.PUMP_CURRENT)
    if current is not None and current.ts >= settled_at and current.value > safety.current_present_min:
        evidence["current"] = current.value
    flow = state.readings.get(Role.FLOW)
    fill = state.actuators.get(Role.VALVE_CLEAN_FILL)
    # mains water through an open (or just closed) clean-fill valve settles like the pump does
    flow_after = settled_at if fill is None or fill.desired_at is None \
        else max(settled_at, fill.desired_at + safety.no_flow_window_s)
    if (flow is not None and flow.ts >= flow_after and flow.value > safety.flow_present_min
            and not state.maybe_open(Role.VALVE_CLEAN_FILL)):
        evidence["flow"] = flow.value
    if not evidence:
        return None
    return Detection(code=PUMP_STUCK_ON, severity="critical", dedupe_key=Role.PUMP_MAIN.value,
                     details={"role": Role.PUMP_MAIN.value, "stop_requested_at": pump.desired_at, **evidence})


def _plain(details: Mapping[str, Any]) -> dict[str, Any]:
    # alert details are stored as JSON: keep JSON-able scalars and drop the rest rather than fail later
    return {str(key): value for key, value in details.items()
            if value is None or isinstance(value, str | bool | int)
            or (isinstance(value, float) and math.isfinite(value))}


# --------------------------------------------------------------------------------------------- SAFE_MODE

READ_ONLY: Final = frozenset({"state", "report_config"})
"""Commands that only read: always allowed."""

_ON_WORDS = frozenset({"on", "1", "true"})
_OFF_WORDS = frozenset({"off", "0", "false"})


def switch_state(value: object) -> bool | None:
    """A relay ``state`` parameter as a bool (``True``/``1``/``"on"``... vs ``False``/``0``/``"off"``...),
    or None when it is neither (a float, ``2``, a list: the node refuses those; so do we)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return value == 1
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _ON_WORDS:
            return True
        if word in _OFF_WORDS:
            return False
    return None


def fail_safe_allowed(cmd: str, params: Mapping[str, Any], channel_relay_type: str | None) -> bool:
    """True when SAFE_MODE may send ``cmd``: a read-only command, or one that drives the channel to its
    fail-safe state, the state it takes by itself when the controller is gone.

    ``set_relay``'s ``state`` is the load's state (1 = running), whatever the relay. A normally-closed
    relay (``relay_type`` ``NC``: the recirculation pump, DOMAIN §4) powers its load when de-energised, so
    its fail-safe is *on*: ``set_relay`` on (or ``light_on``) passes and switching it off does not. Any other
    relay (``NO``, or not reported) is safe *off*: ``set_relay`` off, ``set_pwm`` 0, ``light_off``. A timed
    ``set_relay`` (``duration_ms``/``timeout_ms``) reverts by itself, so it is never a fail-safe command.
    Pumps (``run_pump``), dosing and everything else are new actuation: refused.
    """
    if cmd in READ_ONLY:
        return True
    normally_closed = isinstance(channel_relay_type, str) and channel_relay_type.strip().upper() == "NC"
    if cmd == "set_relay":
        if "duration_ms" in params or "timeout_ms" in params:
            return False
        return switch_state(params.get("state")) is normally_closed
    if normally_closed:
        return cmd == "light_on"
    if cmd == "light_off":
        return True
    if cmd == "set_pwm":
        value = params.get("value")
        return isinstance(value, int | float) and not isinstance(value, bool) and value == 0
    return False


def starts_actuator(cmd: str, params: Mapping[str, Any]) -> bool:
    """True when ``cmd`` may make a load run or a valve open, so it must pass :func:`can_run_pump` first.

    Deliberately broad (anything not recognisably a stop or a read counts as a start): the gate refusing
    too much is an inconvenience, letting a start around it is not.
    """
    if cmd in READ_ONLY or cmd in {"light_off", "deactivate_sensor_mode"}:
        return False
    if cmd == "set_relay":
        # a timed set_relay reverts by itself: "off for 10 s" ends with the load running
        timed = "duration_ms" in params or "timeout_ms" in params
        return timed or switch_state(params.get("state")) is not False
    if cmd == "set_pwm":
        value = params.get("value")
        return not (isinstance(value, int | float) and not isinstance(value, bool) and value == 0)
    return True
