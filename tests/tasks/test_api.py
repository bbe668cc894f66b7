"""The task contract over real HTTP against a running instance (real PostgreSQL): 422 per field, 404,
fail-fast terminals, idempotent replay and its 409, concurrent duplicates, listing filters, the timeline."""

from __future__ import annotations

import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import pytest

from tests.app.conftest import Running
from tests.tasks.conftest import call, in_db, iso, new_cid, task_body, utcnow


def post(running: Running, body: dict[str, Any] | bytes) -> tuple[int, dict[str, Any]]:
    reply = call(running, "POST", "/api/v1/tasks", body)
    return reply.status, reply.json()


def created(running: Running, **overrides: Any) -> dict[str, Any]:
    status, answer = post(running, task_body(**overrides))
    assert status == 201, answer
    task: dict[str, Any] = answer["data"]
    return task


def rows_with(running: Running, correlation_id: str) -> int:
    async def count(pool: asyncpg.Pool) -> int:
        value: int = await pool.fetchval("SELECT count(*) FROM tasks WHERE correlation_id = $1", correlation_id)
        return value

    result: int = in_db(running, count)
    return result


def test_accepted_task_is_stored_as_sent_and_read_back_with_its_timeline(running: Running) -> None:
    body = task_body(scheduled_for=iso(utcnow() + dt.timedelta(minutes=30)))
    status, answer = post(running, body)
    assert status == 201, answer
    task = answer["data"]
    assert task["status"] == "accepted" and task["attempt"] == 1 and task["decision"] is None
    assert task["zone_uid"] == "zn-1" and task["task_type"] == "irrigation" and task["payload"] == {"duration_s": 60}
    assert task["correlation_id"] == body["correlation_id"] and task["created_by"] in ("operator", "admin")
    assert dt.datetime.fromisoformat(task["due_at"]) == dt.datetime.fromisoformat(body["due_at"])
    assert task["id"].startswith("tk-") and task["finished_at"] is None and task["message"] is None
    assert not (task["command_submitted"] or task["command_effect_confirmed"] or task["action_required"])
    reply = call(running, "GET", f"/api/v1/tasks/{task['id']}")
    assert reply.status == 200
    detail = reply.json()["data"]
    assert {k: v for k, v in detail.items() if k != "timeline"} == task
    assert [(e["type"], e["status"]) for e in detail["timeline"]] == [("accepted", "accepted")]


@pytest.mark.parametrize(("overrides", "field"), [
    ({"due_at": "2030-01-01T06:00:00"}, "due_at"),
    ({"expires_at": "2030-01-01T07:00:00"}, "expires_at"),
    ({"scheduled_for": "2030-01-01T05:00:00"}, "scheduled_for"),
    ({"due_at": "not a time"}, "due_at"),
    ({"expires_at": "2030-02-30T07:00:00Z"}, "expires_at"),
    ({"due_at": None}, "due_at"),
    ({"due_at": ...}, "due_at"),
    ({"expires_at": ...}, "expires_at"),
    ({"task_type": ...}, "task_type"),
    ({"correlation_id": ...}, "correlation_id"),
    ({"due_at": "2030-01-01T06:00:00Z", "expires_at": "2030-01-01T06:00:00Z"}, "expires_at"),
    ({"due_at": "2030-01-01T06:00:00Z", "expires_at": "2030-01-01T05:00:00Z"}, "expires_at"),
    ({"due_at": "2030-01-01T06:00:00Z", "expires_at": "2030-01-01T07:00:00Z",
      "scheduled_for": "2030-01-01T06:00:01Z"}, "scheduled_for"),
    ({"correlation_id": "x" * 7}, "correlation_id"),
    ({"correlation_id": "x" * 129}, "correlation_id"),
    ({"correlation_id": "root-cid-1:retry1"}, "correlation_id"),
    ({"unknown": True}, "unknown"),
    ({"task_type": "sprinkle"}, "task_type"),
    ({"payload": {"duration_s": 0}}, "payload.duration_s"),
    ({"payload": {"duration_s": 3601}}, "payload.duration_s"),
    ({"payload": {"seconds": 60}}, "payload.seconds"),
    ({"task_type": "lighting", "payload": {"state": "on", "mode": "pwm", "pwm_level": 101}}, "payload.pwm_level"),
    ({"task_type": "lighting", "payload": {"state": "blink"}}, "payload.state"),
    ({"task_type": "ventilation", "payload": {"state": 1}}, "payload.state"),
    ({"task_type": "mist", "payload": {}}, "payload.duration_s"),
    ({"task_type": "solution_change", "payload": {"tank": "a"}}, "payload.tank"),
    ({"task_type": "diagnostics", "payload": {"deep": True}}, "payload.deep"),
])
def test_each_invalid_field_is_422_naming_it_and_nothing_is_stored(
        running: Running, overrides: dict[str, Any], field: str) -> None:
    body = {k: v for k, v in task_body(**overrides).items() if v is not ...}
    status, answer = post(running, body)
    assert status == 422, answer
    assert answer["status"] == "error" and answer["code"] == "invalid_field" and answer["field"] == field
    assert field in answer["message"]
    if isinstance(body.get("correlation_id"), str):
        assert rows_with(running, body["correlation_id"]) == 0


