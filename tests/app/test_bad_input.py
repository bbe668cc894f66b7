"""No 5xx on bad input (issue 10 #12): each gets a specific 400 naming what is wrong."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.app.conftest import Running
from tests.app.test_fleet_and_ingest import CHANNELS, make_node, make_zone
from tests.helpers import http

NUL = "\u0000"


def _post(instance: Running, path: str, body: dict[str, Any]) -> Any:
    return http("POST", instance.base_url + path, body=body)


def _refused(reply: Any, code: str) -> None:
    assert reply.status == 400, reply.raw
    assert reply.json()["code"] == code, reply.raw


def test_a_nul_character_in_any_string_field_is_a_400(instance: Running) -> None:
    make_zone(instance)
    make_node(instance)
    bodies: list[tuple[str, dict[str, Any]]] = [
        ("/api/v1/greenhouses", {"uid": "gh-2", "name": f"Main{NUL}"}),
        ("/api/v1/zones", {"greenhouse_uid": "gh-1", "uid": "zn-2", "name": f"a{NUL}b"}),
        ("/api/v1/zones", {"greenhouse_uid": "gh-1", "uid": "zn-3", "name": "ok", "settings": {"ph": {"x": NUL}}}),
        ("/api/v1/zones", {"greenhouse_uid": "gh-1", "uid": "zn-4", "name": "ok", "settings": {f"k{NUL}": 1}}),
        ("/api/v1/nodes", {"uid": "nd-2", "hardware_id": "esp32-00000000aa02", "type": f"ph{NUL}"}),
        ("/api/v1/nodes", {"uid": "nd-3", "hardware_id": "esp32-00000000aa03", "channels": [
            {**CHANNELS[0], "unit": f"p{NUL}H"}]}),
        ("/api/v1/nodes", {"uid": "nd-4", "hardware_id": "esp32-00000000aa04", "node_secret": NUL * 20}),
        ("/api/v1/commands", {"cmd": f"dose{NUL}", "node_uid": "nd-ph-1", "channel": "pump_acid"}),
        ("/api/v1/commands", {"cmd": "dose", "node_uid": "nd-ph-1", "channel": "pump_acid",
                              "params": {"ml": 1, "note": NUL}}),
        ("/api/v1/commands", {"cmd": "dose", "node_uid": "nd-ph-1", "channel": "pump_acid", "source": NUL}),
        ("/api/v1/commands", {"cmd": "dose", "node_uid": "nd-ph-1", "channel": "pump_acid", "trace_id": NUL}),
        ("/api/v1/zones/zn-1/commands", {"cmd": "dose", "node_uid": "nd-ph-1", "channel": "pump_acid",
                                         "params": {"ml": [1, {"deep": NUL}]}}),
    ]
    for path, body in bodies:
        reply = _post(instance, path, body)
        _refused(reply, "nul_character")
        assert "NUL" in reply.json()["message"]
    # in the URL too: e.g. a metric filter reaches SQL as text
    _refused(http("GET", instance.base_url + "/api/v1/telemetry?zone_uid=zn-1&metric=P%00H"), "nul_character")
    assert [g["uid"] for g in http("GET", instance.base_url + "/api/v1/greenhouses").json()["data"]] == ["gh-1"]


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("/api/v1/telemetry?zone_uid=zn-1&from=-99999999999999", "from"),
        ("/api/v1/telemetry?zone_uid=zn-1&from=nan", "from"),
        ("/api/v1/telemetry?zone_uid=zn-1&to=inf", "to"),
        ("/api/v1/telemetry?zone_uid=zn-1&from=0001-01-01T00:00:00%2B01:00", "from"),
        ("/api/v1/commands?since=1e400", "since"),
        ("/api/v1/commands?since=9999999999999999", "since"),
        ("/api/v1/commands?before=-1", "before"),
    ],
)
def test_time_parameters_out_of_range_are_a_400(instance: Running, query: str, name: str) -> None:
    reply = http("GET", instance.base_url + query)
    _refused(reply, "invalid_time")
    assert name in reply.json()["message"]


def test_integer_parameters_only_take_ascii_digits(instance: Running) -> None:
    for query in ("/api/v1/dlq?limit=%C2%B2", "/api/v1/commands?limit=" + "1" * 5000):
        _refused(http("GET", instance.base_url + query), "invalid_parameter")


def test_command_params_nested_3000_deep_are_a_400(instance: Running) -> None:
    make_zone(instance)
    make_node(instance)
    deep = '{"a":' * 3000 + "1" + "}" * 3000
    raw = ('{"cmd":"dose","node_uid":"nd-ph-1","channel":"pump_acid","params":' + deep + "}").encode()
    headers = {"Content-Type": "application/json"}
    _refused(http("POST", instance.base_url + "/api/v1/commands", body=raw, headers=headers), "too_deeply_nested")
    # deep, but within what msgspec decodes: still refused before anything recurses on it
    params: Any = 1
    for _ in range(200):
        params = {"a": params}
    body = json.dumps({"cmd": "dose", "node_uid": "nd-ph-1", "channel": "pump_acid", "params": params}).encode()
    _refused(http("POST", instance.base_url + "/api/v1/commands", body=body, headers=headers), "too_deeply_nested")
    zone = ('{"greenhouse_uid":"gh-1","uid":"zn-9","name":"x","settings":' + deep + "}").encode()
    _refused(http("POST", instance.base_url + "/api/v1/zones", body=zone, headers=headers), "too_deeply_nested")
