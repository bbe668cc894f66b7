"""``hydrovisor run`` as a real process: embedded PostgreSQL + broker, tree, signals, exit codes."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
from amqtt.client import MQTTClient

from tests.app.conftest import HYDROVISOR, Process, hydrovisor_env
from tests.helpers import http, wait_until


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
                          text=True, timeout=30, env=hydrovisor_env(), check=False)
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
    # dev mode: without a token only dev mode makes loopback clients admin (restart needs admin)
    env = {"HYDROVISOR_DATABASE_URL": pg_dsn, "HYDROVISOR_CONFIG": str(config), "HYDROVISOR_DEV_MODE": "1"}
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
    result = subprocess.run([*HYDROVISOR, "run"], env=hydrovisor_env(**env), capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 77
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
