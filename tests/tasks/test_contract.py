"""The task contract, pure (no database, no clock): validation with field paths, the fingerprint,
fail-fast terminals, retry ids, backoff and when a retry may run."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import msgspec
import pytest

from hydrovisor.tasks.contract import (
    MAX_ATTEMPTS,
    PREDECESSORS,
    TERMINAL,
    ContractError,
    TaskRequest,
    TaskStatus,
    TaskType,
    backoff_s,
    fingerprint,
    initial_status,
    next_retry,
    parse_request,
    retry_correlation_id,
)

T0 = dt.datetime(2026, 12, 3, 6, 0, tzinfo=dt.UTC)


def body(**overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = {"zone_uid": "zn-1", "task_type": "irrigation", "payload": {"duration_s": 60},
                             "due_at": "2026-12-03T06:00:00Z", "expires_at": "2026-12-03T07:00:00Z",
                             "correlation_id": "abcdefgh"}
    value.update(overrides)
    return {k: v for k, v in value.items() if v is not ...}


def parse(**overrides: Any) -> TaskRequest:
    return parse_request(json.dumps(body(**overrides)).encode())


def field_of(**overrides: Any) -> str:
    with pytest.raises(ContractError) as caught:
        parse(**overrides)
    return caught.value.field


def test_a_valid_request_is_normalised_to_utc() -> None:
    request = parse(due_at="2026-12-03T07:00:00+01:00", scheduled_for="2026-12-03T05:59:00Z")
    assert request.due_at == T0 and request.due_at.tzinfo == dt.UTC
    assert request.task_type is TaskType.IRRIGATION and request.payload == {"duration_s": 60}


@pytest.mark.parametrize(("overrides", "field"), [
    ({"due_at": "2026-12-03T06:00:00"}, "due_at"),  # naive
    ({"expires_at": "2026-12-03T07:00:00"}, "expires_at"),
    ({"scheduled_for": "2026-12-03T05:00:00"}, "scheduled_for"),
    ({"due_at": "tomorrow"}, "due_at"),
    ({"due_at": "2026-13-03T06:00:00Z"}, "due_at"),
    ({"due_at": 1764741600}, "due_at"),
    ({"due_at": ""}, "due_at"),
    ({"due_at": "0001-01-01T00:00:00+01:00"}, "due_at"),  # before year 1 in UTC
    ({"due_at": "1969-12-31T23:59:59Z"}, "due_at"),
    ({"due_at": ...}, "due_at"),  # missing: never "now"
    ({"expires_at": ...}, "expires_at"),
    ({"zone_uid": ...}, "zone_uid"),
    ({"expires_at": "2026-12-03T06:00:00Z"}, "expires_at"),  # == due_at
    ({"expires_at": "2026-12-03T05:00:00Z"}, "expires_at"),
    ({"scheduled_for": "2026-12-03T06:00:01Z"}, "scheduled_for"),
    ({"correlation_id": "a" * 7}, "correlation_id"),
    ({"correlation_id": "a" * 129}, "correlation_id"),
    ({"correlation_id": "has space"}, "correlation_id"),
    ({"correlation_id": "abcdefgh:retry1"}, "correlation_id"),
    ({"task_type": "watering"}, "task_type"),
    ({"surprise": 1}, "surprise"),
    ({"zone_uid": "Zone 1"}, "zone_uid"),
    ({"payload": {}}, "payload.duration_s"),
    ({"payload": {"duration_s": 0}}, "payload.duration_s"),
    ({"payload": {"duration_s": 3601}}, "payload.duration_s"),
    ({"payload": {"duration_s": "60"}}, "payload.duration_s"),
    ({"payload": {"duration_s": 60, "x": 1}}, "payload.x"),
    ({"payload": []}, "payload"),
    ({"task_type": "lighting", "payload": {"state": "dim"}}, "payload.state"),
    ({"task_type": "lighting", "payload": {"state": "on", "mode": "dimmer"}}, "payload.mode"),
    ({"task_type": "lighting", "payload": {"state": "on", "mode": "pwm", "pwm_level": 0}}, "payload.pwm_level"),
    ({"task_type": "lighting", "payload": {"state": "on", "mode": "pwm", "pwm_level": 101}}, "payload.pwm_level"),
    ({"task_type": "lighting", "payload": {"state": "on", "mode": "pwm"}}, "payload.pwm_level"),
    ({"task_type": "lighting", "payload": {"state": "on", "pwm_level": 50}}, "payload.pwm_level"),
    ({"task_type": "ventilation", "payload": {}}, "payload.state"),
    ({"task_type": "mist", "payload": {"duration_s": -1}}, "payload.duration_s"),
    ({"task_type": "solution_change", "payload": {"x": 1}}, "payload.x"),
    ({"task_type": "diagnostics", "payload": {"duration_s": 1}}, "payload.duration_s"),
])
def test_each_broken_rule_names_its_field(overrides: dict[str, Any], field: str) -> None:
    assert field_of(**overrides) == field


@pytest.mark.parametrize(("task_type", "payload"), [
    ("irrigation", {"duration_s": 1}), ("irrigation", {"duration_s": 3600}),
    ("lighting", {"state": "off"}), ("lighting", {"state": "on", "mode": "relay"}),
    ("lighting", {"state": "on", "mode": "pwm", "pwm_level": 1}), ("lighting", {"state": "off", "mode": "pwm"}),
    ("ventilation", {"state": "on"}), ("mist", {"duration_s": 30}), ("solution_change", {}), ("diagnostics", {}),
])
def test_every_type_takes_its_payload(task_type: str, payload: dict[str, Any]) -> None:
    assert parse(task_type=task_type, payload=payload).payload == payload


def test_correlation_id_length_bounds_are_inclusive() -> None:
    assert parse(correlation_id="a" * 8).correlation_id == "a" * 8
    assert parse(correlation_id="a" * 128).correlation_id == "a" * 128


def test_fingerprint_is_the_instant_not_the_spelling_and_ignores_the_key() -> None:
    a = parse(due_at="2026-12-03T07:00:00+01:00", payload={"duration_s": 60})
    b = parse(due_at="2026-12-03T06:00:00.000000Z", correlation_id="another-id")
    assert fingerprint(a) == fingerprint(b)
    for changed in (parse(payload={"duration_s": 61}), parse(zone_uid="zn-2"), parse(task_type="mist"),
                    parse(expires_at="2026-12-03T07:00:01Z"), parse(scheduled_for="2026-12-03T06:00:00Z")):
        assert fingerprint(changed) != fingerprint(a)


def test_fail_fast_terminals_on_receipt() -> None:
    request = parse()  # due 06:00, expires 07:00
    assert initial_status(request, T0) == (TaskStatus.ACCEPTED, None)  # at due_at: still on time
    assert initial_status(request, T0 + dt.timedelta(microseconds=1)) == (TaskStatus.REJECTED,
                                                                           "task_received_after_due")
    assert initial_status(request, T0 + dt.timedelta(hours=1)) == (TaskStatus.EXPIRED, "task_received_after_expiry")


def test_terminal_statuses_are_no_one_s_predecessor() -> None:
    for status, before in PREDECESSORS.items():
        assert not before & TERMINAL, status
    assert set(PREDECESSORS) == set(TaskStatus)


def test_retry_ids_and_backoff() -> None:
    assert retry_correlation_id("root-0001", 1) == "root-0001:retry1"
    assert retry_correlation_id("root-0001", 2) == "root-0001:retry2"
    assert [backoff_s(n) for n in range(1, 9)] == [10, 20, 40, 80, 160, 300, 300, 300]
    assert backoff_s(10**6) == 300
    for bad in (0, -1):
        with pytest.raises(ValueError, match="retry number"):
            backoff_s(bad)
        with pytest.raises(ValueError, match="retry number"):
            retry_correlation_id("root-0001", bad)


class Task(msgspec.Struct):
    attempt: int
    expires_at: dt.datetime


def test_next_retry_honours_attempts_and_expiry() -> None:
    far = T0 + dt.timedelta(hours=1)
    assert next_retry(Task(1, far), T0) == T0 + dt.timedelta(seconds=10)
    assert next_retry(Task(2, far), T0) == T0 + dt.timedelta(seconds=20)
    assert next_retry(Task(MAX_ATTEMPTS, far), T0) is None  # 3 attempts made
    assert next_retry(Task(1, T0 + dt.timedelta(seconds=10)), T0) is None  # would run at expires_at
    assert next_retry(Task(1, T0 + dt.timedelta(seconds=11)), T0) == T0 + dt.timedelta(seconds=10)
