"""Fault injection against a real ``hydrovisor run`` process: the systemd watchdog goes quiet during a
loop stall (checked with a fake NOTIFY_SOCKET), SAFE_MODE outliving its TTL and a supervision tree
that gives up both end the process with exit code 10, and the next start still lists what happened."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import Process, incident, incidents, inject, state, wait_chaos_over, wait_state
from tests.helpers import http, wait_until
from tests.process.fake_systemd import FakeSystemd

pytestmark = pytest.mark.fault_injection

THRESHOLD = 0.5


def config(path: Path, pg_dsn: str, *, system: dict[str, Any] | None = None,
           supervision: dict[str, Any] | None = None) -> Path:
    """A TOML config file: external test database, chaos on, a fast state machine."""
    values = {"cycle_interval": 0.2, "loop_stall_threshold": THRESHOLD, "guard_interval": 0.05,
              "fatal_exit_grace": 1.0, **(system or {})}
    lines = ["dev_mode = true", "chaos_enabled = true", "shutdown_timeout = 10.0",
             "[database]", f'url = "{pg_dsn}"', "health_interval = 0.3",
             "[supervision]", "liveness_interval = 0.1",
             *(f"{k} = {v}" for k, v in (supervision or {}).items()),
             "[system]", *(f"{k} = {v}" for k, v in values.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def start(data_dir: Path, cfg: Path, processes: list[Process], **env: str) -> Process:
    proc = Process(data_dir, {"HYDROVISOR_CONFIG": str(cfg), **env})
    processes.append(proc)
    wait_until(proc.ready, timeout=60, interval=0.1, what="hydrovisor ready")
    return proc


def mono(wall: float) -> float:
    """A unix time as this machine's monotonic clock (FakeSystemd stamps with time.monotonic)."""
    return wall - (time.time() - time.monotonic())


def test_watchdog_pings_stop_during_a_stall_and_resume(tmp_path: Path, pg_dsn: str,
                                                       process: list[Process]) -> None:
    with FakeSystemd(watchdog_usec=400_000) as fake:  # a ping every 0.2 s while healthy
        proc = start(tmp_path / "data", config(tmp_path / "h.toml", pg_dsn), process, **fake.env())
        base = proc.base_url
        fake.wait_for("READY", "1", timeout=10)
        healthy_since = time.monotonic()
        wait_until(lambda: len(fake.matching("WATCHDOG", "1", since=healthy_since)) >= 5, timeout=10,
                   what="watchdog pings while healthy")

        chaos_id = inject(base, "cpu_bound_loop", 3.0)
        wait_chaos_over(base, chaos_id)
        resumed = time.monotonic()
        fake.wait_for("WATCHDOG", "1", since=resumed, timeout=5)  # pinging again once the loop runs
        stalls = incidents(base, kind="loop_stall")
        assert len(stalls) == 1, stalls
        stall = incident(base, stalls[0]["incident_id"])
        # from the moment the loop was past the threshold until the guard saw it running again: silence
        quiet_from = mono(stall["opened_at"]) + THRESHOLD + 0.1
        quiet_to = mono(stall["closed_at"]) - 0.2
        assert quiet_to - quiet_from > 1.5  # a healthy process would have pinged ~8 times in there
        during = [at for at, _ in fake.matching("WATCHDOG", "1") if quiet_from <= at <= quiet_to]
        assert during == [], f"WATCHDOG=1 during the stall at {[round(a - quiet_from, 2) for a in during]}"
        assert fake.matching("WATCHDOG", "1", since=mono(stall["opened_at"]) - 1.0), "pings right before the stall"
        # the state machine went through SAFE_MODE and tells systemd so in STATUS=
        wait_state(base, "RUNNING", timeout=15)
        statuses = [fields["STATUS"] for _, fields in fake.matching("STATUS")]
        assert any(s.startswith("SAFE_MODE: loop_stall_detected") for s in statuses), statuses
        assert any(s.startswith("RUNNING: ") for s in statuses), statuses

        proc.proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        fake.wait_for("STOPPING", "1", timeout=5)
    out = proc.output()
    assert f"LOOP_GUARD_TIMEOUT incident_id={stall['incident_id']}" in out
    assert f"TASK_DUMP incident_id={stall['incident_id']}" in out
    assert "STATE_TRANSITION" in out and "from=RUNNING to=SAFE_MODE" in out


def test_safe_mode_ttl_expiry_is_fatal_exit_10_and_the_next_start_lists_it(tmp_path: Path, pg_dsn: str,
                                                                        process: list[Process]) -> None:
    """A stall longer than SAFE_MODE's TTL: FATAL while the loop is still stuck, so the loop guard ends the
    process itself with exit code 10 after the grace. Restarted on the same data dir, the incidents of
    the previous run are listed (closed by the restart)."""
    data_dir = tmp_path / "data"
    cfg = config(tmp_path / "ttl.toml", pg_dsn, system={"safe_mode_ttl": 1.0, "fatal_exit_grace": 1.0})
    proc = start(data_dir, cfg, process)
    began = time.monotonic()
    inject(proc.base_url, "cpu_bound_loop", 30.0)
    assert proc.wait(30) == 10
    assert time.monotonic() - began < 25  # well before the stall would have ended by itself
    out = proc.output()
    assert "from=RUNNING to=SAFE_MODE" in out
    assert "from=SAFE_MODE to=FATAL reason=SAFE_MODE outlived its TTL" in out
    assert "SYSTEM_EXIT exit_code=10" in out

    again = start(data_dir, config(tmp_path / "again.toml", pg_dsn), process)
    fatal = [i for i in incidents(again.base_url, kind="state_transition") if i["title"] == "SAFE_MODE -> FATAL"]
    assert len(fatal) == 1, incidents(again.base_url)
    assert fatal[0]["owner"] == "safe_mode_ttl"
    assert fatal[0]["attributes"]["closed_by"] == "restart"
    detail = incident(again.base_url, fatal[0]["incident_id"])
    assert detail["dump"]["context"] == "FATAL"
    assert [i["closed_at"] is not None for i in incidents(again.base_url, kind="loop_stall")] == [True]
    assert state(again.base_url) == "RUNNING"


def test_root_intensity_exceeded_is_fatal_exit_10(tmp_path: Path, pg_dsn: str, process: list[Process]) -> None:
    """The root allows one restart (TOML ``supervision.max_restarts = 1``): two crashes of the /broker
    subtree exceed it, the tree gives up, the process goes FATAL and exits with code 10."""
    cfg = config(tmp_path / "root.toml", pg_dsn, supervision={"max_restarts": 1})
    proc = start(tmp_path / "data", cfg, process)
    reply = http("POST", proc.base_url + "/admin/chaos/inject",
                 body={"type": "actor_crash", "duration": 5, "path": "/broker", "count": 2})
    assert reply.status == 202, reply.raw
    assert proc.wait(30) == 10
    out = proc.output()
    assert "supervisor escalation / " in out
    assert "to=FATAL reason=supervision tree escalated to the root" in out
