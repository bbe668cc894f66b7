"""Infrastructure faults, injected for real: the embedded PostgreSQL stopped and started again, every
device kicked off the broker with reconnects refused, one node silenced while it stays connected."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest

from hydrovisor.config.settings import DatabaseSettings
from hydrovisor.runtime.loop_thread import LoopThread
from tests.faults.conftest import (
    PH_CHANNELS,
    TERMINAL,
    Device,
    Ingest,
    Running,
    command_status,
    incident,
    incidents,
    inject,
    metric,
    seed_node,
    seed_zone,
    state,
    stop_devices_then_check_stored,
    transitions,
    wait_chaos_over,
    wait_state,
)
from tests.helpers import http, wait_until
from tests.plant import STATE_PROBE, VALVES

pytestmark = pytest.mark.fault_injection

OUTAGE_S = 2.0
SILENCE_S = 4.5


def test_chaos_is_refused_unless_enabled_and_valid(instance: Running, app: Running) -> None:
    """Disabled by default (403, nothing injected); an enabled instance still validates each request."""
    off = http("POST", instance.base_url + "/admin/chaos/inject", body={"type": "cpu_bound_loop", "duration": 1})
    assert (off.status, off.json()["code"]) == (403, "chaos_disabled")
    assert http("GET", instance.base_url + "/admin/chaos").status == 403
    assert incidents(instance.base_url) == []
    cases = [({"type": "actor_crash", "duration": 1}, 400, "missing_path"),
             ({"type": "actor_crash", "duration": 1, "path": "/store/nope"}, 404, "actor_not_found"),
             ({"type": "node_silence", "duration": 1}, 400, "missing_node_uid"),
             ({"type": "cpu_bound_loop", "duration": 0}, 400, "invalid_body"),
             ({"type": "meteor_strike", "duration": 1}, 400, "invalid_body")]
    for body, status, code in cases:
        reply = http("POST", app.base_url + "/admin/chaos/inject", body=body)
        assert (reply.status, reply.json()["code"]) == (status, code), (body, reply.raw)
    assert incidents(app.base_url) == []
    assert http("GET", app.base_url + "/admin/chaos").json()["data"] == []


def test_db_outage_is_refused_with_an_external_database(app: Running) -> None:
    """db_outage stops the embedded server only; an external database is never touched."""
    reply = http("POST", app.base_url + "/admin/chaos/inject", body={"type": "db_outage", "duration": 1})
    assert (reply.status, reply.json()["code"]) == (409, "chaos_unsupported")
    assert incidents(app.base_url, kind="chaos") == []
    assert http("GET", app.base_url + "/health/ready").status == 200


def test_db_outage_with_the_embedded_database(chaos_app: Callable[..., Running], device_loop: LoopThread,
                                              devices: list[Device], caplog: pytest.LogCaptureFixture) -> None:
    """PostgreSQL really gone for 2 s: the db check fails, the errors take the system through DEGRADED to
    SAFE_MODE; once the server is back it recovers to RUNNING. Every sample accepted meanwhile is stored
    exactly once and the commands in flight all end DONE."""
    app = chaos_app(database=DatabaseSettings(url=None, health_interval=0.3))  # its own embedded server
    base = app.base_url
    caplog.set_level(logging.INFO)
    seed_zone(base)
    seed_node(base, "nd-ph-1", "esp32-00000000aa01", "s" * 32, PH_CHANNELS, node_type="ph")
    device = Device(app, device_loop, time_scale=0.4)  # run_pump 2500 ms -> the pump runs 1 s
    devices.append(device)
    device.start()
    device.wait_levels()  # the zone's pump-safety gate needs fresh tank levels before pump_main starts
    with Ingest(base, "nd-ph-1", "ph_sensor", "PH") as ingest:
        wait_until(lambda: ingest.accepted >= 40, timeout=10, what="ingest flowing")
        # valves first, then the pump: the node refuses pump_main until a path is open (its interlock)
        sent = [device.command(valve, "set_relay", {"state": 1}, cmd_id=f"db-{valve.replace('_', '-')}")
                for valve in VALVES]
        wait_until(lambda: all(command_status(base, r.json()["data"]["command_id"]) == "DONE" for r in sent),
                   timeout=10, what="the valves open")
        sent += [device.command("pump_main", "run_pump", {"duration_ms": 2500}, cmd_id="db-pump")]
        assert [r.status for r in sent] == [202] * len(sent), [r.raw for r in sent]
        chaos_id = inject(base, "db_outage", OUTAGE_S)
        wait_until(lambda: http("GET", base + "/health/ready").json()["checks"]["db"]["ok"] is False, timeout=10,
                   what="db check failing")
        accepted_before_end = ingest.accepted
        wait_state(base, "SAFE_MODE", timeout=10)
        chaos = wait_chaos_over(base, chaos_id)
        wait_state(base, "RUNNING", timeout=20)
        wait_until(lambda: ingest.accepted >= accepted_before_end + 40, timeout=10, what="ingest after")
    assert chaos["attributes"]["outcome"] == "ended"
    assert ingest.refused == [], "ingest keeps accepting while the database is down"

    assert transitions(base) == [("RUNNING", "DEGRADED"), ("DEGRADED", "SAFE_MODE"),
                                 ("SAFE_MODE", "RECOVERING"), ("RECOVERING", "RUNNING")]
    to_safe = next(i for i in incidents(base, kind="state_transition") if i["title"] == "DEGRADED -> SAFE_MODE")
    assert "db: " in to_safe["reason"], to_safe["reason"]
    assert incident(base, to_safe["incident_id"])["dump"] is not None
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("embedded PostgreSQL stopped") for m in messages)
    assert any(m.startswith("embedded PostgreSQL started again") for m in messages)
    assert any(m.startswith("STATE_TRANSITION") and "from=DEGRADED to=SAFE_MODE" in m for m in messages)

    ids = [r.json()["data"]["command_id"] for r in sent]
    wait_until(lambda: all(command_status(base, i) in TERMINAL for i in ids), timeout=20, interval=0.1,
               what="every command terminal")
    assert {i: command_status(base, i) for i in ids} == dict.fromkeys(ids, "DONE")
    stop_devices_then_check_stored(app, devices, also_accepted=ingest.accepted)


def test_broker_kick_drops_devices_refuses_them_then_lets_them_back(app: Running, device_loop: LoopThread,
                                                                  devices: list[Device]) -> None:
    """Every connected node is disconnected; reconnects are refused for the whole kick, accepted after;
    the node works again (a command ends DONE) and the system never left RUNNING."""
    base = app.base_url
    seed_zone(base)
    first = Device(app, device_loop)
    second = Device(app, device_loop, uid="nd-irr-000000000002")
    devices.extend([first, second])
    first.start()
    second.start()
    kick_s = 1.5
    connects = [d.sim.stats.connects for d in devices]
    telemetry_before = metric(base, "hydrovisor_telemetry_accepted_total", 'source="mqtt"')
    chaos_id = inject(base, "broker_kick", kick_s)
    began = time.monotonic()
    wait_until(lambda: not first.connected and not second.connected, timeout=5, what="devices dropped")
    # refused, again and again, while the kick lasts (each node retries every 0.1 s)
    wait_until(lambda: all(d.sim.stats.connect_failures >= 3 for d in devices), timeout=5, what="reconnects refused")
    assert incident(base, chaos_id)["closed_at"] is None
    assert [d.sim.stats.connects for d in devices] == connects  # no reconnect got through during the kick
    chaos = wait_chaos_over(base, chaos_id)
    assert chaos["attributes"]["outcome"] == "ended"
    wait_until(lambda: first.connected and second.connected, timeout=10, what="devices back")
    assert time.monotonic() - began >= kick_s
    assert [d.sim.stats.connects for d in devices] == [c + 1 for c in connects]
    first.start()  # waits until its command topic has a subscriber again
    # a state probe: two irrigation nodes in one zone leave its pump/valve roles ambiguous, so the zone's gate
    # refuses their starts (role_not_configured); a read shows the node answering just as well
    reply = first.command(STATE_PROBE["channel"], STATE_PROBE["cmd"], STATE_PROBE["params"], cmd_id="after-kick")
    assert reply.status == 202, reply.raw
    wait_until(lambda: command_status(base, "after-kick") == "DONE", timeout=10, what="command after the kick")
    assert transitions(base) == []
    assert state(base) == "RUNNING"
    # telemetry flows again after the kick, and what was accepted is stored
    wait_until(lambda: metric(base, "hydrovisor_telemetry_accepted_total", 'source="mqtt"') >= telemetry_before + 20,
               timeout=10, what="telemetry after the kick")
    stop_devices_then_check_stored(app, devices)


def test_node_silence_discards_one_node_while_it_stays_connected(app: Running, device_loop: LoopThread,
                                                                devices: list[Device]) -> None:
    """Everything the silenced node sends is dropped (counted as ``silenced``) while it stays connected;
    a second node is unaffected; the silenced node's telemetry is stored again after the silence.
    (The offline verdict comes from the node liveness timeout, 120 s, a constant — not waited for here.)"""
    base = app.base_url
    seed_zone(base)
    quiet = Device(app, device_loop, telemetry_interval_s=0.1)
    loud = Device(app, device_loop, uid="nd-irr-000000000002", telemetry_interval_s=0.1)
    devices.extend([quiet, loud])
    quiet.start()
    loud.start()
    wait_until(lambda: stored_between(app, quiet.uid, 0, time.time()) > 0, timeout=10, what="telemetry stored")
    unknown = http("POST", base + "/admin/chaos/inject", body={"type": "node_silence", "duration": 1,
                                                               "node_uid": "nd-404"})
    assert (unknown.status, unknown.json()["code"]) == (404, "node_not_found")
    sent_before = quiet.sim.stats.telemetry_sent
    chaos_id = inject(base, "node_silence", SILENCE_S, node_uid=quiet.uid)
    chaos = wait_chaos_over(base, chaos_id)
    assert chaos["attributes"] == {**chaos["attributes"], "node_uid": quiet.uid, "outcome": "ended"}
    assert quiet.connected  # it never noticed: only the server side went deaf
    assert quiet.sim.stats.telemetry_sent > sent_before + 20  # it kept publishing the whole time
    assert metric(base, "hydrovisor_device_messages_total", 'type="telemetry",outcome="silenced"') >= 20
    assert metric(base, "hydrovisor_device_messages_total", 'type="heartbeat",outcome="silenced"') >= 1
    # resumes: samples of the silenced node are stored again after the silence
    wait_until(lambda: stored_between(app, quiet.uid, chaos["closed_at"] + 0.2, time.time()) > 0, timeout=10,
               what="telemetry of the silenced node stored again")
    # device timestamps are whole seconds of a clock set from the server's whole-second time answer:
    # a sample stamped k was published in [k, k + 2)
    inner = (chaos["opened_at"] + 1.2, chaos["closed_at"] - 2.2)
    assert inner[1] - inner[0] >= 1.0
    assert stored_between(app, quiet.uid, *inner) == 0
    assert stored_between(app, loud.uid, *inner) > 0
    assert transitions(base) == []
    stop_devices_then_check_stored(app, devices)  # what was not silenced is all stored


def stored_between(app: Running, node_uid: str, start: float, end: float) -> int:
    """Stored samples of one node whose device timestamp lies in ``[start, end]`` (unix seconds)."""
    services = app.app.services
    assert services is not None

    async def count() -> Any:
        return await services.db.pool.fetchval(
            "SELECT count(*) FROM telemetry_samples WHERE node_uid = $1 AND ts BETWEEN to_timestamp($2) "
            "AND to_timestamp($3)", node_uid, start, end)

    return int(app.loop.run(count()))
