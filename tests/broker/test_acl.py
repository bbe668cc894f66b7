"""The ACL the broker applies to an admitted identity (PROTOCOL §2, §9): the protocol package's rules
(tests/protocol/test_topics.py tests them in depth), seen through a DeviceIdentity."""

from __future__ import annotations

import pytest

from hydrovisor.broker import acl
from hydrovisor.broker.directory import DeviceIdentity

BOUND = DeviceIdentity(username="nd-1", node_uid="nd-1", hardware_id="esp32-a1", gh_uid="gh-1",
                       zone_uid="zn-1", password_hash="x")
UNBOUND = DeviceIdentity(username="esp32-a1", hardware_id="esp32-a1", password_hash="x")


@pytest.mark.parametrize(("topic", "bound", "unbound"), [
    ("hydro/gh-1/zn-1/nd-1/ph_sensor/telemetry", True, False),
    ("hydro/gh-1/zn-1/nd-1/heartbeat", True, False),
    ("hydro/gh-1/zn-1/nd-1/status", True, False),
    ("hydro/gh-1/zn-1/nd-1/lwt", True, False),
    ("hydro/gh-1/zn-1/nd-1/config_report", True, False),
    ("hydro/gh-1/zn-1/nd-1/pump_acid/command_response", True, False),
    ("hydro/gh-temp/zn-temp/esp32-a1/node_hello", True, True),
    ("hydro/gh-temp/zn-temp/esp32-a1/config_report", True, True),
    ("hydro/node_hello", True, True),
    ("hydro/time/request", True, True),
    # not its own
    ("hydro/gh-1/zn-1/nd-2/ph_sensor/telemetry", False, False),
    ("hydro/gh-1/zn-2/nd-1/heartbeat", False, False),
    ("hydro/gh-temp/zn-temp/esp32-b2/node_hello", False, False),
    ("hydro/gh-temp/zn-temp/nd-1/node_hello", False, False),  # temp namespace is by hardware id
    # server -> node types
    ("hydro/gh-1/zn-1/nd-1/config", False, False),
    ("hydro/gh-1/zn-1/nd-1/pump_acid/command", False, False),
    ("hydro/gh-temp/zn-temp/esp32-a1/config", False, False),
    ("hydro/time/response", False, False),
    # shapes
    ("hydro/gh-1/zn-1/nd-1", False, False),
    ("hydro/gh-1/zn-1/nd-1/a/b/c", False, False),
    ("hydro/gh-1/zn-1/nd-1//telemetry", False, False),
    ("hydro/gh-1/zn-1/nd-1/+/telemetry", False, False),
    ("other/gh-1/zn-1/nd-1/heartbeat", False, False),
    ("", False, False),
])
def test_may_publish(topic: str, bound: bool, unbound: bool) -> None:
    assert acl.may_publish(BOUND, topic) is bound
    assert acl.may_publish(UNBOUND, topic) is unbound


@pytest.mark.parametrize(("topic_filter", "bound", "unbound"), [
    ("hydro/gh-1/zn-1/nd-1/config", True, False),
    ("hydro/gh-1/zn-1/nd-1/+/command", True, False),
    ("hydro/gh-1/zn-1/nd-1/pump_acid/command", True, False),
    ("hydro/gh-temp/zn-temp/esp32-a1/config", True, True),
    ("hydro/gh-temp/zn-temp/esp32-a1/+/command", True, True),
    ("hydro/time/response", True, True),
    ("hydro/gh-1/zn-1/nd-2/+/command", False, False),
    ("hydro/gh-1/zn-1/+/+/command", False, False),
    ("hydro/gh-1/zn-1/nd-1/#", False, False),
    ("hydro/gh-1/zn-1/nd-1/+/+", False, False),
    ("hydro/gh-1/zn-1/nd-1/+/telemetry", False, False),
    ("hydro/gh-1/zn-1/nd-1/+", False, False),
    ("hydro/gh-1/zn-1/nd-1/pu+/command", False, False),
    ("hydro/gh-1/zn-1/nd-1//command", False, False),
    ("#", False, False),
    ("+/+/+/+/+/+", False, False),
    ("hydro/time/request", False, False),
])
def test_may_subscribe(topic_filter: str, bound: bool, unbound: bool) -> None:
    assert acl.may_subscribe(BOUND, topic_filter) is bound
    assert acl.may_subscribe(UNBOUND, topic_filter) is unbound


def test_a_namespace_with_wildcards_in_it_grants_nothing() -> None:
    odd = DeviceIdentity(username="+", node_uid="+", hardware_id="esp32-a1", gh_uid="gh-1",
                         zone_uid="zn-1", password_hash="x")
    assert acl.may_publish(odd, "hydro/gh-temp/zn-temp/esp32-a1/heartbeat")  # its temp namespace stays
    assert not acl.may_subscribe(odd, "hydro/gh-1/zn-1/+/config")
    assert not acl.may_publish(odd, "hydro/gh-1/zn-1/nd-9/heartbeat")
