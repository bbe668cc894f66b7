"""What SAFE_MODE lets through."""

from __future__ import annotations

from typing import Any

import pytest

from hydrovisor.process.safety import allowed_in_safe_mode


@pytest.mark.parametrize(("cmd", "params"), [
    ("set_relay", {"state": 0}), ("set_relay", {"state": False}), ("set_relay", {"state": "off"}),
    ("set_pwm", {"value": 0}), ("set_pwm", {"value": 0.0}), ("light_off", {}), ("state", {}),
    ("report_config", {}),
])
def test_fail_safe_off_and_reads_pass(cmd: str, params: dict[str, Any]) -> None:
    assert allowed_in_safe_mode(cmd, params)


@pytest.mark.parametrize(("cmd", "params"), [
    ("run_pump", {"duration_ms": 1000}), ("dose", {"ml": 1}), ("set_relay", {"state": 1}),
    ("set_relay", {"state": True}), ("set_relay", {"state": "on"}), ("set_relay", {}),
    ("set_relay", {"state": 0, "duration_ms": 5000}), ("set_relay", {"state": 0.5}), ("set_pwm", {"value": 10}),
    ("set_pwm", {"value": False}), ("set_pwm", {}), ("light_on", {}), ("calibrate", {"stage": 1}),
    ("restart", {}), ("activate_sensor_mode", {}),
])
def test_everything_else_is_actuation_and_blocked(cmd: str, params: dict[str, Any]) -> None:
    assert not allowed_in_safe_mode(cmd, params)
