"""The HTTP base of a running instance: health, tree, metrics, JSON errors, crash visibility."""

from __future__ import annotations

import re

import pytest

from hydrovisor.runtime.affinity import LoopAffinityError
from tests.app.conftest import Running
from tests.helpers import http, wait_until

TOP_LEVEL = ["/system", "/store", "/broker", "/nodes", "/zones", "/commands", "/scheduler"]


def test_live_and_ready_report_every_component(instance: Running) -> None:
    assert http("GET", instance.base_url + "/health/live").status == 200
    reply = http("GET", instance.base_url + "/health/ready")
    assert reply.status == 200
    checks = reply.json()["checks"]
    assert set(checks) == {"db", "broker", "tree", "telemetry", "loop", "system"}
    assert checks["system"]["reason"] == reply.json()["system_state"] == "RUNNING"
    assert all(check["ok"] for check in checks.values()), checks


def test_actor_tree_lists_the_whole_tree_with_introspection_fields(instance: Running) -> None:
    tree = http("GET", instance.base_url + "/api/v1/actors").json()["data"]
    assert tree["path"] == "/"
    assert tree["strategy"] == "one_for_one"
    assert [child["path"] for child in tree["children"]] == TOP_LEVEL
    children = {child["path"]: child for child in tree["children"]}
    assert [c["actor_class"] for c in children["/system"]["children"]] == ["SystemStateActor", "ChaosWorker"]
    store = children["/store"]
    probe = store["children"][0]
    assert probe["path"] == "/store/db_health"
    assert probe["state"] == "running"
    assert probe["kind"] == "worker"
    assert probe["actor_class"] == "HealthProbe"
    assert probe["execution"] == "thread"
    for field in ("restarts_in_window", "restarts_total", "last_failure", "mailbox_depth", "uptime_s"):
        assert field in probe
    commands = children["/commands"]
    assert commands["max_children"] == instance.app.settings.supervision.max_commands


def test_subtree_by_path_and_unknown_path(instance: Running) -> None:
    reply = http("GET", instance.base_url + "/api/v1/actors/store/db_health")
    assert reply.status == 200
    assert reply.json()["data"]["path"] == "/store/db_health"
    missing = http("GET", instance.base_url + "/api/v1/actors/store/nope")
    assert missing.status == 404
    assert missing.json()["code"] == "actor_not_found"
    bad_depth = http("GET", instance.base_url + "/api/v1/actors?depth=x")
    assert bad_depth.status == 400
    assert bad_depth.json()["code"] == "invalid_depth"


def test_injected_crash_shows_in_tree_and_metrics(instance: Running) -> None:
    reply = http("POST", instance.base_url + "/api/v1/actors/store/db_health/restart")
    assert reply.status == 202, reply.raw
    node = http("GET", instance.base_url + "/api/v1/actors/store/db_health").json()["data"]
    assert node["restarts_total"] == 1
    assert node["restarts_in_window"] == 1
    assert node["state"] == "running"
    assert node["last_failure"]["kind"] == "killed"
    metrics = http("GET", instance.base_url + "/metrics").raw.decode()
    restarts = r'hydrovisor_actor_restarts_total\{path="/store/db_health",reason="killed"\} 1\.0'
    assert re.search(restarts, metrics)
    # the restarted probe keeps reporting: readiness stays green
    wait_until(lambda: http("GET", instance.base_url + "/health/ready").status == 200)


def test_metrics_expose_tree_loop_and_process(instance: Running) -> None:
    text = http("GET", instance.base_url + "/metrics").raw.decode()
    # workers: system state, chaos worker, db_health, telemetry_writer, rollups, notifier, broker_health
    assert 'hydrovisor_actors{execution="thread",kind="worker",state="running"} 7.0' in text
    # supervisors: the root, system, store, broker, nodes, zones, commands, scheduler, scheduler/tasks
    assert 'hydrovisor_actors{execution="thread",kind="supervisor",state="running"} 9.0' in text
    assert 'hydrovisor_pool_workers{kind="core"} 4.0' in text
    assert 'hydrovisor_system_state{state="RUNNING"} 1.0' in text
    assert "hydrovisor_loop_heartbeat_age_seconds" in text
    assert 'hydrovisor_actor_mailbox_depth{path="/store/db_health"}' in text
    assert "hydrovisor_event_loop_lag_seconds_bucket" in text
    assert 'hydrovisor_component_up{component="db"} 1.0' in text
    assert "process_resident_memory_bytes" in text


def test_errors_are_json_for_404_405_413(instance: Running) -> None:
    not_found = http("GET", instance.base_url + "/nope")
    assert not_found.status == 404
    assert not_found.json() == {"status": "error", "code": "not_found", "message": "Not Found"}
    not_allowed = http("DELETE", instance.base_url + "/api/v1/actors")
    assert not_allowed.status == 405
    assert not_allowed.json()["code"] == "method_not_allowed"
    assert "GET" in not_allowed.headers["Allow"]
    limit = instance.app.settings.http.max_body_bytes
    too_big = http("POST", instance.base_url + "/api/v1/actors/nodes/restart", body=b"x" * (limit + 1))
    assert too_big.status == 413
    assert too_big.json()["code"] == "payload_too_large"


def test_restart_of_unknown_or_root_path_is_a_clear_404(instance: Running) -> None:
    reply = http("POST", instance.base_url + "/api/v1/actors/zones/zn-404/restart")
    assert reply.status == 404
    assert reply.json()["code"] == "actor_not_found"


def test_asyncio_owned_components_refuse_use_off_the_loop(instance: Running) -> None:
    services = instance.app.services
    assert services is not None
    with pytest.raises(LoopAffinityError, match=r"Database\.pool"):
        _ = services.db.pool  # this test's thread is not the loop: must fail loudly
    assert instance.loop.run(_pool_size_on_loop(instance)) >= 1


async def _pool_size_on_loop(instance: Running) -> int:
    assert instance.app.services is not None
    size: int = instance.app.services.db.pool.get_size()
    return size
