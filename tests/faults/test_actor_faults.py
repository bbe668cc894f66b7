"""Actor crashes and hangs, injected for real through the actors' mailboxes: restarts within the
intensity stay local, one crash too many escalates exactly one level, a hung handler is abandoned
and restarted by the liveness probe; the system state follows and comes back to RUNNING."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest

from tests.faults.conftest import (
    PH_CHANNELS,
    Ingest,
    Running,
    incident,
    incidents,
    inject,
    metric,
    seed_node,
    seed_zone,
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


def system_errors(base: str) -> str:
    """Every reason the state machine recorded, as the transition incidents show them."""
    return " | ".join(i["reason"] for i in incidents(base, kind="state_transition"))


def supervisor_lines(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"supervisor {event} ")]


def test_crashes_within_the_intensity_restart_the_actor_only(app: Running,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """3 crashes of /store/rollups: 3 restarts by /store, nothing above it moves; 3 consecutive errors
    make the system DEGRADED, good cycles bring it back to RUNNING."""
    base = app.base_url
    caplog.set_level(logging.INFO)
    before_root = restarts(base)
    chaos_id = inject(base, "actor_crash", 1.0, path="/store/rollups", count=STORE_INTENSITY)
    wait_until(lambda: restarts(base, "/store")["/store/rollups"] == STORE_INTENSITY, timeout=10,
               what="rollups restarted 3 times")
    wait_state(base, "DEGRADED", timeout=5)
    chaos = wait_chaos_over(base, chaos_id)
    wait_state(base, "RUNNING", timeout=10)

    assert chaos["attributes"] == {**chaos["attributes"], "path": "/store/rollups", "count": "3", "outcome": "ended"}
    assert restarts(base) == before_root  # no subtree restarted: the failure stayed under /store
    rollups = actor(base, "/store/rollups")
    assert rollups["state"] == "running"
    assert "injected crash" in str(rollups["last_failure"]), rollups["last_failure"]
    assert {k: v for k, v in restarts(base, "/store").items() if k != "/store/rollups"} == {
        "/store/db_health": 0, "/store/telemetry_writer": 0, "/store/notifier": 0}
    assert supervisor_lines(caplog, "escalation") == []
    assert transitions(base) == [("RUNNING", "DEGRADED"), ("DEGRADED", "RUNNING")]
    degraded = next(i for i in incidents(base, kind="state_transition") if i["title"] == "RUNNING -> DEGRADED")
    assert "actor /store/rollups failed" in degraded["reason"]
    assert metric(base, "hydrovisor_actor_restarts_total", 'path="/store/rollups",reason="crash"') == 3
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("STATE_TRANSITION") and "from=RUNNING to=DEGRADED" in m for m in messages)
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
    # 4 actor failures + the /store escalation: 5 consecutive errors -> SAFE_MODE, then recovery
    assert transitions(base) == [("RUNNING", "DEGRADED"), ("DEGRADED", "SAFE_MODE"),
                                 ("SAFE_MODE", "RECOVERING"), ("RECOVERING", "RUNNING")]
    to_safe = next(i for i in incidents(base, kind="state_transition") if i["title"] == "DEGRADED -> SAFE_MODE")
    assert re.match(r"consecutive_errors=[5-9]: ", to_safe["reason"]), to_safe["reason"]
    errors = system_errors(base)
    assert "actor /store failed: reached_max_restart_intensity" in errors, errors
    assert incident(base, to_safe["incident_id"])["dump"] is not None
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
    rollups = actor(base, "/store/rollups")
    assert rollups["state"] == "running"
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
