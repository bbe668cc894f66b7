"""Secure defaults (issue 10 #11): listeners that need no credentials stay on loopback, and say so."""

from __future__ import annotations

import logging
from collections.abc import Callable

import psutil
import pytest

from hydrovisor.app import Hydrovisor, StartupError
from hydrovisor.config import Settings
from hydrovisor.config.settings import HttpSettings, MqttSettings
from tests.app.conftest import Running


def _listening_on(port: int) -> set[str]:
    return {c.laddr.ip for c in psutil.Process().net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_dev_mode_without_hosts_listens_on_loopback_and_the_ready_line_says_who_is_served(
    start_app: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="hydrovisor.app")
    instance = start_app(http=HttpSettings(port=0), mqtt=MqttSettings(port=0))  # hosts unset: derived
    assert instance.app.http_port is not None
    assert _listening_on(instance.app.http_port) == {"127.0.0.1"}
    assert _listening_on(instance.mqtt_port) == {"127.0.0.1"}
    [ready] = [r for r in caplog.records if getattr(r, "event", None) == "ready"]
    message = ready.getMessage()
    assert "http 127.0.0.1:" in message
    assert "mqtt 127.0.0.1:" in message
    assert "no API token configured: loopback clients only, as admin (dev mode)" in message
    assert "anonymous devices admitted (dev mode)" in message


def test_an_exposed_listener_is_refused_unless_opted_in_and_then_warned(caplog: pytest.LogCaptureFixture) -> None:
    exposed = Settings(dev_mode=True, mqtt=MqttSettings(host="0.0.0.0"))  # built without the loader's check
    with pytest.raises(StartupError) as refused:
        Hydrovisor(exposed)._listeners()
    assert refused.value.code == "config_invalid"
    caplog.set_level(logging.WARNING, logger="hydrovisor.app")
    opted_in = Settings(dev_mode=True, allow_remote_dev=True, mqtt=MqttSettings(host="0.0.0.0"))
    _http, mqtt = Hydrovisor(opted_in)._listeners()
    assert mqtt.host == "0.0.0.0"
    [warning] = [r for r in caplog.records if getattr(r, "event", None) == "listener_exposed"]
    assert "MQTT listens on 0.0.0.0 without credentials" in warning.getMessage()
    assert "HYDROVISOR_ALLOW_REMOTE_DEV=1" in warning.getMessage()
