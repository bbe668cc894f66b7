"""A whole hydrovisor instance in-process: real PostgreSQL, real broker, real HTTP, real actors."""

from __future__ import annotations

import os
import subprocess
import sys
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
from tests.helpers import free_port, http, wait_until


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


HYDROVISOR = [sys.executable, "-m", "hydrovisor"]


KEPT_VARIABLES = frozenset({"HYDROVISOR_STRICT_BLOCKING"})  # set for every test process (tests/conftest.py)


def hydrovisor_env(**values: str) -> dict[str, str]:
    """This process's environment without HYDROVISOR_* variables (but :data:`KEPT_VARIABLES`), plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDROVISOR_") or k in KEPT_VARIABLES}
    env.update(values)
    return env


class Process:
    """A running ``hydrovisor run`` with its ports."""

    def __init__(self, data_dir: Path, extra: dict[str, str], ports: tuple[int, int] | None = None) -> None:
        self.http_port, self.mqtt_port = ports or (free_port(), free_port())
        self.data_dir = data_dir
        self.base_url = f"http://127.0.0.1:{self.http_port}"
        env = hydrovisor_env(HYDROVISOR_DATA_DIR=str(data_dir), HYDROVISOR_HTTP_HOST="127.0.0.1",
                   HYDROVISOR_HTTP_PORT=str(self.http_port), HYDROVISOR_MQTT_HOST="127.0.0.1",
                   HYDROVISOR_MQTT_PORT=str(self.mqtt_port), **extra)
        self.proc = subprocess.Popen([*HYDROVISOR, "run"], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"hydrovisor exited early with {self.proc.returncode}:\n{self.output()}")
        try:
            return http("GET", self.base_url + "/health/ready", timeout=2).status == 200
        except OSError:
            return False

    def output(self) -> str:
        out, _ = self.proc.communicate(timeout=30)
        return out

    def wait(self, timeout: float = 60) -> int:
        return self.proc.wait(timeout)


@pytest.fixture
def process(tmp_path: Path) -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for p in started:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)


@pytest.fixture
def node_factory(instance: Running) -> Iterator[Callable[..., Any]]:
    """``node_factory(uid=..., faults=None, start=True)`` -> a simulated irrigation node in zone ``zn-1`` of
    ``instance`` (``tests.app.irrig_node.Node``), stopped after the test."""
    from tests.app.irrig_node import Node  # noqa: PLC0415 - it imports this module

    made: list[Node] = []

    def make(uid: str = "nd-irr-000000000001", faults: Any = None, start: bool = True) -> Node:
        node = Node(instance, uid, faults)
        if start:
            node.start()
        made.append(node)
        return node

    yield make
    for node in made:
        node.stop()
