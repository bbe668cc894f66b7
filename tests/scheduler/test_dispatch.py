"""The scheduler end to end on a running instance: tasks posted over HTTP and tasks planned from a zone's
schedules are dispatched by the leader when due, run through the zone, and stored with their outcome."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from typing import Any

from tests.helpers import http, wait_until
from tests.zone_plant import FAST_SETTINGS, NODE_TYPES, PlantZone

ZoneFactory = Callable[..., PlantZone]


def iso(moment: dt.datetime) -> str:
    return moment.isoformat()


def post_task(zone: PlantZone, task_type: str, payload: dict[str, Any], *, due_in: float,
              expires_in: float = 120.0) -> dict[str, Any]:
    now = dt.datetime.now(dt.UTC)
    reply = http("POST", zone.base_url + "/api/v1/tasks", body={
        "zone_uid": zone.zone_uid, "task_type": task_type, "payload": payload,
        "due_at": iso(now + dt.timedelta(seconds=due_in)), "expires_at": iso(now + dt.timedelta(seconds=expires_in)),
        "correlation_id": f"test-{uuid.uuid4().hex}"})
    assert reply.status == 201, reply.raw
    task: dict[str, Any] = reply.json()["data"]
    return task


def task(zone: PlantZone, task_id: str) -> dict[str, Any]:
    reply = http("GET", f"{zone.base_url}/api/v1/tasks/{task_id}")
    assert reply.status == 200, reply.raw
    found: dict[str, Any] = reply.json()["data"]
    return found


def terminal(zone: PlantZone, task_id: str, timeout: float = 30.0) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        found = task(zone, task_id)
        return found if found["status"] not in ("accepted", "running") else None
    result: dict[str, Any] = wait_until(ended, timeout=timeout, interval=0.1, what=f"task {task_id} terminal")
    return result


def test_a_posted_task_waits_for_its_due_time_then_runs_through_the_zone(plant_zone: ZoneFactory) -> None:
    zone = plant_zone(node_types=(*NODE_TYPES, "light"))
    posted = post_task(zone, "lighting", {"state": "on"}, due_in=2.0)
    assert posted["status"] == "accepted"
    assert task(zone, posted["id"])["status"] == "accepted"  # not before its due time
    assert not zone.nodes["light"].actions.is_on("light")
    done = terminal(zone, posted["id"])
    assert (done["status"], done["decision"], done["reason_code"]) == ("completed", "run", "lighting_done"), done
    assert done["command_submitted"] and done["command_effect_confirmed"], done
    assert done["message"].endswith(": DONE"), done
    started = dt.datetime.fromisoformat(done["started_at"])
    assert started >= dt.datetime.fromisoformat(posted["due_at"])
    assert zone.nodes["light"].actions.is_on("light")
    assert [event["type"] for event in done["timeline"]][:2] == ["accepted", "running"], done["timeline"]


def test_a_task_that_meets_a_transient_refusal_is_retried_under_a_new_correlation_id(
        plant_zone: ZoneFactory) -> None:
    zone = plant_zone(node_types=(*NODE_TYPES, "light"))
    assert zone.instance.loop.run(zone.nodes["light"].go_offline(60))  # LWT: the zone sees it offline at once
    wait_until(lambda: (zone.state() or {}).get("nodes_online", {}).get(zone.uids["light"]) is False, timeout=10,
               what="the light node offline")
    posted = post_task(zone, "lighting", {"state": "on"}, due_in=0.5)
    done = terminal(zone, posted["id"])
    assert (done["status"], done["decision"]) == ("failed", "retry"), done
    retry_id = f"{posted['correlation_id']}:retry1"

    def retry() -> dict[str, Any] | None:
        reply = http("GET", f"{zone.base_url}/api/v1/tasks?zone_uid={zone.zone_uid}")
        items: list[dict[str, Any]] = reply.json()["data"]
        return next((item for item in items if item["correlation_id"] == retry_id), None)
    found: dict[str, Any] = wait_until(retry, timeout=10, what="the retry task")
    assert found["parent_correlation_id"] == posted["correlation_id"] and found["attempt"] == 2, found
    assert found["status"] == "accepted" and found["next_attempt_at"] is not None, found


def test_a_lighting_window_is_planned_into_tasks_and_switches_the_light_on_time(plant_zone: ZoneFactory) -> None:
    settings = {**FAST_SETTINGS, "lighting": {"enabled": True, "windows": [{"from": "12:00", "to": "12:05"}]}}
    zone = plant_zone(node_types=(*NODE_TYPES, "light"), settings=settings)
    services = zone.instance.app.services
    assert services is not None
    scheduler = services.scheduler
    # tomorrow, 3 s before the window (never before the zone's settings came into force: nothing to catch up)
    today = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    offset = dt.datetime.combine(today, dt.time(11, 59, 57), dt.UTC) - dt.datetime.now(dt.UTC)
    scheduler.clock = lambda: dt.datetime.now(dt.UTC) + offset

    def planned() -> list[dict[str, Any]]:
        reply = http("GET", f"{zone.base_url}/api/v1/tasks?zone_uid={zone.zone_uid}")
        items: list[dict[str, Any]] = reply.json()["data"]
        return [item for item in items if item["correlation_id"].startswith(f"sched:{zone.zone_uid}:lighting:")]

    first = wait_until(planned, timeout=10, what="the window's on task planned")
    assert first[0]["correlation_id"] == f"sched:{zone.zone_uid}:lighting:{today.isoformat()}T12:00"
    assert first[0]["status"] == "accepted" and first[0]["payload"]["state"] == "on"
    done = terminal(zone, first[0]["id"])
    assert (done["status"], done["decision"]) == ("completed", "run"), done
    assert zone.nodes["light"].actions.is_on("light")
    lag = dt.datetime.fromisoformat(done["started_at"]) - dt.datetime.fromisoformat(done["due_at"])
    assert dt.timedelta(0) <= lag < dt.timedelta(seconds=2), lag  # claimed when due (by the scheduler's clock)
    assert len(planned()) == 1  # planned once, however many planning steps ran