@pytest.mark.parametrize(("raw", "code"), [(b"", "empty_body"), (b"{", "invalid_json"), (b"[]", "invalid_body"),
                                           (b'"x"', "invalid_body")])
def test_a_body_that_is_no_json_object_is_400(running: Running, raw: bytes, code: str) -> None:
    reply = http_raw(running, raw)
    assert reply[0] == 400 and reply[1]["code"] == code


def http_raw(running: Running, raw: bytes) -> tuple[int, dict[str, Any]]:
    reply = call(running, "POST", "/api/v1/tasks", raw)
    return reply.status, reply.json()


def test_nul_character_is_400_naming_the_path(running: Running) -> None:
    status, answer = post(running, task_body(correlation_id="abc\x00defgh"))
    assert status == 400 and answer["code"] == "nul_character" and answer["field"] == "$.correlation_id"


def test_unknown_zone_is_404(running: Running) -> None:
    body = task_body(zone_uid="zn-missing")
    status, answer = post(running, body)
    assert status == 404 and answer["code"] == "zone_not_found"
    assert rows_with(running, body["correlation_id"]) == 0


def test_received_after_expiry_is_stored_expired_and_after_due_rejected(running: Running) -> None:
    now = utcnow()
    expired = created(running, due_at=iso(now - dt.timedelta(hours=2)), expires_at=iso(now - dt.timedelta(hours=1)))
    assert expired["status"] == "expired" and expired["reason_code"] == "task_received_after_expiry"
    rejected = created(running, due_at=iso(now - dt.timedelta(minutes=1)), expires_at=iso(now + dt.timedelta(hours=1)))
    assert rejected["status"] == "rejected" and rejected["reason_code"] == "task_received_after_due"
    for task in (expired, rejected):
        assert task["decision"] == "fail" and task["finished_at"] is not None and task["started_at"] is None
        assert not task["command_submitted"]
        assert "never executed" in task["message"], task
        timeline = call(running, "GET", f"/api/v1/tasks/{task['id']}").json()["data"]["timeline"]
        assert [e["type"] for e in timeline] == [task["status"]]


def test_replay_is_200_with_the_same_task_and_no_new_row(running: Running) -> None:
    body = task_body()
    first = created(running, **body)
    # the same instants spelled with another offset, keys in another order: the same fingerprint
    respelled = {**body, "due_at": iso(dt.datetime.fromisoformat(body["due_at"]).astimezone(
        dt.timezone(dt.timedelta(hours=5, minutes=30))))}
    for again in (body, dict(reversed(list(respelled.items())))):
        status, answer = post(running, again)
        assert status == 200, answer
        assert answer["data"] == first
    assert rows_with(running, body["correlation_id"]) == 1
    timeline = call(running, "GET", f"/api/v1/tasks/{first['id']}").json()["data"]["timeline"]
    assert len(timeline) == 1  # a replay adds no event


def test_replay_of_a_rejected_task_is_the_rejected_task(running: Running) -> None:
    now = utcnow()
    body = task_body(due_at=iso(now - dt.timedelta(seconds=5)), expires_at=iso(now + dt.timedelta(hours=1)))
    first = created(running, **body)
    status, answer = post(running, body)
    assert status == 200 and answer["data"]["id"] == first["id"] and answer["data"]["status"] == "rejected"


@pytest.mark.parametrize("change", [{"payload": {"duration_s": 61}}, {"zone_uid": "zn-2"},
                                    {"task_type": "mist"}, {"scheduled_for": None}, "due_at", "expires_at"])
def test_same_correlation_id_other_values_is_409(running: Running, change: dict[str, Any] | str) -> None:
    body = task_body(scheduled_for=iso(utcnow() + dt.timedelta(minutes=10)))
    first = created(running, **body)
    if isinstance(change, str):
        change = {change: iso(dt.datetime.fromisoformat(body[change]) + dt.timedelta(seconds=1))}
    status, answer = post(running, {**body, **change})
    assert status == 409, answer
    assert answer["code"] == "idempotency_payload_mismatch" and answer["task_id"] == first["id"]
    assert rows_with(running, body["correlation_id"]) == 1


