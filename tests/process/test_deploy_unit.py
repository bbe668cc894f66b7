"""``deploy/hydrovisor.service`` keeps the contract of ``hydrovisor.exitcodes`` and the notify protocol."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hydrovisor import exitcodes
from hydrovisor.config.settings import Settings

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "hydrovisor.service"


def _unit() -> configparser.ConfigParser:
    # systemd allows repeated keys (Environment=, After=); for the keys checked here the last one wins
    parser = configparser.ConfigParser(strict=False, interpolation=None, empty_lines_in_values=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    parser.read_string(UNIT.read_text(encoding="utf-8"), source=str(UNIT))
    return parser


def test_notify_service_with_watchdog() -> None:
    service = _unit()["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert int(service["WatchdogSec"]) > 0
    assert service["ExecStart"].endswith("hydrovisor run")


def test_restarts_on_recoverable_and_critical_but_not_on_ok_and_config() -> None:
    service = _unit()["Service"]
    # on-failure: restart after any non-zero exit, signal, timeout or watchdog kill, never after exit 0
    assert service["Restart"] == "on-failure"
    prevented = service["RestartPreventExitStatus"].split()
    assert str(exitcodes.CONFIG) in prevented
    assert str(exitcodes.RECOVERABLE) not in prevented
    assert str(exitcodes.CRITICAL) not in prevented
    assert "SuccessExitStatus" not in service  # only 0 counts as success
    assert int(service["RestartSec"]) > 0


def test_stop_timeout_outlasts_the_shutdown_deadline() -> None:
    service = _unit()["Service"]
    # serve() gives stop() shutdown_timeout + 5 s before giving up; systemd must not SIGKILL earlier
    assert int(service["TimeoutStopSec"]) > Settings().shutdown_timeout + 5
    assert service["KillMode"] == "mixed"


def test_dedicated_user_state_directory_and_hardening() -> None:
    service = _unit()["Service"]
    assert service["User"] not in ("", "root")
    assert service["StateDirectory"] == "hydrovisor"
    assert service["ReadWritePaths"] == "/var/lib/hydrovisor"
    assert service["EnvironmentFile"] == "/etc/hydrovisor/hydrovisor.env"
    assert service["NoNewPrivileges"] == "true"
    assert service["ProtectSystem"] == "strict"
    assert service["PrivateTmp"] == "true"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed; the unit's syntax is not verified on this machine")
    # verify fails on a missing ExecStart binary; /opt/hydrovisor is not installed on a dev machine
    text = UNIT.read_text(encoding="utf-8").replace("/opt/hydrovisor/.venv/bin/hydrovisor", sys.executable)
    copy = tmp_path / UNIT.name
    copy.write_text(text, encoding="utf-8")
    result = subprocess.run([analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True,
                            timeout=60, check=False)
    # unknown keys and unparsable values are only warnings (exit 0), so the output must be clean too
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0, result.stderr
    assert complaints == []
