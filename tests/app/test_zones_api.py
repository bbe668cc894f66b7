"""Zones over real HTTP against a running instance (real PostgreSQL, actors): versioned settings
with auto-filled roles, the timeline cursor, alerts and their resolve, the safety reset, zone
deletion (issue 11)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg

from hydrovisor.store.repos import events
from tests.app.conftest import Running
from tests.helpers import Reply, http

TOKEN = "operator-token-0123456789"


def call(instance: Running, method: str, path: str, body: dict[str, Any] | bytes | None = None,
         token: str | None = None) -> Reply:
    return http(method, instance.base_url + path, body=body, token=token)


def data(reply: Reply, status: int = 200) -> Any:
    assert reply.status == status, reply.raw
    return reply.json()["data"]


def db(instance: Running, work: Callable[[asyncpg.Pool], Awaitable[Any]]) -> Any:
    services = instance.app.services
    assert services is not None

    async def go() -> Any:
        return await work(services.db.pool)

    return instance.loop.run(go())


def make_zone(instance: Running, zone: str = "zn-1", settings: dict[str, Any] | None = None) -> Reply:
    if call(instance, "GET", "/api/v1/greenhouses").json()["data"] == []:
        assert call(instance, "POST", "/api/v1/greenhouses", {"uid": "gh-1", "name": "Main"}).status == 201
    body: dict[str, Any] = {"greenhouse_uid": "gh-1", "uid": zone, "name": "Lettuce"}
    if settings is not None:
        body["settings"] = settings
    return call(instance, "POST", "/api/v1/zones", body)


def make_node(instance: Running, uid: str, hw: str, channels: list[str], zone: str = "zn-1") -> None:
    reply = call(instance, "POST", "/api/v1/nodes", {
        "uid": uid, "hardware_id": hw, "type": "irrig", "zone_uid": zone, "node_secret": "s" * 32,
        "channels": [{"name": c, "type": "ACTUATOR"} for c in channels]})
    assert reply.status == 201, reply.raw


def raise_alert(instance: Running, code: str, zone: str | None = "zn-1", source: str = "biz", key: str = "") -> int:
    async def work(pool: asyncpg.Pool) -> int:
        raised = await events.raise_alert(pool, zone_uid=zone, node_uid=None, source=source, code=code,
                                          alert_type=code, details={"why": "test"}, dedupe_key=key)
        return raised.id

    result: int = db(instance, work)
    return result


def test_zone_created_with_default_settings_then_versioned_edits(instance: Running) -> None:
    created = data(make_zone(instance), 201)
    assert created["uid"] == "zn-1"
    assert created["settings"]["targets"]["ph"] == {"target": 5.8, "min": 5.5, "max": 6.2}
    view = data(call(instance, "GET", "/api/v1/zones/zn-1/settings"))
    assert (view["version"], view["created_by"], view["devices"], view["errors"]) == (1, "admin", {}, [])
    settings = view["settings"]
    assert settings["topology"] == "two_tank"
    assert settings["timeouts"] == {"clean_fill_s": 1200, "solution_fill_s": 1800, "prepare_recirculation_s": 1200,
                                    "irrigation_s": 600, "drain_s": 1800, "fill_s": 1800, "stabilize_s": 300}
    assert settings["water_cycle"]["recirc"]["max_recirc_off_minutes"] == 30

    settings["targets"]["ph"] = {"target": 6.0, "min": 5.6, "max": 6.4}
    settings["water_cycle"]["recirc"]["schedule"] = [{"from": "08:00", "to": "20:00", "duty_cycle": 0.5}]
    second = data(call(instance, "PUT", "/api/v1/zones/zn-1/settings", {"version": 1, "settings": settings}))
    assert second["version"] == 2
    assert second["settings"]["targets"]["ph"]["target"] == 6.0
    assert second["settings"]["water_cycle"]["recirc"]["schedule"] == [
        {"from": "08:00", "to": "20:00", "duty_cycle": 0.5}]
    stale = call(instance, "PUT", "/api/v1/zones/zn-1/settings", {"version": 1, "settings": {}})
    assert (stale.status, stale.json()["code"], stale.json()["current_version"]) == (
        409, "settings_version_conflict", 2)
    # a sparse document is completed with the defaults
    third = data(call(instance, "PUT", "/api/v1/zones/zn-1/settings",
                      {"version": 2, "settings": {"topology": "single_tank"}}))
    assert (third["version"], third["settings"]["topology"]) == (3, "single_tank")
    assert third["settings"]["targets"]["ph"]["target"] == 5.8
    history = data(call(instance, "GET", "/api/v1/zones/zn-1/settings/history"))
    assert [v["version"] for v in history] == [3, 2, 1]
    assert history[1]["document"]["targets"]["ph"]["target"] == 6.0
    page = data(call(instance, "GET", "/api/v1/zones/zn-1/settings/history?before=3&limit=1"))
    assert [v["version"] for v in page] == [2]
    zone = data(call(instance, "GET", "/api/v1/zones?greenhouse_uid=gh-1"))[0]
    assert zone["settings"]["topology"] == "single_tank"


def test_invalid_settings_are_422_with_each_path_and_nothing_stored(instance: Running) -> None:
    refused = make_zone(instance, settings={"targets": {"ph": {"target": 5.0, "min": 5.5, "max": 6.2}},
                                            "irrigation": {"duration_s": "long"}, "colour": "red"})
    body = refused.json()
    assert (refused.status, body["code"]) == (422, "invalid_settings")
    paths = {e["path"] for e in body["errors"]}
    assert {"$.colour", "$.irrigation.duration_s"} <= paths
    assert call(instance, "GET", "/api/v1/zones/zn-1/settings").status == 404
    data(make_zone(instance), 201)
    bad = call(instance, "PUT", "/api/v1/zones/zn-1/settings",
               {"version": 1, "settings": {"targets": {"ph": {"target": 5.0, "min": 5.5, "max": 6.2}}}})
    assert (bad.status, bad.json()["code"]) == (422, "invalid_settings")
    assert [e["path"] for e in bad.json()["errors"]] == ["$.targets.ph.min"]
    shape = call(instance, "PUT", "/api/v1/zones/zn-1/settings", {"settings": {}})
    assert (shape.status, shape.json()["code"]) == (400, "invalid_body")
    nul = call(instance, "PUT", "/api/v1/zones/zn-1/settings",
               {"version": 1, "settings": {"devices": {"pump_main": {"node_uid": "nd-1", "channel": "a\x00"}}}})
    assert (nul.status, nul.json()["code"]) == (400, "nul_character")
    huge = call(instance, "PUT", "/api/v1/zones/zn-1/settings", {"version": 2**40, "settings": {}})
    assert huge.status == 400
    missing = call(instance, "PUT", "/api/v1/zones/zn-404/settings", {"version": 1, "settings": {}})
    assert (missing.status, missing.json()["code"]) == (404, "zone_not_found")
    assert data(call(instance, "GET", "/api/v1/zones/zn-1/settings"))["version"] == 1


def test_roles_filled_from_channel_names_explicit_wins_ambiguity_named(instance: Running) -> None:
    data(make_zone(instance), 201)
    make_node(instance, "nd-irr-1", "hw-irr-1", ["pump_main", "valve_irrigation", "spare"])
    view = data(call(instance, "GET", "/api/v1/zones/zn-1/settings"))
    assert view["devices"] == {
        "pump_main": {"node_uid": "nd-irr-1", "channel": "pump_main", "source": "auto"},
        "valve_irrigation": {"node_uid": "nd-irr-1", "channel": "valve_irrigation", "source": "auto"}}
    make_node(instance, "nd-irr-2", "hw-irr-2", ["pump_main"])
    ambiguous = data(call(instance, "GET", "/api/v1/zones/zn-1/settings"))
    assert ambiguous["devices"] == {}
    assert ambiguous["errors"] == [{"path": "$.devices.pump_main",
                                    "message": "ambiguous: nd-irr-1/pump_main and nd-irr-2/pump_main; "
                                               "name one in devices"}]
    refused = call(instance, "PUT", "/api/v1/zones/zn-1/settings", {"version": 1, "settings": {}})
    assert (refused.status, refused.json()["code"]) == (422, "invalid_settings")
    assert "nd-irr-1/pump_main and nd-irr-2/pump_main" in refused.json()["errors"][0]["message"]
    named = data(call(instance, "PUT", "/api/v1/zones/zn-1/settings", {"version": 1, "settings": {
        "devices": {"pump_main": {"node_uid": "nd-irr-2", "channel": "pump_main"}}}}))
    assert named["errors"] == []
    assert named["devices"]["pump_main"] == {"node_uid": "nd-irr-2", "channel": "pump_main", "source": "settings"}
    assert named["devices"]["valve_irrigation"]["source"] == "auto"


def test_timeline_pages_with_after_id(instance: Running) -> None:
    data(make_zone(instance), 201)

    async def work(pool: asyncpg.Pool) -> list[int]:
        return [await events.add_zone_event(pool, "zn-1", None, "PUMP_REFUSED", {"i": i}, cmd_id=f"c-{i}",
                                            decision="refuse", reason_code="node_offline") for i in range(5)]

    ids: list[int] = db(instance, work)
    everything = data(call(instance, "GET", "/api/v1/zones/zn-1/events?after_id=0&limit=100"))
    assert [e["id"] for e in everything] == ids
    assert (everything[0]["cmd_id"], everything[0]["decision"], everything[0]["reason_code"]) == (
        "c-0", "refuse", "node_offline")
    assert "correlation_id" in everything[0]
    page = data(call(instance, "GET", f"/api/v1/zones/zn-1/events?after_id={ids[1]}&limit=2"))
    assert [e["id"] for e in page] == ids[2:4]
    assert [e["id"] for e in data(call(instance, "GET", "/api/v1/zones/zn-1/events?limit=2"))] == ids[3:]
    unknown = call(instance, "GET", "/api/v1/zones/zn-1/events?after_id=999999999")
    assert (unknown.status, unknown.json()["code"]) == (400, "unknown_after_id")
    assert call(instance, "GET", "/api/v1/zones/zn-1/events?after_id=-1").status == 400
    assert call(instance, "GET", "/api/v1/zones/zn-404/events").status == 404


def test_alerts_filter_and_resolve_with_reason(start_app: Callable[..., Running]) -> None:
    instance = start_app(api_token=TOKEN)
    assert call(instance, "POST", "/api/v1/greenhouses", {"uid": "gh-1", "name": "Main"}, TOKEN).status == 201
    assert call(instance, "POST", "/api/v1/zones", {"greenhouse_uid": "gh-1", "uid": "zn-1", "name": "L"},
                TOKEN).status == 201
    no_flow = raise_alert(instance, "biz_no_flow", key="pump_main")
    raise_alert(instance, "biz_no_flow", key="pump_main")
    offline = raise_alert(instance, "infra_node_offline", source="infra", key="nd-1")
    raise_alert(instance, "infra_mqtt_down", zone=None, source="infra")
    biz = data(call(instance, "GET", "/api/v1/alerts?zone_uid=zn-1&source=biz", token=TOKEN))
    assert [(a["id"], a["count"], a["severity"], a["status"]) for a in biz] == [(no_flow, 2, "warning", "ACTIVE")]
    infra = data(call(instance, "GET", "/api/v1/alerts?source=infra&status=ACTIVE", token=TOKEN))
    assert {a["code"] for a in infra} == {"infra_node_offline", "infra_mqtt_down"}
    assert call(instance, "GET", "/api/v1/alerts?source=nope", token=TOKEN).json()["code"] == "invalid_parameter"

    resolved = data(call(instance, "POST", f"/api/v1/alerts/{offline}/resolve", {"reason": "node replaced"}, TOKEN))
    assert (resolved["status"], resolved["resolved_by"], resolved["resolved_reason"]) == (
        "RESOLVED", "operator", "node replaced")
    again = call(instance, "POST", f"/api/v1/alerts/{offline}/resolve", {"reason": "again"}, TOKEN)
    assert (again.status, again.json()["code"]) == (409, "alert_not_active")
    assert call(instance, "POST", "/api/v1/alerts/99999999/resolve", {"reason": "x"}, TOKEN).status == 404
    assert call(instance, "POST", "/api/v1/alerts/abc/resolve", {"reason": "x"}, TOKEN).json()["code"] == (
        "invalid_alert_id")
    empty = call(instance, "POST", f"/api/v1/alerts/{no_flow}/resolve", {"reason": ""}, TOKEN)
    assert (empty.status, empty.json()["code"]) == (400, "invalid_body")
    listed = data(call(instance, "GET", "/api/v1/alerts?status=RESOLVED&zone_uid=zn-1", token=TOKEN))
    assert [a["id"] for a in listed] == [offline]
    timeline = data(call(instance, "GET", "/api/v1/zones/zn-1/events", token=TOKEN))
    assert [(e["type"], e["details"]["reason"]) for e in timeline] == [("ALERT_RESOLVED", "node replaced")]


def test_safety_reset_resolves_locks_audited(instance: Running) -> None:
    data(make_zone(instance), 201)
    data(make_zone(instance, "zn-2"), 201)
    dry = raise_alert(instance, "biz_dry_run")
    over = raise_alert(instance, "biz_overcurrent", key="pump_main")
    high_ph = raise_alert(instance, "biz_high_ph")
    other = raise_alert(instance, "biz_dry_run", zone="zn-2")
    reset = data(call(instance, "POST", "/api/v1/zones/zn-1/safety/reset", {"reason": "checked the pump"}))
    assert sorted(reset["alert_ids"]) == sorted([dry, over])
    assert (reset["by"], reset["reason"], reset["zone_uid"]) == ("admin", "checked the pump", "zn-1")
    assert {a["code"] for a in reset["resolved"]} == {"biz_dry_run", "biz_overcurrent"}
    active = {a["id"] for a in data(call(instance, "GET", "/api/v1/alerts?status=ACTIVE"))}
    assert active == {high_ph, other}
    last = data(call(instance, "GET", "/api/v1/zones/zn-1/events"))[-1]
    assert (last["type"], last["details"]["by"], last["details"]["reason"]) == (
        "SAFETY_RESET", "admin", "checked the pump")
    audit = db(instance, lambda pool: pool.fetch("SELECT zone_uid, by, reason FROM safety_resets"))
    assert [tuple(r) for r in audit] == [("zn-1", "admin", "checked the pump")]
    assert call(instance, "POST", "/api/v1/zones/zn-404/safety/reset", {"reason": "x"}).status == 404
    assert call(instance, "POST", "/api/v1/zones/zn-1/safety/reset", {}).status == 400
    assert call(instance, "POST", "/api/v1/zones/zn-1/safety/reset", {"reason": "a\x00b"}).json()["code"] == (
        "nul_character")


def test_delete_zone_refused_while_nodes_bound_keeps_timeline_and_alerts(instance: Running) -> None:
    data(make_zone(instance), 201)
    make_node(instance, "nd-irr-1", "hw-irr-1", ["pump_main"])
    alert = raise_alert(instance, "biz_no_flow")
    refused = call(instance, "DELETE", "/api/v1/zones/zn-1")
    assert (refused.status, refused.json()["code"]) == (409, "zone_has_nodes")
    assert call(instance, "POST", "/api/v1/nodes/nd-irr-1/unbind").status == 200
    assert data(call(instance, "DELETE", "/api/v1/zones/zn-1")) == {"uid": "zn-1", "deleted": True}
    gone = call(instance, "DELETE", "/api/v1/zones/zn-1")
    assert (gone.status, gone.json()["code"]) == (404, "zone_not_found")
    assert call(instance, "GET", "/api/v1/zones/zn-1/settings").status == 404
    assert call(instance, "GET", "/api/v1/zones/zn-1/settings/history").status == 404
    assert data(call(instance, "GET", "/api/v1/zones")) == []
    kept = db(instance, lambda pool: pool.fetchval("SELECT count(*) FROM zone_events WHERE zone_uid = 'zn-1'"))
    assert kept >= 1  # NODE_UNBOUND at least
    assert [a["id"] for a in data(call(instance, "GET", "/api/v1/alerts?zone_uid=zn-1"))] == [alert]
    assert call(instance, "DELETE", "/api/v1/zones/BAD").json()["code"] == "invalid_uid"
    # the uid can be used again: a new zone with version 1
    data(make_zone(instance), 201)
    assert data(call(instance, "GET", "/api/v1/zones/zn-1/settings"))["version"] == 1