def test_concurrent_duplicates_make_exactly_one_task(running: Running) -> None:
    body = json.dumps(task_body()).encode()
    cid = json.loads(body)["correlation_id"]
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda _: call(running, "POST", "/api/v1/tasks", body), range(20)))
    statuses = sorted(r.status for r in replies)
    assert statuses == [200] * 19 + [201], statuses
    assert len({r.json()["data"]["id"] for r in replies}) == 1
    assert rows_with(running, cid) == 1


def test_concurrent_conflicting_requests_make_one_task_and_409s(running: Running) -> None:
    cid = new_cid("race")
    bodies = [json.dumps(task_body(correlation_id=cid, payload={"duration_s": 10 + i % 2})).encode()
              for i in range(20)]
    with ThreadPoolExecutor(20) as pool:
        replies = list(pool.map(lambda raw: call(running, "POST", "/api/v1/tasks", raw), bodies))
    assert sum(r.status == 201 for r in replies) == 1
    assert {r.status for r in replies} <= {200, 201, 409}
    assert rows_with(running, cid) == 1


def test_list_filters_by_zone_status_and_since(running: Running) -> None:
    mark = utcnow()
    a = created(running, zone_uid="zn-2", task_type="ventilation", payload={"state": "on"})
    b = created(running, zone_uid="zn-2", task_type="diagnostics", payload={},
                due_at=iso(utcnow() - dt.timedelta(seconds=1)))  # rejected
    listed = call(running, "GET", f"/api/v1/tasks?zone_uid=zn-2&since={mark.timestamp() - 0.001}").json()["data"]
    assert [t["id"] for t in listed] == [b["id"], a["id"]]  # newest first
    rejected = call(running, "GET", "/api/v1/tasks?zone_uid=zn-2&status=rejected").json()["data"]
    assert b["id"] in [t["id"] for t in rejected] and all(t["status"] == "rejected" for t in rejected)
    since_iso = call(running, "GET", "/api/v1/tasks?zone_uid=zn-2&limit=1&since="
                     + (mark - dt.timedelta(milliseconds=1)).isoformat().replace("+", "%2B")).json()["data"]
    assert [t["id"] for t in since_iso] == [b["id"]]
    assert call(running, "GET", "/api/v1/tasks?zone_uid=zn-none").json()["data"] == []
    later = iso(utcnow() + dt.timedelta(hours=1)).replace("+", "%2B")
    assert call(running, "GET", f"/api/v1/tasks?since={later}").json()["data"] == []


@pytest.mark.parametrize(("query", "field", "code"), [
    ("status=done", "status", "invalid_status"), ("zone_uid=Zone%201", "zone_uid", "invalid_uid"),
    ("since=yesterday", "since", "invalid_time"), ("since=2026-12-03T06:00:00", "since", "invalid_time"),
    ("since=nan", "since", "invalid_time"), ("limit=0", "limit", "invalid_parameter"),
    ("limit=1001", "limit", "invalid_parameter"), ("limit=ten", "limit", "invalid_parameter"),
    ("status=accepted&status=running", "status", "invalid_parameter"),
])
def test_bad_list_parameters_are_400_naming_them(running: Running, query: str, field: str, code: str) -> None:
    reply = call(running, "GET", f"/api/v1/tasks?{query}")
    assert reply.status == 400, reply.raw
    assert reply.json()["code"] == code and reply.json()["field"] == field


def test_unknown_and_malformed_task_ids(running: Running) -> None:
    missing = call(running, "GET", "/api/v1/tasks/tk-" + "0" * 20)
    assert missing.status == 404 and missing.json()["code"] == "task_not_found"
    malformed = call(running, "GET", "/api/v1/tasks/42")
    assert malformed.status == 400 and malformed.json()["code"] == "invalid_task_id"


def test_a_failing_timeline_write_neither_fails_nor_duplicates_the_task(running: Running) -> None:
    async def break_events(pool: asyncpg.Pool) -> None:
        await pool.execute("ALTER TABLE task_events RENAME TO task_events_away")

    async def restore_events(pool: asyncpg.Pool) -> None:
        await pool.execute("ALTER TABLE task_events_away RENAME TO task_events")

    body = task_body()
    in_db(running, break_events)
    try:
        first = created(running, **body)
        status, answer = post(running, body)
    finally:
        in_db(running, restore_events)
    assert status == 200 and answer["data"]["id"] == first["id"]
    assert rows_with(running, body["correlation_id"]) == 1
    detail = call(running, "GET", f"/api/v1/tasks/{first['id']}").json()["data"]
    assert detail["status"] == "accepted" and detail["timeline"] == []
