"""Actor crashes and hangs, injected for real through the actors' mailboxes: restarts within the
intensity stay local, one crash too many escalates exactly one level, a hung handler is abandoned
and restarted by the liveness probe. Failures supervision contains are not system errors; an
escalation reaching a top-level subtree is one."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from tests.faults.conftest import (
    PH_CHANNELS,
    Ingest,
    Running,
    incident,
    inject,
    metric,
    seed_node,
    seed_zone,
    state,
    transitions,
    wait_all_stored,
    wait_chaos_over,
    wait_state,
)
from tests.helpers import http, wait_until

pytestmark = pytest.mark.fault_injection

STORE_INTENSITY = 3  # /store: at most 3 restarts in 10 s (hydrovisor/tree.py)


def actor(base: str, path: str) -> dict[str, Any]:
    data: dict[str, Any] = http("GET", base + "/api/v1/actors" + path).json()["data"]
    return data


def restarts(base: str, path: str = "") -> dict[str, int]:
    """restarts_total of each child of ``path`` (the root when empty)."""
    return {c["path"]: c["restarts_total"] for c in actor(base, path)["children"]}


def supervisor_lines(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"supervisor {event} ")]


def test_crashes_within_the_intensity_restart_the_actor_only(app: Running,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """3 crashes of /store/rollups: 3 restarts by /store, nothing above it moves. Supervision contained
    them, so none is a system error: the system stays RUNNING."""
    base = app.base_url
    caplog.set_level(logging.INFO)
    before_root = restarts(base)
    chaos_id = inject(base, "actor_crash", 1.0, path="/store/rollups", count=STORE_INTENSITY)
    wait_until(lambda: restarts(base, "/store")["/store/rollups"] == STORE_INTENSITY, timeout=10,
               what="rollups restarted 3 times")
    chaos = wait_chaos_over(base, chaos_id)

    assert chaos["attributes"] == {**chaos["attributes"], "path": "/store/rollups", "count": "3", "outcome": "ended"}
    assert restarts(base) == before_root  # no subtree restarted: the failure stayed under /store
    rollups = actor(base, "/store/rollups")
    assert rollups["state"] == "running"
    assert "injected crash" in str(rollups["last_failure"]), rollups["last_failure"]
    assert {k: v for k, v in restarts(base, "/store").items() if k != "/store/rollups"} == {
        "/store/db_health": 0, "/store/telemetry_writer": 0, "/store/notifier": 0}
    assert supervisor_lines(caplog, "escalation") == []
    assert state(base) == "RUNNING"
    assert transitions(base) == []
    assert metric(base, "hydrovisor_system_errors_reported_total", 'owner="supervisor"') == 0
    assert metric(base, "hydrovisor_actor_restarts_total", 'path="/store/rollups",reason="crash"') == 3
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("CHAOS_INJECTION_TRIGGERED") and chaos_id in m for m in messages)


def test_one_crash_beyond_the_intensity_escalates_exactly_one_level(app: Running,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """4 crashes of /store/rollups: the 4th exceeds /store's intensity, /store gives up and the root
    restarts the /store subtree once; the root itself and every other subtree are untouched. The
    telemetry writer is stopped and started with its subtree: every sample accepted meanwhile is stored."""
    base = app.base_url
    caplog.set_level(logging.INFO)
    seed_zone(base)
    seed_node(base, "nd-ph-1", "esp32-00000000aa01", "s" * 32, PH_CHANNELS, node_type="ph")
    before_root = restarts(base)
    assert before_root["/store"] == 0
    with Ingest(base, "nd-ph-1", "ph_sensor", "PH") as ingest:
        wait_until(lambda: ingest.accepted >= 40, timeout=10, what="ingest flowing")
        chaos_id = inject(base, "actor_crash", 1.0, path="/store/rollups", count=STORE_INTENSITY + 1)
        wait_until(lambda: restarts(base)["/store"] == 1, timeout=10, what="/store restarted by the root")
        wait_chaos_over(base, chaos_id)
        wait_state(base, "RUNNING", timeout=15)
        accepted = ingest.accepted
        wait_until(lambda: ingest.accepted >= accepted + 40, timeout=10, what="ingest after")
    assert ingest.refused == []
    wait_all_stored(app, ingest.accepted)

    assert restarts(base) == {**before_root, "/store": 1}  # exactly one level up, exactly once
    store = actor(base, "/store")
    assert store["state"] == "running"
    assert "reached_max_restart_intensity" in str(store["last_failure"])
    # a fresh /store: its children are new incarnations, all running
    assert {c["path"]: c["state"] for c in store["children"]} == dict.fromkeys(
        ["/store/db_health", "/store/telemetry_writer", "/store/rollups", "/store/notifier"], "running")
    escalations = supervisor_lines(caplog, "escalation")
    assert len(escalations) == 1, escalations
    assert escalations[0].startswith("supervisor escalation /store ")
    assert supervisor_lines(caplog, "root_exited") == []
    # the 4 crashes were contained; the escalation reaching the top-level /store is one system error
    assert metric(base, "hydrovisor_system_errors_reported_total", 'owner="supervisor"') == 1
    assert ("DEGRADED", "SAFE_MODE") not in transitions(base)
    assert metric(base, "hydrovisor_actor_restarts_total", 'path="/store",reason="reached_max_restart_intensity"') == 1
    assert http("GET", base + "/health/ready").status == 200


def test_a_hung_actor_is_abandoned_and_restarted(app: Running, caplog: pytest.LogCaptureFixture) -> None:
    """actor_hang on /store/rollups for 2 s with a 0.5 s hang timeout: the liveness probe abandons the
    stuck incarnation and restarts it while the handler is still blocked."""
    base = app.base_url
    caplog.set_level(logging.INFO)
    chaos_id = inject(base, "actor_hang", 2.0, path="/store/rollups")
    wait_until(lambda: restarts(base, "/store")["/store/rollups"] == 1, timeout=5, what="hung rollups restarted")
    assert incident(base, chaos_id)["closed_at"] is None  # restarted while the hang was still going on
    # restarts_total counts the decision; the new incarnation may still be in on_start
    rollups = wait_until(lambda: (found := actor(base, "/store/rollups"))["state"] == "running" and found,
                         timeout=5, what="rollups running again")
    assert "hung" in str(rollups["last_failure"]), rollups["last_failure"]
    chaos = wait_chaos_over(base, chaos_id)
    assert chaos["attributes"]["outcome"] == "ended"
    wait_state(base, "RUNNING", timeout=10)
    assert restarts(base, "/store")["/store/rollups"] == 1  # released at the end: no second restart
    assert metric(base, "hydrovisor_actor_restarts_total", 'path="/store/rollups",reason="hung"') == 1
    messages = [r.getMessage() for r in caplog.records]
    exits = [m for m in messages if m.startswith("supervisor child_exited /store/rollups")]
    assert len(exits) == 1 and "busy for over 0.5s" in exits[0], exits
    assert supervisor_lines(caplog, "escalation") == []
