"""Pure parts of the simulator: admission, the cmd_id cache, physics, config parsing, payloads, options."""

from __future__ import annotations

import json
import random

import msgspec
import pytest

from hydrovisor.protocol import Command, encode_command
from hydrovisor.sim import (
    SIM_NODE_TYPES,
    CommandCache,
    Faults,
    FieldConfig,
    NodeOptions,
    PlantOptions,
    Rejection,
    WaterPhysics,
    check_command,
    profile_for,
)
from hydrovisor.sim.clock import DeviceClock
from hydrovisor.sim.commands import RUNNING
from hydrovisor.sim.nodeconfig import config_report, initial_config, parse_config_push
from hydrovisor.sim.transport import broker_uri, redact_uri
from hydrovisor.sim.wire import corrupt
from hydrovisor.zones.clock import ManualClock, ScaledClock

SECRET = "hydro-default-secret-key-2025"
TS = 1737355112
VECTOR = (b'{"cmd":"run_pump","cmd_id":"cmd-591","params":{"duration_ms":2500},"ts":1737355112,'
          b'"sig":"93a9884c42e9a56663638a9052e368fd1847fa10e539893c0fe37790b7486ec5"}')


def _check(raw: bytes, *, secret: str | None = SECRET, now: float = TS, synced: bool = True) -> Command | Rejection:
    return check_command(raw, secret=secret, now=now, synced=synced)


def test_the_protocol_test_vector_is_admitted() -> None:
    command = _check(VECTOR)
    assert isinstance(command, Command)
    assert (command.cmd, command.cmd_id, command.params) == ("run_pump", "cmd-591", {"duration_ms": 2500})


@pytest.mark.parametrize(("raw", "kwargs", "expected"), [
    (b"nope", {}, ("unknown", "INVALID", "invalid_command_format")),
    (b'{"cmd_id":"x-1"}', {}, ("x-1", "INVALID", "invalid_command_format")),
    (VECTOR.replace(b'"ts"', b'"extra":1,"ts"'), {}, ("cmd-591", "INVALID", "invalid_command_format")),
    (VECTOR.replace(b'"params":{"duration_ms":2500}', b'"params":[]'), {},
     ("cmd-591", "INVALID", "invalid_command_format")),
    (VECTOR.replace(b"1737355112,", b'"1737355112",'), {}, ("cmd-591", "INVALID", "invalid_command_format")),
    (VECTOR, {"secret": None}, ("cmd-591", "ERROR", "missing_node_secret")),
    (VECTOR, {"secret": "other"}, ("cmd-591", "ERROR", "invalid_signature")),
    (VECTOR.replace(b"2500", b"2501"), {}, ("cmd-591", "ERROR", "invalid_signature")),
    (VECTOR, {"synced": False}, ("cmd-591", "ERROR", "time_not_synced")),
    (VECTOR, {"now": TS + 11}, ("cmd-591", "ERROR", "timestamp_expired")),
    (VECTOR, {"now": TS - 11}, ("cmd-591", "ERROR", "timestamp_expired")),
])
def test_admission_checks_in_firmware_order(raw: bytes, kwargs: dict[str, object],
                                            expected: tuple[str, str, str]) -> None:
    rejection = _check(raw, **kwargs)  # type: ignore[arg-type]
    assert isinstance(rejection, Rejection)
    assert (rejection.cmd_id, rejection.status, rejection.error_code) == expected


def test_ten_seconds_either_way_are_accepted() -> None:
    assert isinstance(_check(VECTOR, now=TS + 10), Command)
    assert isinstance(_check(VECTOR, now=TS - 10), Command)


def test_signed_floats_and_unicode_params_verify() -> None:
    raw = encode_command("calibrate", "c-2", {"stage": "mid", "known_ph": 6.86, "note": "pH ✓"}, TS, SECRET)
    assert isinstance(_check(raw), Command)


def test_command_cache_capacity_ttl_and_states() -> None:
    now = [0.0]
    cache = CommandCache(capacity=3, ttl_s=300.0, clock=lambda: now[0])
    for index in range(3):
        cache.start(f"c{index}")
    assert cache.get("c0") == RUNNING
    cache.finish("c0", "DONE")
    assert cache.get("c0") == "DONE"
    cache.start("c3")  # evicts the oldest admission
    assert cache.get("c0") is None and len(cache) == 3
    now[0] = 299.0
    assert cache.get("c1") == RUNNING
    now[0] = 300.5
    assert cache.get("c1") is None and len(cache) == 0


def test_physics_is_deterministic_for_a_seed_and_reacts_to_actuators() -> None:
    def history(seed: int) -> list[float]:
        model = WaterPhysics(seed, clock=ManualClock())
        values = []
        for _ in range(5):
            model.advance(10.0)
            values += [model.ph, model.ec, model.read("ph")]
        return values
    assert history(1) == history(1) != history(2)

    model = WaterPhysics(5, clock=ManualClock())
    level, ph, ec = model.solution_level_pct, model.ph, model.ec
    model.set_valve("valve_solution_supply", True)
    model.set_valve("valve_irrigation", True)
    model.start_pump("pump_main", main=True)
    assert model.flow_lpm_true() > 0 and model.pump_current_ma_true() > 1000
    model.advance(60.0)
    assert level - model.solution_level_pct == pytest.approx(6.0)  # 12 l of 200 l
    model.stop_pump("pump_main")
    assert model.flow_lpm_true() == 0 and model.read("flow_lpm") == 0
    model.dose("acid", 10)
    model.dose("nutrient", 50)
    model.advance(60.0)  # a dose mixes in over time
    assert model.ph < ph and model.ec > ec

    blocked = WaterPhysics(5, clock=ManualClock(), plant=PlantOptions(open_path="irrigation"))
    blocked.start_pump("pump_main", main=True, flowing=False)
    before = blocked.solution_level_pct
    blocked.advance(60.0)
    assert blocked.flow_lpm_true() == 0 and blocked.solution_level_pct == before
    assert blocked.pump_current_ma_true() > 1000  # the no_flow signature: current without flow


