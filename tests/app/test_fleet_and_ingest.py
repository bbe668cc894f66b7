"""Fleet API and telemetry ingest through a running instance (real PostgreSQL, HTTP, actors)."""

from __future__ import annotations

import time
from typing import Any

from tests.app.conftest import Running
from tests.helpers import http, wait_until


def _post(instance: Running, path: str, body: dict[str, Any]) -> Any:
    return http("POST", instance.base_url + path, body=body)


def make_zone(instance: Running, gh: str = "gh-1", zone: str = "zn-1") -> None:
    assert _post(instance, "/api/v1/greenhouses", {"uid": gh, "name": "Main"}).status == 201
    assert _post(instance, "/api/v1/zones", {"greenhouse_uid": gh, "uid": zone, "name": "Lettuce"}).status == 201


CHANNELS = [{"name": "ph_sensor", "type": "SENSOR", "metric": "PH", "unit": "pH"},
            {"name": "pump_acid", "type": "ACTUATOR", "actuator_type": "PERISTALTIC_PUMP"}]


def make_node(instance: Running, uid: str = "nd-ph-1", zone: str | None = "zn-1",
              hw: str = "esp32-00000000aa01") -> None:
    body: dict[str, Any] = {"uid": uid, "hardware_id": hw, "type": "ph", "node_secret": "s" * 32,
                            "channels": CHANNELS}
    if zone:
        body["zone_uid"] = zone
    reply = _post(instance, "/api/v1/nodes", body)
    assert reply.status == 201, reply.raw


def test_greenhouse_and_zone_validation(instance: Running) -> None:
    make_zone(instance)
    again = _post(instance, "/api/v1/greenhouses", {"uid": "gh-1", "name": "x"})
    assert (again.status, again.json()["code"]) == (409, "greenhouse_exists")
    bad = _post(instance, "/api/v1/greenhouses", {"uid": "Bad UID", "name": "x"})
    assert (bad.status, bad.json()["code"]) == (400, "invalid_body")
    assert "uid" in bad.json()["message"]
    unknown_field = _post(instance, "/api/v1/greenhouses", {"uid": "gh-2", "name": "x", "colour": "red"})
    assert unknown_field.status == 400
    orphan = _post(instance, "/api/v1/zones", {"greenhouse_uid": "gh-404", "uid": "zn-9", "name": "x"})
    assert (orphan.status, orphan.json()["code"]) == (404, "greenhouse_not_found")
    not_json = http("POST", instance.base_url + "/api/v1/zones", body=b"{nope",
                    headers={"Content-Type": "application/json"})
    assert (not_json.status, not_json.json()["code"]) == (400, "invalid_json")
    zones = http("GET", instance.base_url + "/api/v1/zones?greenhouse_uid=gh-1").json()["data"]
    assert [z["uid"] for z in zones] == ["zn-1"]


def test_preregistered_node_gets_an_actor_and_hides_its_secret(instance: Running) -> None:
    make_zone(instance)
    make_node(instance)
    node = http("GET", instance.base_url + "/api/v1/nodes/nd-ph-1").json()["data"]
    assert node["zone_uid"] == "zn-1"
    assert node["validated"] is True
    assert "node_secret" not in node
    assert {c["name"] for c in node["channels"]} == {"ph_sensor", "pump_acid"}
    tree = http("GET", instance.base_url + "/api/v1/actors/nodes").json()["data"]
    assert [c["path"] for c in tree["children"]] == ["/nodes/nd-ph-1"]
    duplicate = _post(instance, "/api/v1/nodes", {"uid": "nd-ph-1", "hardware_id": "esp32-00000000aa09"})
    assert (duplicate.status, duplicate.json()["code"]) == (409, "node_exists")
    assert http("GET", instance.base_url + "/api/v1/nodes/nd-404").status == 404
    assert http("GET", instance.base_url + "/api/v1/nodes/BAD").json()["code"] == "invalid_uid"


