"""Config push and time response encoders; secrets stay out of reprs (PROTOCOL.md §4, §7)."""

from __future__ import annotations

import json

import pytest

from hydrovisor.protocol import (
    ChannelConfig,
    ConfigPush,
    ConfigPushInvalid,
    SafeLimits,
    encode_config_push,
    encode_time_response,
    time_response,
)

CHANNELS = (
    ChannelConfig(name="ph_sensor", type="SENSOR", metric="PH", unit="pH", poll_interval_ms=5000),
    ChannelConfig(name="pump_acid", type="ACTUATOR", actuator_type="PERISTALTIC_PUMP", relay_type="NO",
                  safe_limits=SafeLimits(max_duration_ms=30000, min_off_ms=5000), ml_per_second=1.25,
                  extra={"gpio": 26, "name": "ignored-on-clash"}),
)


def push(**overrides: object) -> ConfigPush:
    fields: dict[str, object] = {"node_id": "nd-ph-78e36ddde468", "gh_uid": "gh-1", "zone_uid": "zn-3",
                                 "type": "ph", "channels": CHANNELS, "node_secret": "s3cr3t-value"}
    fields.update(overrides)
    return ConfigPush(**fields)  # type: ignore[arg-type]


def test_config_push_wire_form() -> None:
    body = json.loads(encode_config_push(push(limits={"max_ml_per_hour": 50})))
    assert body == {
        "node_id": "nd-ph-78e36ddde468", "version": 3, "type": "ph", "gh_uid": "gh-1", "zone_uid": "zn-3",
        "channels": [
            {"name": "ph_sensor", "type": "SENSOR", "metric": "PH", "unit": "pH", "poll_interval_ms": 5000},
            {"name": "pump_acid", "type": "ACTUATOR", "actuator_type": "PERISTALTIC_PUMP", "relay_type": "NO",
             "safe_limits": {"max_duration_ms": 30000, "min_off_ms": 5000}, "ml_per_second": 1.25,
             "gpio": 26},
        ],
        "wifi": {"configured": True}, "mqtt": {"configured": True}, "node_secret": "s3cr3t-value",
        "limits": {"max_ml_per_hour": 50},
    }


def test_unbind_push_to_temp_namespace() -> None:
    body = json.loads(encode_config_push(push(gh_uid="gh-temp", zone_uid="zn-temp",
                                              node_id="esp32-78e36ddde468")))
    assert (body["gh_uid"], body["zone_uid"]) == ("gh-temp", "zn-temp")


def test_secret_is_masked_in_repr() -> None:
    config = push()
    for text in (repr(config), str(config), f"{config}", repr([config]), repr(config.__rich_repr__())):
        assert "s3cr3t" not in text
        assert "<redacted>" in text


@pytest.mark.parametrize(
    ("overrides", "code"),
    [
        ({"node_secret": ""}, "missing_node_secret"),
        ({"gh_uid": "GH 1"}, "invalid_namespace"),
        ({"zone_uid": "zn/3"}, "invalid_namespace"),
        ({"channels": (ChannelConfig(name="bad/name"),)}, "invalid_channel"),
        ({"channels": (ChannelConfig(name="c" * 64),)}, "invalid_channel"),
        ({"channels": (ChannelConfig(name="Upper"),)}, "invalid_channel"),
        ({"channels": tuple(ChannelConfig(name=f"channel_{i:03d}", type="SENSOR", metric="TEMPERATURE",
                                          unit="C", poll_interval_ms=1000) for i in range(60))},
         "payload_too_large"),
        ({"limits": {"x": float("nan")}}, "invalid_value"),
    ],
)
def test_config_push_refused(overrides: dict[str, object], code: str) -> None:
    with pytest.raises(ConfigPushInvalid) as info:
        encode_config_push(push(**overrides))
    assert info.value.code == code
    assert "s3cr3t" not in str(info.value)


def test_time_response() -> None:
    assert encode_time_response(1737355112.9) == (
        b'{"message_type":"time_response","unix_ts":1737355112,"server_time":1737355112}'
    )
    assert time_response(5.0).unix_ts == 5
    with pytest.raises(ValueError, match="finite"):
        time_response(float("nan"))