def test_physics_time_scale_speeds_up_simulated_time() -> None:
    now = [0.0]
    model = WaterPhysics(1, clock=ScaledClock(100, mono=lambda: now[0]), plant=PlantOptions(open_path="irrigation"))
    model.start_pump("pump_main", main=True)
    level = model.solution_level_pct
    now[0] = 0.6  # 60 simulated seconds
    model.update()
    assert level - model.solution_level_pct == pytest.approx(6.0)


def test_clock_reports_uptime_until_synced() -> None:
    now = [100.0]
    clock = DeviceClock(lambda: now[0])
    now[0] = 105.0
    assert not clock.synced and clock.now() == 5.0
    assert not clock.sync(12345) and not clock.sync(float("nan"))
    assert clock.sync(1_700_000_000)
    now[0] = 106.0
    assert clock.now() == 1_700_000_001
    clock.reboot()
    assert not clock.synced and clock.uptime() == 0


def test_config_push_parsing_and_report() -> None:
    push = {"node_id": "nd-1", "gh_uid": "gh-1", "zone_uid": "zn-1", "node_secret": "s3cret", "version": 3,
            "channels": [{"name": "ph_sensor", "type": "SENSOR"}, {"nope": 1}], "limits": {"max": 1}}
    stored = parse_config_push(json.dumps(push).encode())
    assert stored is not None and stored.is_bound
    assert stored.namespace("esp32-000000000001") == ("gh-1", "zn-1", "nd-1")
    assert "s3cret" not in repr(stored)
    report = config_report(stored, profile_for("ph"), fw_version="x", echo_secret=False)
    assert report["channels"] == [{"name": "ph_sensor", "type": "SENSOR"}] and report["limits"] == {"max": 1}
    assert "node_secret" not in report
    assert config_report(stored, profile_for("ph"), fw_version="x", echo_secret=True)["node_secret"] == "s3cret"

    unbind = parse_config_push(json.dumps(push | {"gh_uid": "gh-temp", "zone_uid": "zn-temp"}).encode())
    assert unbind is not None and not unbind.is_bound
    assert unbind.namespace("esp32-000000000001") == ("gh-temp", "zn-temp", "esp32-000000000001")
    for bad in (push | {"node_secret": ""}, push | {"gh_uid": "gh-temp"}, push | {"node_id": "a/b"},
                push | {"zone_uid": 5}):
        assert parse_config_push(json.dumps(bad).encode()) is None
    assert parse_config_push(b"x" * 5000) is None

    fresh = initial_config("esp32-000000000001", None)
    assert not fresh.is_bound and fresh.node_secret is None
    report = config_report(fresh, profile_for("irrig"), fw_version="x", echo_secret=True)
    assert {"pump_main", "storage_state", "flow", "system", "level_clean_min", "level_clean_max",
            "level_solution_min", "level_solution_max"} <= {c["name"] for c in report["channels"]}


def test_every_profile_is_consistent() -> None:
    for node_type in SIM_NODE_TYPES:
        profile = profile_for(node_type)
        names = [channel.name for channel in profile.channels]
        assert len(names) == len(set(names)) and "system" in names
        model = WaterPhysics(0, clock=ManualClock())
        for sensor in profile.sensors:
            assert sensor.channel in names
            model.read(sensor.source)
    with pytest.raises(ValueError, match="unknown simulated node type"):
        profile_for("toaster")


def test_options_faults_and_field_config_validate() -> None:
    with pytest.raises(ValueError, match="drop_reply"):
        Faults(drop_reply=1.5)
    with pytest.raises(ValueError, match="offline_every_s"):
        Faults(offline_every_s=0)
    with pytest.raises(ValueError, match="time_scale"):
        NodeOptions(time_scale=0)
    with pytest.raises(ValueError, match="keep_alive_s"):
        NodeOptions(keep_alive_s=-1)
    with pytest.raises(ValueError, match="not lowercase"):
        FieldConfig(gh_uid="GH", zone_uid="zn-1", node_uid="nd-1", node_secret="x")
    assert "topsecret" not in repr(FieldConfig(gh_uid="gh", zone_uid="zn", node_uid="nd", node_secret="topsecret"))


def test_broker_uri_quotes_credentials_and_redacts_them() -> None:
    uri = broker_uri("mqtt://127.0.0.1:1883", "esp32-aa", "p@ss:w/rd")
    assert uri == "mqtt://esp32-aa:p%40ss%3Aw%2Frd@127.0.0.1:1883"
    assert redact_uri(uri) == "mqtt://esp32-aa:***@127.0.0.1:1883"
    assert broker_uri("mqtt://host", None, None) == "mqtt://host"
    with pytest.raises(ValueError, match="broker URL"):
        broker_uri("http://host", None, None)


def test_corrupted_payloads_are_never_json() -> None:
    rng = random.Random(0)
    for _ in range(50):
        with pytest.raises(msgspec.DecodeError):
            msgspec.json.decode(corrupt(b'{"metric_type":"PH","value":6.1}', rng))
