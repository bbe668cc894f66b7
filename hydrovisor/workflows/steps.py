"""Building blocks every workflow script shares (sub-generators, used with ``yield from``).

The DOMAIN §4 guards live here once: a probe of ``storage_state`` before each critical stage that must
match what the workflow believes (``irr_state_mismatch``); pumps stop before valves close and valves open
before pumps start; a stop counts only when DONE (retried, it is always safe to send again); a start
that is not DONE fails the stage, and the driver's compensating stop runs before the outcome is stored.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping
from typing import Any

from hydrovisor.workflows.context import WorkflowContext
from hydrovisor.workflows.effects import AnswerStops, Decide, Effect, Fail, Send, Sent
from hydrovisor.zones.roles import PUMPS, Role
from hydrovisor.zones.safety import starts_actuator
from hydrovisor.zones.state import SNAPSHOT_KEYS

Steps = Generator[Effect, Any, Any]
STOP_ATTEMPTS = 3
PROBE_ATTEMPTS = 3
SENSOR_CHANNEL = "system"  # pH/EC nodes take sensor mode commands on their system channel
SENSORS = (Role.PH_SENSOR, Role.EC_SENSOR)
PLANT = (Role.PUMP_MAIN, Role.PUMP_DRAIN, Role.VALVE_CLEAN_FILL, Role.VALVE_CLEAN_SUPPLY, Role.VALVE_SOLUTION_FILL,
         Role.VALVE_SOLUTION_SUPPLY, Role.VALVE_IRRIGATION, Role.VALVE_FILL)
"""What a ``storage_state`` snapshot reports (two tanks or one) and a compensating stop may have to stop, pumps
first."""


def stop_order(roles: Iterable[Role]) -> list[Role]:
    """Pumps first, then valves (a pump must never push against a closing path)."""
    unique = set(roles)
    return [r for r in PLANT if r in unique] + sorted(r for r in unique if r not in PLANT)


def snapshot_state(snapshot: Mapping[str, Any]) -> dict[Role, bool]:
    """A ``storage_state`` snapshot as roles -> on/wet (unknown keys ignored)."""
    state: dict[Role, bool] = {}
    for key, role in SNAPSHOT_KEYS.items():
        value = snapshot.get(key)
        if isinstance(value, bool | int) and not isinstance(value, float):
            state[role] = bool(value)
    return state


def probe(stage: str) -> Steps:
    """``state{}`` on ``storage_state``: the node's own snapshot (roles -> on/wet), or fail the stage.

    A probe only reads, so an unanswered one is asked again (a reply lost or late under load must not fail a
    stage); ``PROBE_ATTEMPTS`` unanswered in a row fail it with the last reason."""
    why = "unknown"
    for attempt in range(1, PROBE_ATTEMPTS + 1):
        sent: Sent = yield Send(Role.STORAGE_STATE, "state")
        state = _snapshot_of(sent)
        if state is not None:
            return state
        why = sent.why
        if attempt < PROBE_ATTEMPTS:
            yield Decide("retry", "probe_unanswered", {"stage": stage, "attempt": attempt, "why": why})
    raise Fail(f"{stage}_probe_failed", f"the state probe was not answered DONE with a snapshot ({why})")


def probe_quietly() -> Steps:
    """One probe that returns None instead of failing (compensation: without an answer it stops everything)."""
    sent: Sent = yield Send(Role.STORAGE_STATE, "state")
    return _snapshot_of(sent)


def _snapshot_of(sent: Sent) -> dict[Role, bool] | None:
    snapshot = (sent.details or {}).get("snapshot") if sent.done else None
    return snapshot_state(snapshot) if isinstance(snapshot, Mapping) else None


def expect_stopped(stage: str, keep_on: tuple[Role, ...] = ()) -> Steps:
    """Probe; anything found running or open is stopped (confirmed) and probed again; still not stopped:
    ``irr_state_mismatch``. ``keep_on``: roles that may stay as they are (a normally-closed recirculation
    pump runs by default). Returns the last snapshot (its levels are fresh)."""
    state: dict[Role, bool] = yield from probe(stage)
    running = [r for r in PLANT if state.get(r) and r not in keep_on]
    if not running:
        return state
    yield Decide("run", "stopping_leftovers", {"stage": stage, "roles": [r.value for r in running]})
    yield from stop_or_fail(running, stage)
    state = yield from probe(stage)
    still = [r.value for r in PLANT if state.get(r) and r not in keep_on]
    if still:
        raise Fail("irr_state_mismatch", f"{', '.join(still)} still on after a confirmed stop")
    return state


def inconsistent(state: Mapping[Role, bool], tank: str) -> bool:
    """``level_<tank>_max`` wet while ``level_<tank>_min`` dry: ``sensor_state_inconsistent``."""
    return bool(state.get(Role(f"level_{tank}_max"))) and state.get(Role(f"level_{tank}_min")) is False


def check_levels(state: Mapping[Role, bool], tanks: tuple[str, ...] = ("clean", "solution")) -> None:
    """Fail on an impossible pair of level switches."""
    for tank in tanks:
        if inconsistent(state, tank):
            raise Fail("sensor_state_inconsistent", f"level_{tank}_max=1 while level_{tank}_min=0")


def start(roles: Iterable[Role], stage: str) -> Steps:
    """Open/start ``roles`` in order (valves before the pump: callers list them so); each must be DONE.
    Nothing starts while a stop sent without waiting is unanswered or was not answered DONE
    (:func:`confirm_loose_stops`)."""
    yield from confirm_loose_stops(stage)
    for role in roles:
        sent: Sent = yield Send(role, "set_relay", {"state": 1})
        if not sent.done:
            raise Fail(f"{stage}_start_failed", f"{role.value} did not start: {sent.why}")


def stop(roles: Iterable[Role]) -> Steps:
    """Stop ``roles`` (pumps first), each retried up to ``STOP_ATTEMPTS`` times; returns those not confirmed.

    Only DONE confirms a stop. ``NO_EFFECT`` ("already off") is the node's word, not a confirmation: a
    probe follows, and its snapshot (a DONE reply) must show the role off.
    """
    unconfirmed: list[Role] = []
    already_off: list[Role] = []
    for role in stop_order(roles):
        for _ in range(STOP_ATTEMPTS):
            sent: Sent = yield Send(role, "set_relay", {"state": 0})
            if sent.done or sent.refused == "role_not_configured":
                break
            if sent.status == "NO_EFFECT":
                already_off.append(role)
                break
        else:
            unconfirmed.append(role)
    if already_off:
        state: dict[Role, bool] | None = yield from probe_quietly()
        unconfirmed += [r for r in already_off if state is None or state.get(r) is not False]
    return stop_order(unconfirmed)


def confirm_loose_stops(stage: str) -> Steps:
    """Before a start: wait for the answers to the stops sent without waiting (:func:`stop_blindly`, a stop
    beside the script); a role whose such stop was not answered DONE (``NO_EFFECT``: it was off; a reply lost
    in a restart) is stopped again, confirmed, else ``<stage>_stop_not_confirmed``. A start must never go out
    while a stop to its node is unanswered."""
    loose: list[Role] = yield AnswerStops()
    if loose:
        yield from stop_or_fail(loose, stage)


def is_stop(send: Send) -> bool:
    """``set_relay`` off: what :func:`stop` sends."""
    return send.cmd == "set_relay" and not starts_actuator(send.cmd, send.params)


def stop_blindly(roles: Iterable[Role]) -> Steps:
    """Stop the pumps among ``roles`` without waiting for their replies, once each: a pump that may be running
    on an empty tank stops now, not after a probe's round trip (or its timeout, when the node cannot be
    heard). The confirmed stop still follows; this one only shortens the time the pump may run."""
    for role in stop_order(r for r in roles if r in PUMPS):
        yield Send(role, "set_relay", {"state": 0}, wait=False, best_effort=True)


def stop_or_fail(roles: Iterable[Role], stage: str) -> Steps:
    """:func:`stop`, failing with ``<stage>_stop_not_confirmed`` when a stop is not DONE."""
    unconfirmed: list[Role] = yield from stop(roles)
    if unconfirmed:
        raise Fail(f"{stage}_stop_not_confirmed", f"stop of {', '.join(r.value for r in unconfirmed)} not confirmed")


def sensor_mode(ctx: WorkflowContext, on: bool) -> Steps:
    """(De)activate sensor mode on the zone's pH and EC nodes (one command per node); returns the nodes
    whose command was not DONE."""
    cmd = "activate_sensor_mode" if on else "deactivate_sensor_mode"
    failed: list[str] = []
    seen: set[str] = set()
    for role in SENSORS:
        device = ctx.device(role)
        if device is None or device.node_uid in seen:
            continue
        seen.add(device.node_uid)
        sent: Sent = yield Send(role, cmd, channel=SENSOR_CHANNEL)
        if not sent.done:
            failed.append(device.node_uid)
    return failed


def compensate(roles: Iterable[Role], ctx: WorkflowContext, sensors_active: bool) -> Steps:
    """The compensating stop after a failure, a cancel, an emergency stop or an interrupted run: every
    role that may be on is stopped (pumps first), sensor mode is left; returns the roles not confirmed.

    The pumps are stopped blindly first (:func:`stop_blindly`); then a probe: a role its snapshot shows off is
    confirmed off already (no stop to send, which the node would answer ``NO_EFFECT``); without an answer
    every role is stopped."""
    candidates = list(roles)
    yield from stop_blindly(candidates)
    if candidates:
        state: dict[Role, bool] | None = yield from probe_quietly()
        if state is not None:
            candidates = [r for r in candidates if state.get(r) is not False]
    unconfirmed: list[Role] = yield from stop(candidates)
    if sensors_active:
        yield from sensor_mode(ctx, False)
    return unconfirmed