def test_ingest_accepts_valid_samples_and_counts_every_drop_reason(instance: Running) -> None:
    make_zone(instance)
    make_node(instance)
    make_node(instance, uid="nd-ec-free", zone=None, hw="esp32-00000000aa02")
    now = time.time()
    samples = [
        {"node_uid": "nd-ph-1", "zone_uid": "zn-1", "channel": "ph_sensor", "metric_type": " ph ", "value": 5.9,
         "ts": now - 5},
        {"node_uid": "nd-ph-1", "channel": "ph_sensor", "metric_type": "PH", "value": 6.1, "ts": int(now * 1000)},
        {"node_uid": "nd-ph-1", "channel": "tds", "metric_type": "TDS", "value": 800, "ts": now},
        {"node_uid": "nd-404", "channel": "x", "metric_type": "PH", "value": 1, "ts": now},
        {"node_uid": "nd-ec-free", "channel": "x", "metric_type": "EC", "value": 1, "ts": now},
        {"node_uid": "nd-ph-1", "zone_uid": "zn-2", "channel": "x", "metric_type": "PH", "value": 1, "ts": now},
        {"node_uid": "nd-ph-1", "channel": "x", "metric_type": "PH", "value": "high", "ts": now},
        {"channel": "x"},
    ]
    reply = _post(instance, "/api/v1/ingest/telemetry", {"samples": samples})
    assert reply.status == 202
    body = reply.json()["data"]
    assert (body["count"], body["dropped"], body["total"]) == (3, 5, 8)
    assert body["dropped_reasons"] == {"unknown_node": 1, "node_unassigned": 1, "node_zone_mismatch": 1,
                                       "invalid_value": 1, "malformed": 1}
    def last_two() -> Any:
        data = http("GET", instance.base_url + "/api/v1/telemetry/last?zone_uid=zn-1").json()["data"]
        return data if len(data) == 2 else None

    last = wait_until(last_two)
    by_metric = {(v["metric"], v["channel"]): v for v in last}
    assert by_metric[("PH", "ph_sensor")]["value"] == 6.1  # the newer of the two (ms timestamp normalised)
    assert by_metric[("OTHER", "tds")]["value"] == 800
    series = http("GET", instance.base_url + "/api/v1/telemetry?zone_uid=zn-1&metric=ph").json()["data"]
    assert [p["value"] for p in series] == [5.9, 6.1]
    hourly = http("GET", instance.base_url + "/api/v1/telemetry?zone_uid=zn-1&bucket=1h").json()["data"]
    assert sum(p["count"] for p in hourly) == 3
    metrics = http("GET", instance.base_url + "/metrics").raw.decode()
    assert 'hydrovisor_telemetry_dropped_total{reason="node_zone_mismatch",source="http"} 1.0' in metrics


def test_ingest_limits(instance: Running) -> None:
    empty = _post(instance, "/api/v1/ingest/telemetry", {"samples": []})
    assert (empty.status, empty.json()["data"]["count"]) == (200, 0)
    too_many = _post(instance, "/api/v1/ingest/telemetry", {"samples": [{}] * 1001})
    assert (too_many.status, too_many.json()["code"]) == (400, "too_many_samples")
    missing = _post(instance, "/api/v1/ingest/telemetry", {"rows": []})
    assert missing.status == 400
    statuses = [_post(instance, "/api/v1/ingest/telemetry", {"samples": []}).status for _ in range(60)]
    assert 429 in statuses
    limited = next(r for r in (_post(instance, "/api/v1/ingest/telemetry", {"samples": []}) for _ in range(5))
                   if r.status == 429)
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["code"] == "rate_limited"


def test_telemetry_query_validation(instance: Running) -> None:
    base = instance.base_url + "/api/v1/telemetry"
    assert http("GET", base).json()["code"] == "missing_parameter"
    assert http("GET", base + "?zone_uid=zn-1&from=yesterday").json()["code"] == "invalid_time"
    assert http("GET", base + "?zone_uid=zn-1&from=2026-11-23T10:00:00").json()["code"] == "invalid_time"
    assert http("GET", base + "?zone_uid=zn-1&from=200&to=100").json()["code"] == "invalid_time_range"
    assert http("GET", base + "?zone_uid=zn-1&bucket=5m").json()["code"] == "invalid_bucket"
    ok = http("GET", base + "?zone_uid=zn-1&from=2026-11-23T10:00:00Z")
    assert ok.status == 200
