"""The workflow building blocks, driven by hand (pure: a script is a generator of effects)."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import pytest

from hydrovisor.workflows.context import flags_problem
from hydrovisor.workflows.effects import AnswerStops, Decide, Effect, Fail, Send, Sent, Stage, Wait, Waited
from hydrovisor.workflows.steps import expect_stopped, start, stop, stop_order
from hydrovisor.zones.roles import Role

Answer = Callable[[Effect], Any]


def drive(script: Generator[Effect, Any, Any], answer: Answer) -> tuple[Any, list[Effect]]:
    """Run ``script`` to its end, answering every effect with ``answer``; returns (result, effects)."""
    seen: list[Effect] = []
    value: Any = None
    while True:
        try:
            effect = script.send(value)
        except StopIteration as end:
            return end.value, seen
        seen.append(effect)
        value = answer(effect)


def snapshot(**on: bool) -> Sent:
    keys = {"pump_main": False, "valve_clean_fill": False, "valve_solution_supply": False, "clean_level_min": True}
    return Sent(cmd_id="probe", status="DONE", details={"snapshot": {**keys, **on}})


def relay(status: str, probe: Sent | None = None) -> Answer:
    def answer(effect: Effect) -> Any:
        assert isinstance(effect, Send)
        if effect.cmd == "state":
            return probe or snapshot()
        return Sent(cmd_id=f"c-{effect.role.value}", status=status)
    return answer


def test_stops_go_pumps_first_and_done_confirms() -> None:
    unconfirmed, effects = drive(stop([Role.VALVE_IRRIGATION, Role.PUMP_MAIN, Role.VALVE_SOLUTION_SUPPLY]),
                                 relay("DONE"))
    assert unconfirmed == []
    assert [e.role for e in effects if isinstance(e, Send)] == [Role.PUMP_MAIN, Role.VALVE_SOLUTION_SUPPLY,
                                                                Role.VALVE_IRRIGATION]
    assert stop_order([Role.VALVE_FILL, Role.PUMP_DRAIN, Role.PUMP_MAIN]) == [Role.PUMP_MAIN, Role.PUMP_DRAIN,
                                                                               Role.VALVE_FILL]


def test_no_effect_is_confirmed_only_by_a_probe_showing_it_off() -> None:
    unconfirmed, effects = drive(stop([Role.VALVE_CLEAN_FILL]), relay("NO_EFFECT", snapshot(valve_clean_fill=False)))
    assert unconfirmed == [] and [e.cmd for e in effects if isinstance(e, Send)] == ["set_relay", "state"]
    unconfirmed, _ = drive(stop([Role.VALVE_CLEAN_FILL]), relay("NO_EFFECT", snapshot(valve_clean_fill=True)))
    assert unconfirmed == [Role.VALVE_CLEAN_FILL]
    unconfirmed, _ = drive(stop([Role.VALVE_CLEAN_FILL]), relay("NO_EFFECT", Sent(cmd_id="p", status="TIMEOUT")))
    assert unconfirmed == [Role.VALVE_CLEAN_FILL]  # no snapshot: not confirmed


@pytest.mark.parametrize("status", ["BUSY", "ERROR", "TIMEOUT", "SEND_FAILED"])
def test_a_stop_is_retried_three_times_then_reported(status: str) -> None:
    unconfirmed, effects = drive(stop([Role.PUMP_MAIN]), relay(status))
    assert unconfirmed == [Role.PUMP_MAIN] and len(effects) == 3


def loose(roles: list[Role], stop_status: str, probe: Sent | None = None) -> Answer:
    """``roles`` have loose stops not answered DONE; every stop is answered ``stop_status``, a start DONE."""
    def answer(effect: Effect) -> Any:
        if isinstance(effect, AnswerStops):
            return roles
        assert isinstance(effect, Send)
        if effect.cmd == "state":
            return probe or snapshot()
        return Sent(cmd_id=f"c-{effect.role.value}", status="DONE" if effect.params == {"state": 1} else stop_status)
    return answer


def sent(effects: list[Effect]) -> list[tuple[str, str, Any]]:
    return [(e.role.value, e.cmd, e.params.get("state")) for e in effects if isinstance(e, Send)]


def test_a_start_waits_for_the_loose_stops_and_confirms_one_not_answered_done() -> None:
    _, effects = drive(start([Role.VALVE_CLEAN_FILL], "clean_fill"), loose([], "DONE"))
    assert isinstance(effects[0], AnswerStops) and sent(effects) == [("valve_clean_fill", "set_relay", 1)]
    # "already off" is the node's word: a stop again and a probe showing it off, then the start
    _, effects = drive(start([Role.VALVE_CLEAN_FILL], "clean_fill"), loose([Role.PUMP_MAIN], "NO_EFFECT"))
    assert sent(effects) == [("pump_main", "set_relay", 0), ("storage_state", "state", None),
                             ("valve_clean_fill", "set_relay", 1)]
    with pytest.raises(Fail) as failed:  # no stop of it is answered: nothing starts
        drive(start([Role.VALVE_CLEAN_FILL], "clean_fill"), loose([Role.PUMP_MAIN], "TIMEOUT"))
    assert failed.value.reason_code == "clean_fill_stop_not_confirmed"


def test_a_plant_found_running_is_stopped_then_must_probe_stopped() -> None:
    probes = iter([snapshot(pump_main=True), snapshot()])

    def answer(effect: Effect) -> Any:
        if isinstance(effect, Decide):
            return None
        assert isinstance(effect, Send)
        return next(probes) if effect.cmd == "state" else Sent(cmd_id="s", status="DONE")

    state, effects = drive(expect_stopped("startup"), answer)
    assert state[Role.PUMP_MAIN] is False
    assert [(e.role, e.cmd) for e in effects if isinstance(e, Send)] == [
        (Role.STORAGE_STATE, "state"), (Role.PUMP_MAIN, "set_relay"), (Role.STORAGE_STATE, "state")]

    probes = iter([snapshot(pump_main=True), snapshot(pump_main=True)])  # a welded relay the node admits to
    with pytest.raises(Fail) as failed:
        drive(expect_stopped("startup"), answer)
    assert failed.value.reason_code == "irr_state_mismatch"


def test_a_probe_unanswered_every_time_fails_the_stage_with_the_last_reason() -> None:
    with pytest.raises(Fail) as failed:
        drive(expect_stopped("clean_fill"), lambda effect: Sent(cmd_id="p", status="TIMEOUT"))
    assert failed.value.reason_code == "clean_fill_probe_failed" and "TIMEOUT" in failed.value.message


def test_a_probe_is_asked_again_when_one_reply_is_lost() -> None:
    replies = iter([Sent(cmd_id="p1", status="TIMEOUT"), Sent(cmd_id="p2", status="SEND_FAILED"), snapshot()])

    def answer(effect: Effect) -> Any:
        return next(replies) if isinstance(effect, Send) else None
    state, effects = drive(expect_stopped("clean_fill"), answer)
    assert state[Role.PUMP_MAIN] is False
    assert [e.cmd for e in effects if isinstance(e, Send)] == ["state", "state", "state"]
    retries = [e for e in effects if isinstance(e, Decide)]
    assert [(d.decision, d.reason_code, d.details["why"]) for d in retries] == [
        ("retry", "probe_unanswered", "TIMEOUT"), ("retry", "probe_unanswered", "SEND_FAILED")]


@pytest.mark.parametrize(("flags", "problem"), [
    ({"flow_active": True, "stable": True, "corrections_allowed": True}, None),
    ({"flow_active": True, "corrections_allowed": True}, None),  # firmware omits stable when stable
    (None, "missing_flags"),
    ({}, "missing_flags"),
    ({"stable": True, "corrections_allowed": True}, "missing_flags"),
    ({"flow_active": "yes", "corrections_allowed": True}, "missing_flags"),
    ({"flow_active": False, "stable": True, "corrections_allowed": True}, "flow_inactive"),
    ({"flow_active": True, "stable": False, "corrections_allowed": True}, "not_stable"),
    ({"flow_active": True, "stable": True, "corrections_allowed": False}, "corrections_not_allowed"),
])
def test_flags_gate_every_correction(flags: dict[str, Any] | None, problem: str | None) -> None:
    assert flags_problem(flags) == problem


def test_effects_are_plain_values() -> None:
    assert Waited("timeout").reason == "timeout"
    assert Stage("drain").resumable is False
    assert Wait(5.0).events == frozenset()
    refused = Sent(cmd_id=None, status=None, refused="pump_safety_blocked", reason_code="level_below_minimum")
    assert refused.why == "level_below_minimum" and not refused.done
