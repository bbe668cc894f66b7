"""Metric and node type vocabulary, node uids (PROTOCOL.md §4, §8)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hydrovisor.protocol import (
    ACCEPTED_METRICS,
    CANONICAL_METRICS,
    NODE_TYPES,
    MetricName,
    NodeHello,
    ProvisioningMeta,
    is_valid_node_uid,
    mac_from_hardware_id,
    node_uid_from_hello,
    normalize_metric,
    normalize_node_type,
)


@pytest.mark.parametrize("name", sorted(CANONICAL_METRICS | ACCEPTED_METRICS))
def test_known_metrics(name: str) -> None:
    raw = f" {name.lower()} "
    assert normalize_metric(raw) == MetricName(name=name, known=True, original=raw)


@pytest.mark.parametrize("raw", ["TDS", "LIGHT", "pump_state", "PH_SENSOR", "", "ph value"])
def test_unknown_metrics_keep_original(raw: str) -> None:
    metric = normalize_metric(raw)
    assert not metric.known
    assert metric.name == raw.strip().upper()
    assert metric.original == raw


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        *((t, t) for t in NODE_TYPES),
        ("PH", "ph"), ("ph_node", "ph"), ("ec_node", "ec"), ("climate-node", "climate"),
        ("storage_irrigation_node", "irrig"), ("irrigation", "irrig"), ("recirc", "recirculation"),
        ("water_sensor_node", "water_sensor"), ("light_node", "light"), ("relay", "relay"),
        ("toaster", "unknown"), ("node", "unknown"), ("_node", "unknown"), ("", "unknown"), (None, "unknown"),
        (5, "unknown"),
    ],
)
def test_normalize_node_type(raw: object, expected: str) -> None:
    assert normalize_node_type(raw) == expected


@pytest.mark.parametrize(
    ("hardware_id", "mac"),
    [("esp32-78e36ddde468", "78e36ddde468"), ("ESP32-78E36DDDE468", "78e36ddde468"),
     ("78:e3:6d:dd:e4:68", "78e36ddde468"), ("esp32_78-e3-6d-dd-e4-68", "78e36ddde468"),
     ("esp32-78e36ddde46", None), ("sim-ph-01", None), ("esp32-78e36ddde468x", None)],
)
def test_mac_from_hardware_id(hardware_id: str, mac: str | None) -> None:
    assert mac_from_hardware_id(hardware_id) == mac


@pytest.mark.parametrize(
    ("node_type", "uid"),
    [("ph", "nd-ph-78e36ddde468"), ("ec", "nd-ec-78e36ddde468"), ("climate", "nd-clim-78e36ddde468"),
     ("irrig", "nd-irr-78e36ddde468"), ("light", "nd-light-78e36ddde468"), ("relay", "nd-relay-78e36ddde468"),
     ("water_sensor", "nd-water-78e36ddde468"), ("recirculation", "nd-recirc-78e36ddde468"),
     ("unknown", "nd-node-78e36ddde468"), ("ph_node", "nd-ph-78e36ddde468")],
)
def test_generated_uid(node_type: str, uid: str) -> None:
    assert node_uid_from_hello(NodeHello(hardware_id="esp32-78e36ddde468", node_type=node_type)) == uid


def test_provisioned_uid_wins_when_valid() -> None:
    meta = ProvisioningMeta(node_uid="nd-ph-acid-1", node_name="Acid")
    hello = NodeHello(hardware_id="esp32-78e36ddde468", provisioning_meta=meta)
    assert node_uid_from_hello(hello) == "nd-ph-acid-1"


@pytest.mark.parametrize("bad", ["", "-x", "Nd-1", "nd 1", "nd/1", "n" * 65, "nd.1"])
def test_invalid_provisioned_uid_falls_back(bad: str) -> None:
    meta = ProvisioningMeta(node_uid=bad)
    hello = NodeHello(hardware_id="esp32-78e36ddde468", node_type="ph", provisioning_meta=meta)
    assert node_uid_from_hello(hello) == "nd-ph-78e36ddde468"


def test_hash_fallback_is_stable() -> None:
    hello = NodeHello(hardware_id="sim-ph-01", node_type="ph")
    uid = node_uid_from_hello(hello)
    assert uid == node_uid_from_hello(NodeHello(hardware_id="sim-ph-01", node_type="ph"))
    assert uid.startswith("nd-ph-")
    assert len(uid) == len("nd-ph-") + 12
    assert uid != node_uid_from_hello(NodeHello(hardware_id="sim-ph-02", node_type="ph"))


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=64), st.text(max_size=30))
def test_uid_is_always_valid(hardware_id: str, node_type: str) -> None:
    assert is_valid_node_uid(node_uid_from_hello(NodeHello(hardware_id=hardware_id, node_type=node_type)))


def test_is_valid_node_uid() -> None:
    assert is_valid_node_uid("n" * 64)
    assert not is_valid_node_uid("n" * 65)
    assert not is_valid_node_uid(None)
