"""``hydrovisor run`` as a real process: embedded PostgreSQL + broker, tree, signals, exit codes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from amqtt.client import MQTTClient

from tests.helpers import free_port, http, wait_until

HYDROVISOR = [sys.executable, "-m", "hydrovisor"]


def _env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYDROVISOR_")}
    env.update(values)
    return env


class Process:
    """A running ``hydrovisor run`` with its ports."""

    def __init__(self, data_dir: Path, extra: dict[str, str]) -> None:
        self.http_port = free_port()
        self.mqtt_port = free_port()
        self.data_dir = data_dir
        self.base_url = f"http://127.0.0.1:{self.http_port}"
        env = _env(HYDROVISOR_DATA_DIR=str(data_dir), HYDROVISOR_HTTP_HOST="127.0.0.1",
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


def _postgres_processes(pgdata: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("name") == "postgres" and any(str(pgdata) in part for part in cmdline):
            found.append(proc)
    return found


async def _mqtt_roundtrip(port: int) -> bytes:
    client = MQTTClient(client_id="esp32-0123456789ab", config={"auto_reconnect": False})
    await client.connect(f"mqtt://127.0.0.1:{port}/")
    await client.subscribe([("hydro/test/echo", 1)])
    await client.publish("hydro/test/echo", b"hello", qos=1)
    message = await client.deliver_message(timeout_duration=5)
    await client.disconnect()
    assert message is not None
    return bytes(message.data)


def test_run_embedded_ready_mqtt_tree_and_clean_sigterm(tmp_path: Path, process: list[Process]) -> None:
    instance = Process(tmp_path / "data", {"HYDROVISOR_DEV_MODE": "1"})
    process.append(instance)
    wait_until(instance.ready, timeout=60, interval=0.2)
    assert _postgres_processes(tmp_path / "data" / "pg"), "embedded PostgreSQL is not running"

    assert asyncio.run(_mqtt_roundtrip(instance.mqtt_port)) == b"hello"

    tree = subprocess.run([*HYDROVISOR, "tree", "--url", instance.base_url], capture_output=True,
                          text=True, timeout=30, env=_env(), check=False)
    assert tree.returncode == 0, tree.stderr
    assert "dynamic max=" in tree.stdout
    for name in ("/", "store", "db_health", "broker", "nodes", "zones", "commands"):
        assert name in tree.stdout

    instance.proc.send_signal(signal.SIGTERM)
    assert instance.wait() == 0, instance.output()
    assert _postgres_processes(tmp_path / "data" / "pg") == []


def test_root_escalation_exits_with_code_10(tmp_path: Path, pg_dsn: str, process: list[Process]) -> None:
    config = tmp_path / "hydrovisor.toml"
    config.write_text("[supervision]\nmax_restarts = 1\nperiod = 60.0\n")
    env = {"HYDROVISOR_DATABASE_URL": pg_dsn, "HYDROVISOR_CONFIG": str(config)}
    instance = Process(tmp_path / "data", env)
    process.append(instance)
    wait_until(instance.ready, timeout=60, interval=0.2)
    assert http("POST", instance.base_url + "/api/v1/actors/nodes/restart").status == 202
    http("POST", instance.base_url + "/api/v1/actors/nodes/restart")
    assert instance.wait() == 10
    assert "reached_max_restart_intensity" in instance.output()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"HYDROVISOR_HTTP_PORT": "eighty"}, "invalid HYDROVISOR_HTTP_PORT"),
        ({"HYDROVISOR_ENV": "production"}, "requires HYDROVISOR_API_TOKEN"),
        ({"HYDROVISOR_HTPP_PORT": "1"}, "unknown setting HYDROVISOR_HTPP_PORT"),
    ],
)
def test_invalid_config_exits_77_with_one_clear_message(env: dict[str, str], message: str) -> None:
    result = subprocess.run([*HYDROVISOR, "run"], env=_env(**env), capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 77
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
