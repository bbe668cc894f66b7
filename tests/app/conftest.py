"""A whole hydrovisor instance in-process: real PostgreSQL, real broker, real HTTP, real actors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest

from hydrovisor.app import Hydrovisor
from hydrovisor.config import Settings
from hydrovisor.config.settings import DatabaseSettings, HttpSettings, MqttSettings, SupervisionSettings
from hydrovisor.runtime.loop_thread import LoopThread
from tests.helpers import http, wait_until


@dataclass
class Running:
    """A started instance and how to reach it."""

    app: Hydrovisor
    loop: LoopThread
    base_url: str

    @property
    def mqtt_port(self) -> int:
        assert self.app.services is not None
        return self.app.services.broker.port

    def wait_ready(self, timeout: float = 15.0) -> None:
        wait_until(lambda: http("GET", self.base_url + "/health/ready").status == 200, timeout)


def settings_for(pg_dsn: str, data_dir: Path, **overrides: Any) -> Settings:
    """Test settings: loopback listeners on ephemeral ports, fast probes."""
    base = Settings(
        data_dir=str(data_dir),
        dev_mode=True,
        http=HttpSettings(host="127.0.0.1", port=0),
        mqtt=MqttSettings(host="127.0.0.1", port=0),
        database=DatabaseSettings(url=pg_dsn, health_interval=0.3),
        supervision=SupervisionSettings(liveness_interval=0.1),
        shutdown_timeout=10.0,
    )
    return msgspec.structs.replace(base, **overrides)


@pytest.fixture
def start_app(pg_dsn: str, tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """Factory: ``start_app(**settings_overrides)`` -> a started, ready instance (stopped after)."""
    started: list[Running] = []
    loop = LoopThread()
    loop.__enter__()

    def start(**overrides: Any) -> Running:
        app = Hydrovisor(settings_for(pg_dsn, tmp_path / f"data{len(started)}", **overrides))
        loop.run(app.start())
        running = Running(app, loop, f"http://127.0.0.1:{app.http_port}")
        started.append(running)
        running.wait_ready()
        return running

    yield start
    for running in reversed(started):
        loop.run(running.app.stop())
    loop.close()


@pytest.fixture
def instance(start_app: Callable[..., Running]) -> Running:
    """One running instance with default test settings (no token: loopback clients only)."""
    return start_app()
