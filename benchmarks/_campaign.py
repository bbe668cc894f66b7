"""The engine of ``fault_campaign.py`` (issue 12, "Proven safe"): a seeded, randomized fault campaign against a
real ``hydrovisor run`` subprocess, judged by the independent safety observer.

What runs where:

- hydrovisor is a SUBPROCESS (``python -m hydrovisor run``: dev mode, embedded PostgreSQL in a temp data dir,
  chaos enabled, ``HYDROVISOR_TIME_SCALE`` = ``scale``, two free ports chosen once so that a restart after
  ``kill -9`` listens where the nodes and the tap reconnect);
- this process runs, on one asyncio loop: ``zones`` two-tank zones, each with its irrig/ph/ec ``SimNode`` sharing
  one ``WaterPhysics``, every node and plant on ONE ``ScaledClock`` of the same scale (node wall time comes from
  the server's time responses, never ``trust_local_clock``); the ``SafetyObserver`` fed by an ``MqttTap``
  (subscribed to ``hydro/#`` of the dev-mode broker) and a ``PlantSampler`` on that clock; one random driver
  per zone, and a global driver for the DB outages and the ``kill -9``.

Each zone's driver (seeded: ``seed`` + zone index) loops: start workflows (``two_tank_startup`` from empty or
partial tanks, then ``irrigation`` / ``correction`` once ``ready``), cancel some, press the emergency stop
(operator HTTP or the node's button) and clear it later, and inject faults at random moments (stuck relay,
no flow, overcurrent, frozen sensor, stale sensor, inconsistent level switches, dropped / delayed / duplicate
/ contradictory replies, node offline mid-stage). An operator's habits are part of the script: a safety lock
(``pump_safety_blocked``) is reset once the fault behind it is gone, and a workflow that ends
``*_stop_not_confirmed`` (DOMAIN §4: failed + alert) makes the operator press the zone's emergency stop until
every stop is confirmed, then clear it. ``observer.mark`` is called for every failure, cancellation,
emergency stop and clearing the campaign learns over HTTP (at the moment it learns it).

Faults that make a stop physically impossible, and how they are judged (nothing is dropped: every violation
is listed; these are counted apart and do not fail the run):

- a welded (stuck) relay (``Faults.stuck_relays``, on ``pump_main``, ``valve_clean_fill`` or
  ``valve_solution_fill``): the node answers the stop ``DONE`` and its snapshot says "off" (it cannot know),
  while the load runs on. No controller can stop it. The campaign expects the product to *notice* what it can:
  a welded ``pump_main`` that runs unwanted for longer than the zone's ``no_flow_window_s`` must raise
  ``biz_pump_stuck_on`` (counted: detected / missed); a welded valve has no current or flow sensor in the sim
  and is known to go unnoticed (counted). A violation whose every running item is a relay welded at that
  moment is "excused: stuck relay". The relay is repaired later (the fault removed and the load released, as
  a technician would) and the operator resets the safety lock.
- an unreachable node (its offline window, or the controller killed / restarting): nothing can reach its
  relays. A ``left_running_after_stop`` or a physical ``pump_on_source_below_min`` is "excused: unreachable"
  only when the zone's irrigation node was unreachable at some moment within the last ``grace_s`` before the
  violation (so the controller had less than ``grace_s`` with the node reachable to act).
- a start the server could not know was inside an emergency stop (the node refuses it ``estop_active``): one
  published within ``CROSSING_REAL_S`` of the node's event (it crossed the event on the wire; the interlock
  verdict on the same command too, as the node's stop had just closed the valves), or one sent while the
  node's event had been discarded by chaos ``node_silence`` and no refusal of an earlier start had reached the
  server ("excused: estop_event_discarded"; the first refusal that reaches it latches the zone).
- a pump start published within ``CROSSING_REAL_S`` of a plant reading that showed its source tank at or above
  its minimum (the switch's change crossed the start on the wire: "excused: crossed_the_level_switch_on_the_wire").
- everything else counts: a command-time rule (a start during a known emergency stop, without a confirmed
  stop, without a pump path, from a tank known dry, a dose without flags) is never excused, and neither is anything
  left running while the node was reachable (a DB outage included: the controller was alive and connected).

Stage latency overhead (``LatencyMeter``, from the tap, real milliseconds): for each workflow command, the delay
since the stimulus that let it go: the terminal reply to the workflow's previous command, or, when a wait sat
between the two (after a start that opens a stage, a dose, a sensor-mode activation inside a correction round),
the last stage-ending level switch change / tank event of the zone since that reply (waits ended by their
timer have no stimulus on the wire and are not counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import psutil
from amqtt.client import MQTTClient

from hydrovisor.observer import (
    INTERLOCK_VIOLATION,
    LEFT_RUNNING_AFTER_STOP,
    PUMP_ON_SOURCE_BELOW_MIN,
    START_DURING_ESTOP,
    MqttTap,
    PlantSampler,
    SafetyObserver,
    Violation,
    ZoneLimits,
)
from hydrovisor.observer.rules import PUMP_PATHS
from hydrovisor.sim import Faults, FieldConfig, NodeOptions, PlantOptions, SimNode, WaterPhysics
from hydrovisor.sim.nodeconfig import channel_wire
from hydrovisor.sim.profiles import profile_for
from hydrovisor.zones.clock import ScaledClock

__all__ = ["Campaign", "CampaignConfig", "CampaignReport", "LatencyMeter"]

log = logging.getLogger("campaign")

SECRET = "campaign-node-secret-0123456789"
GREENHOUSE = "gh-campaign"
NODE_TYPES = ("irrig", "ph", "ec")
CHANNEL_FIELDS = ("name", "type", "metric", "unit", "actuator_type", "relay_type", "safe_limits", "ml_per_second")
TERMINAL = frozenset({"completed", "failed", "cancelled"})
STUCK_CHANNELS = ("pump_main", "pump_main", "pump_main", "valve_clean_fill", "valve_solution_fill")
LEVEL_SWITCHES = ("level_clean_min", "level_clean_max", "level_solution_min", "level_solution_max")
FAULT_KINDS = ("stuck_relay", "no_flow", "overcurrent", "frozen_sensor", "stale_sensor", "inconsistent_switches",
               "drop_reply", "delay_reply", "duplicate_reply", "contradictory_reply", "node_offline")
GLOBAL_FAULTS = ("db_outage", "kill9_restart")
NO_FLOW_WINDOW_S = 60  # the zone's safety.no_flow_window_s (the default), zone seconds
EXCUSED_STUCK = "stuck_relay"
EXCUSED_UNREACHABLE = "unreachable"
EXCUSED_CROSSED = "crossed_the_estop_on_the_wire"
EXCUSED_ESTOP_UNHEARD = "estop_event_discarded"
EXCUSED_LEVEL_CROSSED = "crossed_the_level_switch_on_the_wire"
CROSSING_REAL_S = 0.05
"""A start published this soon (real seconds) after the node's emergency-stop event was decided before the
event could reach the zone (the embedded broker hands it to the server in about a millisecond; the zone's
latch is a few actor hops behind): no controller closes that window; the node refuses such a start. The same
window for a pump start published while its source tank crossed its minimum: a plant reading at or above the
minimum this soon before the start means the switch's change could not have reached the zone's gate."""
_ESTOP_SINCE = re.compile(r"during the emergency stop of (-?[\d.]+)")
_WF_CMD = re.compile(r"^(wf-[0-9a-f]+)-(\d+)$")
_WF_ID = re.compile(r"wf-[0-9a-f]{16}")
_LEFT_RUNNING = re.compile(r"after (\w+) at (-?[\d.]+): (.*)$")
_DRY_FOR = re.compile(r"for ([\d.]+) s")
_ABOVE_MIN_AT = re.compile(r"last reading at or above it at (-?[\d.]+)")
_NO_EFFECT_STOP = re.compile(r"(\w+) \([\w-]+: ([^)]*)\)")
DOSING_PUMPS = frozenset({"pump_acid", "pump_base", "pump_a", "pump_b"})
HINT_DOSING_NO_EFFECT = "dosing_pump_no_effect_stop"
HINT_DB_OUTAGE = "db_outage"
HINT_STALE_SNAPSHOT = "wire_confirmed_path"
HINT_SERVER_TIMEOUT = "reply_lost_or_held_in_server"
HINT_UNANSWERED_START = "start_unanswered_unsupervised"
HINT_ADOPTED_CANCEL = "adopted_cancel_without_compensation"


# -- configuration and report ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CampaignConfig:
    """One campaign. Times in real seconds unless named ``*_zone_s``.

    ``minutes``: simulated minutes to cover, summed over zones (the run lasts
    ``minutes * 60 / (zones * scale)`` real seconds, plus the wind-down). ``command_timeout_s``: the server's
    default command timeout (DOMAIN: 30 s of real time, whatever the scale; a test knob patched into the
    subprocess the way the workflow tests monkeypatch it; None keeps the product's 30 s). ``kills`` /
    ``db_outages``: how many (None: about one kill per 150 s and one outage per 60 s of run, at least one each
    when the run is long enough).
    """

    seed: int
    zones: int = 6
    scale: float = 60.0
    minutes: float = 1000.0
    command_timeout_s: float | None = 5.0
    kills: int | None = None
    db_outages: int | None = None
    telemetry_interval_s: float = 0.2
    end_wait_s: float = 240.0
    data_dir: Path | None = None
    keep: bool = False
    server_log_level: str = "WARNING"
    grace_real_s: float = 1.0
    progress: Callable[[str], None] | None = None

    @property
    def run_s(self) -> float:
        """Real seconds of the random phase."""
        return self.minutes * 60.0 / (self.zones * self.scale)

    @property
    def grace_zone_s(self) -> float:
        """The observer's grace (zone seconds): ``grace_real_s`` of real time, at least 30 zone seconds.

        ``ZoneLimits`` asks for >= scale x ~0.5 s: a few real round trips. On a loaded 2-core machine the
        controller's reaction to an event (router -> zone -> workflow -> write-ahead row -> publish) has a real
        p99 of tens to hundreds of ms and spikes near a second; at scale 60 one real second is a zone minute,
        which would flag a time-compression artefact as a dry run. The default (1 real s) is printed with the
        report; the latency section shows the reaction times the grace has to cover."""
        return max(30.0, self.scale * self.grace_real_s)


@dataclass
class WorkflowEnd:
    """One workflow as it ended (or did not)."""

    id: str
    zone: str
    type: str
    status: str
    reason_code: str | None
    message: str | None
    started_real: float | None = None
    ended_real: float | None = None


@dataclass
class Judged:
    """A violation and how the campaign counts it: ``excused`` is None (it counts) or why it was physically
    impossible to prevent (see the module docstring)."""

    violation: Violation
    excused: str | None
    workflow: dict[str, Any] | None = None
    hint: str | None = None  # a counted violation's likely cause (it still counts)


@dataclass
class CampaignReport:
    """What a campaign found; ``ok`` is the verdict (no counted violation, no hanging workflow)."""

    seed: int
    zones: int
    scale: float
    wall_s: float
    run_s: float
    simulated_minutes: float
    faults: Counter[str]
    workflows: list[WorkflowEnd]
    hanging: list[WorkflowEnd]
    judged: list[Judged]
    refusals: Counter[str]
    stuck_pump: Counter[str]
    latency_ms: dict[str, list[float]]
    observer_stats: dict[str, int]
    tap_reconnects: int
    tap_errors: int
    notes: list[str]
    plant_not_stopped: list[str]
    replies: Counter[str] = field(default_factory=Counter)
    evidence_path: Path | None = None

    @property
    def violations(self) -> list[Judged]:
        """The violations that count."""
        return [j for j in self.judged if j.excused is None]

    @property
    def excused(self) -> list[Judged]:
        """The violations the sim made impossible to prevent (counted apart)."""
        return [j for j in self.judged if j.excused is not None]

    @property
    def ok(self) -> bool:
        """No counted violation and no hanging workflow."""
        return not self.violations and not self.hanging

    def outcomes(self) -> Counter[tuple[str, str]]:
        """(type, status) -> count."""
        return Counter((w.type, w.status) for w in self.workflows)

    def reasons(self) -> Counter[tuple[str, str, str]]:
        """(type, status, reason_code) -> count."""
        return Counter((w.type, w.status, w.reason_code or "<none>") for w in self.workflows)


# -- stage latency ---------------------------------------------------------------------------------------


@dataclass
class _WfCommand:
    seq: int
    cmd: str
    state: Any
    published: float
    terminal_at: float | None = None
    status: str | None = None


_ENDING_EVENTS = frozenset({
    "clean_fill_completed", "solution_fill_completed", "solution_fill_source_empty", "solution_fill_leak_detected",
    "solution_fill_timeout", "irrigation_solution_low", "recirculation_solution_low", "emergency_stop_activated"})


class LatencyMeter:
    """Workflow stage latency from the wire (see the module docstring): ``reply`` samples (terminal reply to
    the next command) and ``event`` samples (stage-ending stimulus to the next command), real seconds."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last: dict[str, _WfCommand] = {}  # workflow id -> its latest command
        self._by_cmd: dict[str, _WfCommand] = {}
        self._stimuli: dict[str, list[tuple[float, str]]] = {}  # zone -> recent stage-ending stimuli
        self._switches: dict[tuple[str, str], bool] = {}
        # (kind "reply"|"event", zone, from, to (real s), the command, what it answered)
        self.samples: list[tuple[str, str, float, float, str, str]] = []
        self.replies: Counter[str] = Counter()  # terminal replies by status (and error code)
        self.expired_at: list[float] = []  # real times of ERROR timestamp_expired replies

    def feed(self, topic: str, payload: bytes) -> None:
        """One publish seen by the tap (never raises)."""
        with contextlib.suppress(Exception):
            self._feed(topic, payload, self._clock())

    def wire(self, cmd_id: str) -> dict[str, Any] | None:
        """What the tap saw of workflow command ``cmd_id``: publish and first terminal (real time), status."""
        record = self._by_cmd.get(cmd_id)
        if record is None:
            return None
        return {"published": round(record.published, 3),
                "terminal_after_ms": None if record.terminal_at is None else round(
                    (record.terminal_at - record.published) * 1000, 1), "wire_status": record.status}

    def _feed(self, topic: str, payload: bytes, now: float) -> None:
        parts = topic.split("/")
        if parts[0] != "hydro" or len(parts) != 6:
            return
        zone, channel, kind = parts[2], parts[4], parts[5]
        if kind == "command":
            body = json.loads(payload)
            self._command(zone, body, now)
        elif kind == "command_response":
            body = json.loads(payload)
            record = self._by_cmd.get(str(body.get("cmd_id")))
            status = body.get("status")
            if status not in (None, "ACK"):
                code = body.get("error_code") or (body.get("details") or {}).get("error_code")
                self.replies[f"{status} {code}" if code else str(status)] += 1
                if code == "timestamp_expired":
                    self.expired_at.append(now)
            if record is not None and record.terminal_at is None and status not in (None, "ACK"):
                record.terminal_at, record.status = now, str(status)
        elif kind == "event":
            body = json.loads(payload)
            code = body.get("event_code")
            if code in _ENDING_EVENTS:
                self._stimulus(zone, now, str(code))
            elif code == "level_switch_changed":
                self._switch(zone, str(body.get("channel") or channel), body.get("state"), now)
        elif kind == "telemetry" and channel in LEVEL_SWITCHES:
            body = json.loads(payload)
            self._switch(zone, channel, body.get("value"), now)

    def _switch(self, zone: str, channel: str, value: Any, now: float) -> None:
        if isinstance(value, bool):
            state = value
        elif isinstance(value, int | float):
            state = value >= 0.5
        else:
            return
        before = self._switches.get((zone, channel))
        self._switches[(zone, channel)] = state
        if before is None or before == state:
            return
        # what ends a wait: a max switch going wet (a fill is over), a min switch going dry (a source ran low)
        if (channel.endswith("_max") and state) or (channel.endswith("_min") and not state):
            self._stimulus(zone, now, f"{channel}={int(state)}")

    def _stimulus(self, zone: str, now: float, what: str) -> None:
        stimuli = self._stimuli.setdefault(zone, [])
        stimuli.append((now, what))
        if len(stimuli) > 64:
            del stimuli[:32]

    def _command(self, zone: str, body: dict[str, Any], now: float) -> None:
        match = _WF_CMD.match(str(body.get("cmd_id")))
        if match is None:
            return
        wf_id, seq = match.group(1), int(match.group(2))
        raw = body.get("params")
        params: dict[str, Any] = raw if isinstance(raw, dict) else {}
        record = _WfCommand(seq=seq, cmd=str(body.get("cmd")), state=params.get("state"), published=now)
        if str(body.get("cmd_id")) in self._by_cmd:
            return  # a republished command: measured once
        self._by_cmd[str(body.get("cmd_id"))] = record
        prev = self._last.get(wf_id)
        self._last[wf_id] = record
        if prev is None or prev.seq != seq - 1 or prev.terminal_at is None or prev.terminal_at > now:
            return  # the first command (an HTTP start), a gap, or no reply seen: nothing to measure from
        if len(self._by_cmd) > 200_000:
            self._by_cmd.clear()
        cmd_id = str(body.get("cmd_id"))
        if not _wait_between(prev, record):
            self.samples.append(("reply", zone, prev.terminal_at, now, cmd_id, f"{prev.cmd} {prev.status}"))
            return
        stimuli = [(t, what) for t, what in self._stimuli.get(zone, ()) if prev.terminal_at <= t <= now]
        if stimuli:
            self.samples.append(("event", zone, stimuli[-1][0], now, cmd_id, stimuli[-1][1]))


def _adopted_without_compensation(record: dict[str, Any]) -> str | None:
    """``HINT_ADOPTED_CANCEL`` when ``record`` ended cancelled / emergency_stop with its last command unanswered and
    nothing sent after it (a compensation that never ran in the incarnation that ended it)."""
    commands = record.get("commands", [])
    if record.get("reason_code") not in ("cancelled", "emergency_stop") or not commands:
        return None
    return HINT_ADOPTED_CANCEL if commands[-1].get("status") is None else None


def _path_confirmed_before(record: dict[str, Any], cmd_id: str | None) -> bool:
    """Whether ``record``'s commands opened a full pump path (``set_relay`` 1 answered DONE, no later DONE stop)
    before command ``cmd_id``."""
    open_valves: set[str] = set()
    for command in record.get("commands", []):
        if command.get("cmd_id") == cmd_id:
            return any(needed <= open_valves for needed in PUMP_PATHS.values())
        if command.get("cmd") == "set_relay" and command.get("status") == "DONE":
            state = (command.get("params") or {}).get("state")
            if state in (1, True):
                open_valves.add(str(command.get("role")))
            elif state in (0, False):
                open_valves.discard(str(command.get("role")))
    return False


def _is_start(record: _WfCommand) -> bool:
    return record.cmd == "set_relay" and record.state in (1, True, "on")


def _wait_between(prev: _WfCommand, nxt: _WfCommand) -> bool:
    """Whether a workflow script may wait (a condition, a timer) between ``prev``'s reply and ``nxt``."""
    if _is_start(nxt):
        return False  # starts follow each other (valves, then the pump) or a probe / sensor mode at once
    if prev.cmd == "dose":
        return True  # the cooldown and the next observation window
    if prev.cmd == "activate_sensor_mode":
        return True  # inside a correction round (missing flags): the next window
    return _is_start(prev) and prev.status == "DONE"  # a stage opened: it waits for its end


class _TimedObserver(SafetyObserver):
    """The observer, with the latency meter fed from the same tap (it judges nothing itself)."""

    def __init__(self, meter: LatencyMeter) -> None:
        super().__init__()
        self.meter = meter

    def observe(self, topic: str, payload: bytes, at: float) -> None:
        self.meter.feed(topic, payload)
        super().observe(topic, payload, at)


# -- the server subprocess ---------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


_PATCHED_RUN = ("import sys, hydrovisor.commands.plane as plane; plane.DEFAULT_TIMEOUT_S = float(sys.argv[1]); "
                "from hydrovisor.cli import main; main(sys.argv[2:])")


class Server:
    """``hydrovisor run`` as a subprocess on fixed ports and one data dir (so a restart is the same instance)."""

    def __init__(self, data_dir: Path, scale: float, command_timeout_s: float | None, log_level: str) -> None:
        self.data_dir = data_dir
        self.http_port, self.mqtt_port = free_port(), free_port()
        while self.mqtt_port == self.http_port:
            self.mqtt_port = free_port()
        self.base_url = f"http://127.0.0.1:{self.http_port}"
        self.mqtt_url = f"mqtt://127.0.0.1:{self.mqtt_port}"
        self.log_path = data_dir.parent / f"{data_dir.name}-server.log"
        self._scale = scale
        self._command_timeout_s = command_timeout_s
        self._log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.cpu_s = 0.0  # CPU seconds of the server processes that are gone (killed)

    def spawn(self) -> None:
        """Start the process (returns at once; see ``Campaign._wait_ready``)."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("HYDROVISOR_") or k == "HYDROVISOR_STRICT_BLOCKING"}
        env.update(HYDROVISOR_DATA_DIR=str(self.data_dir), HYDROVISOR_HTTP_HOST="127.0.0.1",
                   HYDROVISOR_HTTP_PORT=str(self.http_port), HYDROVISOR_MQTT_HOST="127.0.0.1",
                   HYDROVISOR_MQTT_PORT=str(self.mqtt_port), HYDROVISOR_DEV_MODE="1",
                   HYDROVISOR_CHAOS_ENABLED="1", HYDROVISOR_TIME_SCALE=f"{self._scale:g}",
                   HYDROVISOR_LOG_LEVEL=self._log_level)
        if self._command_timeout_s is None:
            argv = [sys.executable, "-m", "hydrovisor", "run"]
        else:
            argv = [sys.executable, "-c", _PATCHED_RUN, f"{self._command_timeout_s:g}", "run"]
        self.starts += 1
        with open(self.log_path, "ab") as out:
            out.write(f"\n===== start #{self.starts} at {time.strftime('%H:%M:%S')} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)

    @property
    def alive(self) -> bool:
        """The process runs."""
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        """``kill -9`` (the embedded PostgreSQL outlives it; the next start adopts it)."""
        if self.proc is not None and self.proc.poll() is None:
            self.cpu_s += self.cpu_now()
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def scan_log(self) -> dict[str, int]:
        """Counts of a few server warnings: a reply lost or held inside the server, a stop sent without its row."""
        patterns = {"reply not stored within 10 s": "not stored within",
                    "stop published without its row": "without its row (",
                    "reply to a stopping command actor": "messages unhandled: {'DeviceReply'",
                    "reply: actor stopped before storing it": "actor stopped before storing it"}
        counts = dict.fromkeys(patterns, 0)
        with contextlib.suppress(OSError), open(self.log_path, errors="replace") as log_file:
            for line in log_file:
                for what, needle in patterns.items():
                    if needle in line:
                        counts[what] += 1
        return counts

    def cpu_now(self) -> float:
        """CPU seconds (user + system) of the running server process."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(self.proc.pid).cpu_times()
            return float(times.user + times.system)
        return 0.0

    def postgres_cpu(self) -> float:
        """CPU seconds of the embedded PostgreSQL processes of this data dir."""
        total, needle = 0.0, str(self.data_dir)
        for proc in psutil.process_iter(["name", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                cmdline = proc.info.get("cmdline") or []
                if "postgres" in (proc.info.get("name") or "") and any(needle in part for part in cmdline):
                    for member in (proc, *proc.children(recursive=True)):
                        times = member.cpu_times()
                        total += times.user + times.system
        return total

    def terminate(self, timeout: float = 90.0) -> int | None:
        """SIGTERM and wait (then SIGKILL); returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode

    def reap_postgres(self) -> None:
        """Stop an embedded PostgreSQL left behind (a killed last instance, a failed start)."""
        needle = str(self.data_dir)
        for proc in psutil.process_iter(["name", "cmdline"]):
            with contextlib.suppress(psutil.Error):
                cmdline = proc.info.get("cmdline") or []
                if "postgres" in (proc.info.get("name") or "") and any(needle in part for part in cmdline):
                    proc.send_signal(signal.SIGINT)
                    with contextlib.suppress(psutil.TimeoutExpired):
                        proc.wait(20)
                    if proc.is_running():
                        proc.kill()


class TimeKeeper:
    """Asks the server the time every ``every_s`` real seconds (``hydro/time/request``), so every node resyncs
    from the broadcast answer at a calm moment and right after a restart.

    Why: the nodes sync once per session (as the firmware does) on integer seconds; at scale 60 the command
    window of +-10 zone seconds is 167 real ms, so a sync answered late during a connect storm (or a server that
    restarted on a new scaled timeline: a scaled clock starts from the wall clock at process start, so a
    restart moves zone time back by elapsed x (scale - 1)) would make every command ``timestamp_expired`` for
    the rest of the session. A test-harness measure for compressed time, not a product behaviour.
    """

    def __init__(self, url: str, every_s: float = 5.0) -> None:
        self._url = url
        self._every_s = every_s
        self._client: MQTTClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._poke = asyncio.Event()
        self._fast_until = 0.0
        self.sent = 0

    def start(self) -> None:
        """Run in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="campaign-time-keeper")

    def now(self) -> None:
        """Ask at once."""
        self._poke.set()

    def burst(self, seconds: float) -> None:
        """Ask every 0.25 s for ``seconds`` (a restarted server: its time responder may come up after its broker,
        and a node that reconnected before it kept its old timeline)."""
        self._fast_until = max(self._fast_until, time.monotonic() + seconds)
        self._poke.set()

    async def stop(self) -> None:
        """Stop and disconnect."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._drop()

    async def _drop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.disconnect(), 3.0)

    async def _run(self) -> None:
        while True:
            every = 0.25 if time.monotonic() < self._fast_until else self._every_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), every)
            self._poke.clear()
            try:
                if self._client is None:
                    client = MQTTClient(client_id="campaign-time-keeper",
                                        config={"auto_reconnect": False, "keep_alive": 30, "plugins": {}})
                    await asyncio.wait_for(client.connect(self._url), 5.0)
                    self._client = client
                body = json.dumps({"message_type": "time_request", "uptime": int(time.monotonic())}).encode()
                await asyncio.wait_for(self._client.publish("hydro/time/request", body, qos=1), 5.0)
                self.sent += 1
            except Exception:  # the broker is away (a restart): try again at the next beat
                await self._drop()


# -- one zone ----------------------------------------------------------------------------------------------


def node_uid(zone_uid: str, node_type: str) -> str:
    """``nd-<type>-<12 hex of the zone uid>``."""
    return f"nd-{node_type[:3]}-{hashlib.sha1(zone_uid.encode()).hexdigest()[:12]}"


def hardware_id(uid: str) -> str:
    """``esp32-`` + 12 hex."""
    return "esp32-" + hashlib.sha1(uid.encode()).hexdigest()[:12]


@dataclass
class _Fault:
    kind: str
    node: str
    fields: dict[str, Any]
    until: float  # real time
    detail: str


@dataclass
class _Zone:
    index: int
    uid: str
    rng: random.Random
    physics: WaterPhysics
    nodes: dict[str, SimNode]
    uids: dict[str, str]
    wf_id: str | None = None
    wf_type: str | None = None
    wf_started: float = 0.0
    latched: str | None = None  # "http" | "button" | "operator" (after stop_not_confirmed): who pressed it
    latch_since: float = 0.0
    clear_after: float = 0.0
    estop_task: asyncio.Task[None] | None = None
    faults: list[_Fault] = field(default_factory=list)
    stuck: dict[str, float] = field(default_factory=dict)  # channel -> real time it was welded
    stuck_windows: list[tuple[str, float, float | None]] = field(default_factory=list)  # campaign clock
    unreachable: list[list[float | None]] = field(default_factory=list)  # [from, to] campaign clock
    fault_windows: list[list[float | None]] = field(default_factory=list)  # [from, to] real time, any fault
    silenced: list[tuple[str, float, float]] = field(default_factory=list)  # (node uid, from, to) real time
    history: list[tuple[str, str, float, float]] = field(default_factory=list)  # (kind, node type, from, to) real
    unwanted_since: float | None = None  # a welded pump_main running while commanded off, since (campaign clock)
    unwanted_longest: float = 0.0
    reset_after: float | None = None  # a safety lock to reset (real time), once its cause is gone
    offline_task: asyncio.Task[bool] | None = None
    seen_alerts: dict[int, int] = field(default_factory=dict)
    log: list[tuple[float, str]] = field(default_factory=list)  # (zone clock, what)


# -- the campaign ------------------------------------------------------------------------------------------


class Campaign:
    """See the module docstring: ``report = await Campaign(config).run()``."""

    def __init__(self, config: CampaignConfig) -> None:
        self.cfg = config
        self.rng = random.Random(config.seed)
        self.clock = ScaledClock(config.scale)
        self.meter = LatencyMeter()
        self.observer = _TimedObserver(self.meter)
        self.zones: list[_Zone] = []
        self.faults: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.stuck_pump: Counter[str] = Counter()
        self.ended: dict[str, WorkflowEnd] = {}
        self.started: dict[str, tuple[str, str, float]] = {}  # wf id -> (zone, type, real start)
        self.notes: list[str] = []
        self.server_up = False
        self.stopping = False
        self.tap_reconnects = 0
        self.server_windows: list[list[float | None]] = []  # fault windows (real) for the latency split
        self.db_windows: list[tuple[float, float]] = []  # DB outages (real), recovery included
        self.restart_windows: list[tuple[float, float]] = []  # kill -9 until ready again (real)
        self._t0_zone = 0.0
        self._session: aiohttp.ClientSession | None = None
        self._tap: MqttTap | None = None
        self._time_keeper: TimeKeeper | None = None
        self._sampler: PlantSampler | None = None
        self._tmp: Path | None = None
        self.server: Server | None = None
        self._records: dict[str, Any] = {}
        self._t0_real = time.monotonic()
        self.lost_replies: list[dict[str, Any]] = []
        self._failed = True  # until a report says otherwise (a crashed run keeps its server log too)

    # -- small helpers ------------------------------------------------------------------------------

    def now(self) -> float:
        """Campaign clock (zone seconds): the observer's, the plant's and the nodes' time line."""
        return self.clock.monotonic()

    def _say(self, text: str) -> None:
        if self.cfg.progress is not None:
            self.cfg.progress(text)

    def _note(self, zone: _Zone, what: str) -> None:
        zone.log.append((round(self.now(), 1), what))
        if len(zone.log) > 4000:
            del zone.log[:1000]

    async def http(self, method: str, path: str, body: dict[str, Any] | None = None,
                   timeout: float = 20.0) -> tuple[int, Any]:  # noqa: ASYNC109 - per request, aiohttp's own
        """One request to the server; ``(0, error)`` when it is unreachable."""
        assert self._session is not None and self.server is not None
        try:
            async with self._session.request(method, self.server.base_url + path, json=body,
                                             timeout=aiohttp.ClientTimeout(total=timeout)) as reply:
                text = await reply.text()
                try:
                    return reply.status, json.loads(text)
                except ValueError:
                    return reply.status, text
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return 0, repr(exc)

    # -- run -----------------------------------------------------------------------------------------

    async def run(self) -> CampaignReport:
        """The whole campaign: start, random phase, wind-down, verdict. Always stops what it started."""
        began = time.monotonic()
        self._tmp = Path(tempfile.mkdtemp(prefix="hv-campaign-")) if self.cfg.data_dir is None else self.cfg.data_dir
        self._tmp.mkdir(parents=True, exist_ok=True)
        self.server = Server(self._tmp / "data", self.cfg.scale, self.cfg.command_timeout_s,
                             self.cfg.server_log_level)
        self._session = aiohttp.ClientSession()
        amqtt_log = logging.getLogger("amqtt")
        level = amqtt_log.level
        amqtt_log.setLevel(logging.CRITICAL)  # reconnect storms around a kill -9 are expected, not news
        try:
            return await self._run(began)
        finally:
            await self._shutdown()
            amqtt_log.setLevel(level)

    async def _run(self, began: float) -> CampaignReport:
        assert self.server is not None
        self.server.spawn()
        await self._wait_ready(180.0)
        self._say(f"hydrovisor up (http {self.server.http_port}, mqtt {self.server.mqtt_port}) "
                  f"after {time.monotonic() - began:.1f} s")
        await self._build_zones()
        await self._start_observer()
        for zone in self.zones:
            for node in zone.nodes.values():
                await node.start()
        await self._wait_heard(60.0)
        self._time_keeper = TimeKeeper(self.server.mqtt_url)
        self._time_keeper.start()
        self._time_keeper.now()
        await asyncio.sleep(1.0)  # a first resync in the calm after the connect storm
        self._say(f"{len(self.zones)} zones heard; random phase of {self.cfg.run_s:.0f} s at scale {self.cfg.scale:g}")
        t0_zone, t0_real = self.now(), time.monotonic()
        self._t0_real, self._t0_zone = t0_real, t0_zone
        deadline = t0_real + self.cfg.run_s
        monitor = asyncio.create_task(self._monitor())
        drivers = [asyncio.create_task(self._drive(zone, deadline)) for zone in self.zones]
        chaos = asyncio.create_task(self._global_chaos(t0_real, deadline))
        progress = asyncio.create_task(self._progress(t0_real, deadline))
        await asyncio.gather(*drivers, chaos)
        progress.cancel()
        run_s = time.monotonic() - t0_real
        self._say(f"random phase over after {run_s:.0f} s; winding down")
        hanging = await self._wind_down()
        monitor.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await monitor
        end_zone = self.now()
        assert self._sampler is not None and self._tap is not None
        await self._sampler.stop()
        await self._tap.stop()
        self.observer.check(self.now())
        judged = await self._judge()
        self._records = await self._evidence_records([j for j in judged if j.excused is None])
        await self._lost_replies()
        plant_left = [f"{z.uid}: pumps {sorted(z.physics.pumps)} valves {sorted(z.physics.valves)}"
                      for z in self.zones if z.physics.pumps or z.physics.valves]
        minutes = (end_zone - t0_zone) * len(self.zones) / 60.0
        assert self.server is not None
        own = psutil.Process().cpu_times()
        self.notes.append(f"CPU seconds: campaign process {own.user + own.system:.0f}, hydrovisor "
                          f"{self.server.cpu_s + self.server.cpu_now():.0f}, embedded PostgreSQL (now running) "
                          f"{self.server.postgres_cpu():.0f}; load avg {os.getloadavg()[0]:.2f} "
                          f"({os.cpu_count()} cpus, shared)")
        if self._time_keeper is not None:
            self.notes.append(f"time requests sent by the campaign's time keeper: {self._time_keeper.sent}")
        restarts = self.restart_windows
        log_counts = self.server.scan_log()
        if any(log_counts.values()):
            self.notes.append("server log: " + ", ".join(f"{what}: {n}" for what, n in log_counts.items()))
        expired = self.meter.expired_at
        near = sum(1 for at in expired if any(since <= at <= until + 10.0 for since, until in restarts))
        if expired:
            self.notes.append(f"ERROR timestamp_expired replies: {len(expired)}, {near} of them within 10 s after a "
                              "restart (a scaled clock restarts from the wall clock: zone time jumps back)")
        report = CampaignReport(
            seed=self.cfg.seed, zones=len(self.zones), scale=self.cfg.scale, wall_s=time.monotonic() - began,
            run_s=run_s, simulated_minutes=minutes, faults=self.faults,
            workflows=sorted(self.ended.values(), key=lambda w: (w.zone, w.started_real or 0.0)), hanging=hanging,
            judged=judged, refusals=self.refusals, stuck_pump=self.stuck_pump,
            latency_ms=self._latency(), observer_stats=self.observer.stats(), tap_reconnects=self.tap_reconnects,
            tap_errors=self._tap.errors, notes=self.notes, plant_not_stopped=plant_left, replies=self.meter.replies)
        report.evidence_path = self._write_evidence(report)
        self._failed = not report.ok
        return report

    async def _shutdown(self) -> None:
        for task in [z.estop_task for z in self.zones] + [z.offline_task for z in self.zones]:
            if task is not None and not task.done():
                task.cancel()
        if self._sampler is not None:
            with contextlib.suppress(Exception):
                await self._sampler.stop()
        if self._tap is not None:
            await self._tap.stop()
        if self._time_keeper is not None:
            await self._time_keeper.stop()
        for zone in self.zones:
            for node in zone.nodes.values():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(node.stop(), 15)
        if self._session is not None:
            await self._session.close()
        if self.server is not None:
            code = await asyncio.to_thread(self.server.terminate)
            if code not in (0, None):
                self.notes.append(f"hydrovisor exited with {code} on SIGTERM (see {self.server.log_path})")
            await asyncio.to_thread(self.server.reap_postgres)
        if self._tmp is not None and not self.cfg.keep and self.cfg.data_dir is None:
            if self.server is not None and self._failed and self.server.log_path.exists():
                kept = Path(tempfile.gettempdir()) / f"hv-campaign-{self.cfg.seed}-server.log"
                with contextlib.suppress(OSError):
                    shutil.copyfile(self.server.log_path, kept)
            shutil.rmtree(self._tmp, ignore_errors=True)

    async def _wait_ready(self, within: float) -> None:
        assert self.server is not None
        deadline = time.monotonic() + within
        while True:
            if not self.server.alive:
                raise RuntimeError(f"hydrovisor exited ({self.server.proc.returncode if self.server.proc else '?'}); "
                                   f"see {self.server.log_path}")
            status, _ = await self.http("GET", "/health/ready", timeout=2.0)
            if status == 200:
                self.server_up = True
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"hydrovisor not ready after {within:.0f} s; see {self.server.log_path}")
            await asyncio.sleep(0.05)

    # -- setup ---------------------------------------------------------------------------------------

    def _settings(self) -> dict[str, Any]:
        per_sample = self.cfg.telemetry_interval_s * self.cfg.scale  # zone seconds between two readings
        window = int(max(20, math.ceil(per_sample * 4)))
        return {
            "correction": {"window_s": window, "min_samples": 3, "cooldown_s": window,
                           "stale_s": int(min(300, max(60, window * 3)))},
            "timeouts": {"clean_fill_s": 600, "solution_fill_s": 600, "prepare_recirculation_s": 900,
                         "irrigation_s": 600},
        }

    async def _build_zones(self) -> None:
        assert self.server is not None
        status, body = await self.http("POST", "/api/v1/greenhouses", {"uid": GREENHOUSE, "name": "campaign"})
        if status not in (201, 409):
            raise RuntimeError(f"greenhouse: {status} {body}")
        for index in range(self.cfg.zones):
            uid = f"zn-c{index + 1}"
            rng = random.Random(self.cfg.seed * 1000 + index)
            empty = rng.random() < 0.5
            plant = PlantOptions(clean_capacity_l=60.0, solution_capacity_l=30.0, mains_fill_lpm=30.0,
                                 pump_flow_lpm=30.0, clean_start_pct=0.0 if empty else rng.uniform(0, 80),
                                 solution_start_pct=0.0 if empty else rng.uniform(0, 80))
            physics = WaterPhysics(rng.randrange(2**32), clock=self.clock, plant=plant)
            status, body = await self.http("POST", "/api/v1/zones", {
                "greenhouse_uid": GREENHOUSE, "uid": uid, "name": uid, "settings": self._settings()})
            if status != 201:
                raise RuntimeError(f"zone {uid}: {status} {body}")
            uids = {t: node_uid(uid, t) for t in NODE_TYPES}
            nodes: dict[str, SimNode] = {}
            options = NodeOptions(plant=plant, heartbeat_interval_s=1.0, reconnect_delay_s=0.2, plant_tick_s=0.05,
                                  telemetry_interval_s=self.cfg.telemetry_interval_s)
            for node_type, n_uid in uids.items():
                channels = [{k: v for k, v in channel_wire(c).items() if k in CHANNEL_FIELDS and v is not None}
                            for c in profile_for(node_type).channels]
                status, body = await self.http("POST", "/api/v1/nodes", {
                    "uid": n_uid, "hardware_id": hardware_id(n_uid), "type": node_type, "zone_uid": uid,
                    "node_secret": SECRET, "channels": channels})
                if status != 201:
                    raise RuntimeError(f"node {n_uid}: {status} {body}")
                nodes[node_type] = SimNode(
                    self.server.mqtt_url, hardware_id(n_uid), node_type, options=options, seed=rng.randrange(2**32),
                    clock=self.clock, physics=physics,
                    field_config=FieldConfig(gh_uid=GREENHOUSE, zone_uid=uid, node_uid=n_uid, node_secret=SECRET))
            self.zones.append(_Zone(index=index, uid=uid, rng=rng, physics=physics, nodes=nodes, uids=uids))
            self.observer.configure_zone(uid, ZoneLimits(grace_s=self.cfg.grace_zone_s))

    async def _start_observer(self) -> None:
        assert self.server is not None
        self._sampler = PlantSampler(self.observer, {z.uid: z.physics for z in self.zones}, self.now,
                                     interval_s=0.05)
        self._tap = MqttTap(self.observer, self.server.mqtt_url, self.now, client_id="campaign-observer",
                            before_command=self._sampler.sample_now)
        await self._tap.start()
        self._sampler.start()

    async def _wait_heard(self, within: float) -> None:
        deadline = time.monotonic() + within
        waiting = {z.uid: z for z in self.zones}
        while waiting:
            for uid, zone in list(waiting.items()):
                status, body = await self.http("GET", f"/api/v1/zones/{uid}/state")
                if status == 200:
                    state = body["data"]["state"]
                    online = all(state["nodes_online"].get(u) for u in zone.uids.values())
                    if online and all(s in state["levels"] for s in ("level_clean_min", "level_solution_min")):
                        del waiting[uid]
            if time.monotonic() > deadline:
                raise RuntimeError(f"zones not hearing their nodes after {within:.0f} s: {sorted(waiting)}")
            await asyncio.sleep(0.1)

    # -- background ----------------------------------------------------------------------------------

    async def _monitor(self) -> None:
        """Reachability of each zone's irrigation node (connected to a live server), for the judgement; and the
        tap, reconnected whenever the broker comes back."""
        while True:
            at = self.now()
            for zone in self.zones:
                physics = zone.physics
                if "pump_main" in zone.stuck and "pump_main" in physics.pumps and "pump_main" not in physics.commanded:
                    if zone.unwanted_since is None:
                        zone.unwanted_since = at
                    zone.unwanted_longest = max(zone.unwanted_longest, at - zone.unwanted_since)
                else:
                    zone.unwanted_since = None
                reachable = self.server_up and zone.nodes["irrig"].is_connected
                open_window = zone.unreachable and zone.unreachable[-1][1] is None
                if not reachable and not open_window:
                    zone.unreachable.append([at, None])
                elif reachable and open_window:
                    zone.unreachable[-1][1] = at
            await asyncio.sleep(0.02)

    async def _progress(self, t0: float, deadline: float) -> None:
        while True:
            await asyncio.sleep(30.0)
            done = Counter(w.status for w in self.ended.values())
            self._say(f"  {time.monotonic() - t0:5.0f} s / {deadline - t0:.0f} s: workflows {dict(done)}, "
                      f"faults {sum(self.faults.values())}, violations {len(self.observer.violations)}")

    async def _global_chaos(self, t0: float, deadline: float) -> None:
        length = deadline - t0
        kills = self.cfg.kills if self.cfg.kills is not None else (
            max(1, round(length / 150.0)) if length >= 40 else 0)
        outages = self.cfg.db_outages if self.cfg.db_outages is not None else (
            max(1, round(length / 60.0)) if length >= 20 else 0)
        plan = [(t0 + length * self.rng.uniform(0.15, 0.85), "kill9_restart") for _ in range(kills)]
        plan += [(t0 + length * self.rng.uniform(0.1, 0.9), "db_outage") for _ in range(outages)]
        plan.sort()
        for when, kind in plan:
            await asyncio.sleep(max(0.0, when - time.monotonic()))
            if time.monotonic() >= deadline:
                break
            if kind == "db_outage":
                await self._db_outage()
            else:
                await self._kill_and_restart()

    async def _db_outage(self) -> None:
        duration = round(self.rng.uniform(1.0, 4.0), 2)
        status, body = await self.http("POST", "/admin/chaos/inject", {"type": "db_outage", "duration": duration},
                                       timeout=60.0)
        if status == 202:
            self.faults["db_outage"] += 1
            began = time.monotonic()
            self.server_windows.append([began, began + duration + 2.0])
            self.db_windows.append((began, began + duration + 3.0))
            for zone in self.zones:
                self._note(zone, f"db outage {duration:g} s")
            await asyncio.sleep(duration)
        else:
            self.notes.append(f"db_outage not injected: {status} {str(body)[:200]}")

    async def _kill_and_restart(self) -> None:
        assert self.server is not None and self._tap is not None
        self.server_up = False
        began = time.monotonic()
        await asyncio.to_thread(self.server.kill9)
        self.faults["kill9_restart"] += 1
        for zone in self.zones:
            self._note(zone, "hydrovisor killed (-9)")
        await asyncio.sleep(self.rng.uniform(0.3, 1.5))  # dead for a while: the plant goes on alone
        self.server.spawn()
        # the tap first: it should see what the restarted server does as early as the nodes do
        deadline = time.monotonic() + 180.0
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                await self._tap.stop()
                await self._tap.start()
                self.tap_reconnects += 1
                if self._time_keeper is not None:
                    self._time_keeper.burst(8.0)  # the broker is back: the new timeline, as early as possible
                break
            if not self.server.alive:
                break
            await asyncio.sleep(0.05)
        await self._wait_ready(180.0)
        if self._time_keeper is not None:
            self._time_keeper.burst(5.0)
        self.server_windows.append([began, time.monotonic() + 3.0])
        self.restart_windows.append((began, time.monotonic()))
        for zone in self.zones:
            self._note(zone, f"hydrovisor back after {time.monotonic() - began:.1f} s")
        self._say(f"  kill -9 + restart: back in {time.monotonic() - began:.1f} s")

    # -- one zone's driver ---------------------------------------------------------------------------

    async def _drive(self, zone: _Zone, deadline: float) -> None:
        last = time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(zone.rng.uniform(0.1, 0.4))
            now = time.monotonic()
            dt, last = now - last, now
            try:
                await self._step(zone, now, dt)
            except Exception as exc:  # a campaign bug must not end the run silently
                log.exception("zone %s: driver step failed", zone.uid)
                self.notes.append(f"{zone.uid}: driver step failed: {exc!r}")

    async def _step(self, zone: _Zone, now: float, dt: float) -> None:
        self._expire_faults(zone, now)
        if not self.server_up:
            return
        if zone.wf_id is not None:
            await self._poll_workflow(zone)
        await self._maintain(zone, now)
        roll = zone.rng.random()
        if zone.wf_id is not None:
            if roll < 0.05 * dt:
                await self._cancel(zone)
            elif roll < 0.08 * dt:
                await self._press_estop(zone)
            elif roll < 0.36 * dt:
                await self._inject(zone, now, running=True)
            return
        if zone.latched is not None or zone.estop_task is not None:
            return
        if roll < 0.08 * dt:
            await self._inject(zone, now, running=False)
        elif roll < 1.5 * dt:
            await self._start_something(zone)

    # workflows ---------------------------------------------------------------------------------------

    async def _start_something(self, zone: _Zone) -> None:
        status, body = await self.http("GET", f"/api/v1/zones/{zone.uid}/automation")
        if status != 200:
            return
        water = body["data"]["water_state"]
        roll = zone.rng.random()
        params: dict[str, Any] = {}
        if water != "ready" or roll < 0.15:
            wf_type = "two_tank_startup"
            if zone.rng.random() < 0.3:
                await self._perturb_tanks(zone)
        elif roll < 0.65:
            wf_type, params = "irrigation", {"duration_s": zone.rng.randint(10, 90)}
        else:
            wf_type = "correction"
            if zone.rng.random() < 0.6:
                zone.physics.ph = round(zone.rng.uniform(6.2, 6.9), 2)
                if zone.rng.random() < 0.3:
                    zone.physics.ec = round(zone.rng.uniform(1.1, 1.4), 2)
        status, body = await self.http("POST", f"/api/v1/zones/{zone.uid}/workflows",
                                       {"type": wf_type, "params": params})
        if status == 202:
            zone.wf_id, zone.wf_type, zone.wf_started = body["data"]["id"], wf_type, time.monotonic()
            self.started[zone.wf_id] = (zone.uid, wf_type, zone.wf_started)
            self._note(zone, f"start {wf_type} {params or ''} -> {zone.wf_id}")
            return
        code = body.get("code", "?") if isinstance(body, dict) else f"http_{status}"
        reason = body.get("reason_code") if isinstance(body, dict) else None
        self.refusals[f"{wf_type}: {code}" + (f" ({reason})" if reason else "")] += 1
        if code in {"workflow_running", "workflow_already_running"}:
            running = body.get("workflow_id") if isinstance(body, dict) else None
            if isinstance(running, str):  # one we lost track of (e.g. across a restart): follow it
                zone.wf_id, zone.wf_type, zone.wf_started = running, wf_type, time.monotonic()
        if code == "pump_safety_blocked" and isinstance(reason, str) and reason.startswith("safety_lock_") \
                and zone.reset_after is None:
            zone.reset_after = time.monotonic() + zone.rng.uniform(0.5, 2.0)  # inspect, then reset the lock
        if code == "emergency_stop_active" and zone.latched is None:
            zone.latched, zone.latch_since = "unknown", time.monotonic()
            zone.clear_after = time.monotonic() + 0.5

    async def _perturb_tanks(self, zone: _Zone) -> None:
        """Partial tanks: water taken out by hand (only with the plant at rest and nothing welded)."""
        physics = zone.physics
        if physics.pumps or physics.valves or zone.stuck:
            return
        physics.clean_l = physics.plant.clean_capacity_l * zone.rng.uniform(0.0, 0.85)
        physics.solution_l = physics.plant.solution_capacity_l * zone.rng.uniform(0.0, 0.85)
        physics.refresh()
        self._note(zone, f"tanks set by hand: clean {physics.clean_level_pct:.0f} %, "
                         f"solution {physics.solution_level_pct:.0f} %")

    async def _poll_workflow(self, zone: _Zone) -> None:
        wf_id = zone.wf_id
        assert wf_id is not None
        status, body = await self.http("GET", f"/api/v1/zones/{zone.uid}/workflows/{wf_id}")
        if status != 200:
            return
        record = body["data"]
        if record["status"] in TERMINAL:
            self._ended(zone, record)

    def _ended(self, zone: _Zone, record: dict[str, Any]) -> None:
        wf_id = record["id"]
        if zone.wf_id == wf_id:
            zone.wf_id = zone.wf_type = None
        if wf_id in self.ended:
            return
        at = self.now()
        started = self.started.get(wf_id)
        self.ended[wf_id] = WorkflowEnd(id=wf_id, zone=zone.uid, type=record["type"], status=record["status"],
                                        reason_code=record.get("reason_code"), message=record.get("message"),
                                        started_real=started[2] if started else None, ended_real=time.monotonic())
        self._note(zone, f"{wf_id} {record['status']} {record.get('reason_code')}")
        if record["status"] == "failed":
            self.observer.mark(zone.uid, "workflow_failed", at)
        elif record["status"] == "cancelled":
            self.observer.mark(zone.uid, "workflow_cancelled", at)
        reason = record.get("reason_code") or ""
        if reason.endswith("_stop_not_confirmed") and zone.estop_task is None and not self.stopping:
            # DOMAIN §4: failed + alert; the operator stops the zone until every stop is confirmed
            zone.estop_task = asyncio.create_task(self._operator_estop(zone, "stop not confirmed"))

    async def _cancel(self, zone: _Zone) -> None:
        status, _ = await self.http("POST", f"/api/v1/zones/{zone.uid}/workflows/{zone.wf_id}/cancel")
        self._note(zone, f"cancel {zone.wf_id} -> {status}")
        if status == 202:
            self.faults["operator_cancel"] += 1

    # emergency stops -----------------------------------------------------------------------------------

    async def _press_estop(self, zone: _Zone) -> None:
        if zone.estop_task is not None or zone.latched is not None:
            return
        if zone.rng.random() < 0.5 and zone.nodes["irrig"].is_connected:
            zone.nodes["irrig"].emergency_stop("campaign button")
            zone.latched, zone.latch_since = "button", time.monotonic()
            zone.clear_after = time.monotonic() + zone.rng.uniform(1.0, 3.0)
            self.faults["estop_button"] += 1
            self._note(zone, "emergency stop button pressed")
            zone.estop_task = asyncio.create_task(self._learn_latch(zone))
        else:
            self.faults["estop_http"] += 1
            zone.estop_task = asyncio.create_task(self._operator_estop(zone, "campaign operator", once=True))

    async def _learn_latch(self, zone: _Zone) -> None:
        """After the button: the zone latches on the node's event; the campaign learns it over HTTP."""
        try:
            deadline = time.monotonic() + 30.0
            while time.monotonic() < deadline:
                status, body = await self.http("GET", f"/api/v1/zones/{zone.uid}/automation")
                if status == 200 and body["data"]["estop_active"]:
                    self.observer.mark(zone.uid, "emergency_stop", self.now())
                    self._note(zone, "latch seen over HTTP")
                    return
                await asyncio.sleep(0.1)
            self.notes.append(f"{zone.uid}: the node's emergency stop (button) was not latched by the zone within 30 s "
                              f"(zone time {self.now():.0f})")
        finally:
            zone.estop_task = None

    async def _operator_estop(self, zone: _Zone, reason: str, once: bool = False) -> None:
        """``POST .../emergency-stop`` until every stop is confirmed (at most ~2 min)."""
        try:
            zone.latched = zone.latched or "operator"
            zone.latch_since = time.monotonic()
            for attempt in range(40):
                if self.stopping and attempt > 0 and not self.server_up:
                    break
                if not self.server_up:
                    await asyncio.sleep(0.5)
                    continue
                status, body = await self.http("POST", f"/api/v1/zones/{zone.uid}/emergency-stop",
                                               {"reason": reason}, timeout=240.0)
                if status == 202:
                    self.observer.mark(zone.uid, "emergency_stop", self.now())
                    confirmed = bool(body["data"]["all_confirmed"])
                    self._note(zone, f"emergency stop ({reason}) all_confirmed={confirmed}")
                    if confirmed or once:
                        break
                await asyncio.sleep(1.0)
            zone.clear_after = time.monotonic() + zone.rng.uniform(0.5, 2.0)
        finally:
            zone.estop_task = None

    async def _clear_latch(self, zone: _Zone) -> bool:
        if zone.latched == "button" or zone.nodes["irrig"].actions.estop:
            zone.nodes["irrig"].release_emergency_stop()
        status, body = await self.http("POST", f"/api/v1/zones/{zone.uid}/emergency-stop/clear",
                                       {"reason": "campaign: plant checked"})
        code = body.get("code") if isinstance(body, dict) else None
        if status == 200 or code == "emergency_stop_not_active":
            # the operator's clearing is done (button released, latch cleared, or there was none to clear: the
            # zone never latched a pressed button whose event it did not receive): from now on starts are legit
            self.observer.mark(zone.uid, "estop_cleared", self.now())
            if status != 200 and zone.latched == "button":
                self.faults["estop_button_never_latched"] += 1
            self._note(zone, f"latch cleared ({status})")
            zone.latched = None
            return True
        return False

    async def _maintain(self, zone: _Zone, now: float) -> None:
        if zone.latched is not None and zone.estop_task is None and zone.wf_id is None and now >= zone.clear_after:
            await self._clear_latch(zone)
        if zone.reset_after is not None and now >= zone.reset_after and not zone.stuck \
                and not any(f.kind in ("no_flow", "overcurrent") for f in zone.faults):
            status, _ = await self.http("POST", f"/api/v1/zones/{zone.uid}/safety/reset",
                                        {"reason": "campaign: inspected"})
            if status == 200:
                zone.reset_after = None
                self._note(zone, "safety lock reset")

    # faults -----------------------------------------------------------------------------------------

    def _apply_faults(self, zone: _Zone, node_type: str) -> None:
        merged: dict[str, Any] = {}
        for fault in zone.faults:
            if fault.node != node_type:
                continue
            for name, value in fault.fields.items():
                if isinstance(value, tuple):
                    merged[name] = tuple(sorted(set(merged.get(name, ())) | set(value)))
                else:
                    merged[name] = max(merged.get(name, 0.0), value)
        merged["stuck_relays"] = tuple(sorted(zone.stuck)) if node_type == "irrig" else ()
        zone.nodes[node_type].set_faults(Faults(**merged))

    async def _inject(self, zone: _Zone, now: float, *, running: bool) -> None:
        kind = zone.rng.choice(FAULT_KINDS)
        active = {f.kind for f in zone.faults}
        if kind in active or (kind == "stuck_relay" and zone.stuck) or \
                (kind == "node_offline" and zone.offline_task is not None and not zone.offline_task.done()):
            return
        rng = zone.rng
        node = "irrig"
        fields: dict[str, Any] = {}
        duration = rng.uniform(1.5, 4.0)
        if kind == "stuck_relay":
            channel = rng.choice(STUCK_CHANNELS)
            zone.stuck[channel] = now
            zone.stuck_windows.append((channel, self.now(), None))
            self._apply_faults(zone, "irrig")
            zone.faults.append(_Fault(kind, "irrig", {}, now + rng.uniform(3.0, 8.0), channel))
            zone.fault_windows.append([now, None])  # closed at the repair
            self.faults[kind] += 1
            self._note(zone, f"fault stuck_relay {channel}")
            return
        if kind == "no_flow":
            fields = {"no_flow": 1.0}
        elif kind == "overcurrent":
            node = rng.choice(("irrig", "irrig", "ph", "ec"))
            fields = {"overcurrent": 1.0}
            duration = rng.uniform(1.0, 3.0)
        elif kind == "frozen_sensor":
            node = rng.choice(NODE_TYPES)
            if node == "irrig":
                fields = {"frozen_sensors": tuple(rng.sample((*LEVEL_SWITCHES, "flow"), rng.randint(1, 2)))}
            else:
                fields = {"frozen_sensors": (f"{node}_sensor",)}
            duration = rng.uniform(2.0, 6.0)
        elif kind == "stale_sensor":
            node = rng.choice(NODE_TYPES)
            duration = rng.uniform(2.0, 7.0)
            status, body = await self.http("POST", "/admin/chaos/inject", {
                "type": "node_silence", "duration": round(duration, 2), "node_uid": zone.uids[node]})
            if status != 202:
                self.notes.append(f"node_silence not injected: {status} {str(body)[:200]}")
                return
            zone.silenced.append((zone.uids[node], now, now + duration))
        elif kind == "inconsistent_switches":
            fields = {"inconsistent_levels": (rng.choice(("clean", "solution")),)}
            duration = rng.uniform(1.0, 4.0)
        elif kind == "drop_reply":
            node = rng.choice(("irrig", "irrig", "ph", "ec"))
            fields = {"drop_reply": rng.choice((0.3, 0.6, 1.0))}
            duration = rng.uniform(1.0, 4.0)
        elif kind == "delay_reply":
            node = rng.choice(NODE_TYPES)
            fields = {"delay_reply_s": round(rng.uniform(0.05, 0.6), 3), "delay_jitter_s": 0.1}
        elif kind == "duplicate_reply":
            node = rng.choice(NODE_TYPES)
            fields = {"duplicate_reply": 0.7}
        elif kind == "contradictory_reply":
            node = rng.choice(NODE_TYPES)
            fields = {"contradictory_terminal": 0.7}
        elif kind == "node_offline":
            node = rng.choice(("irrig", "irrig", "ph", "ec"))
            offline_s = rng.uniform(1.0, 6.0)
            if not zone.nodes[node].is_connected:
                return
            zone.offline_task = asyncio.create_task(zone.nodes[node].go_offline(offline_s))
            zone.fault_windows.append([now, now + offline_s + 1.0])
            zone.history.append((kind, node, now, now + offline_s + 1.0))
            self.faults[kind] += 1
            self._note(zone, f"fault node_offline {node} {offline_s:.1f} s ({'mid-stage' if running else 'idle'})")
            return
        zone.faults.append(_Fault(kind, node, fields, now + duration, json.dumps(fields)))
        zone.fault_windows.append([now, now + duration + 0.5])
        zone.history.append((kind, node, now, now + duration + 0.5))
        if fields:
            self._apply_faults(zone, node)
        self.faults[kind] += 1
        self._note(zone, f"fault {kind} on {node} {fields or ''} for {duration:.1f} s "
                         f"({'mid-stage' if running else 'idle'})")

    def _expire_faults(self, zone: _Zone, now: float, *, everything: bool = False) -> None:
        for fault in [f for f in zone.faults if everything or now >= f.until]:
            zone.faults.remove(fault)
            if fault.kind == "stuck_relay":
                self._repair(zone, fault.detail)
            elif fault.fields:
                self._apply_faults(zone, fault.node)
            self._note(zone, f"fault {fault.kind} on {fault.node} over")

    def _repair(self, zone: _Zone, channel: str) -> None:
        """The technician replaces the welded relay: the fault goes, the load follows what the node commands."""
        welded_at = zone.stuck.pop(channel, None)
        physics = zone.physics
        ran_unwanted = (channel in physics.pumps or channel in physics.valves) and channel not in physics.commanded
        unwanted_s, zone.unwanted_longest, zone.unwanted_since = zone.unwanted_longest, 0.0, None
        if channel in physics.pumps and channel not in physics.commanded:
            physics.pumps.pop(channel, None)
        if channel in physics.valves and channel not in physics.commanded:
            physics.valves.discard(channel)
        self._apply_faults(zone, "irrig")
        physics.refresh()
        for window in zone.fault_windows:
            if window[1] is None:
                window[1] = time.monotonic() + 0.5
        for i, (name, since, until) in enumerate(zone.stuck_windows):
            if name == channel and until is None:
                zone.stuck_windows[i] = (name, since, self.now())
        if welded_at is not None:
            asyncio.get_running_loop().create_task(self._stuck_verdict(zone, channel, ran_unwanted, unwanted_s))
        zone.reset_after = time.monotonic() + zone.rng.uniform(0.3, 1.0)  # and reset the lock it may have raised

    async def _stuck_verdict(self, zone: _Zone, channel: str, ran_unwanted: bool, unwanted_s: float) -> None:
        """Did the product notice the weld? (Only a running ``pump_main`` is detectable: by its current, once it
        ran against a stop for the zone's ``no_flow_window_s`` plus a few readings.) The zone's
        ``biz_pump_stuck_on`` alerts are read at every repair, so an alert is credited to one weld only."""
        status, body = await self.http("GET", f"/api/v1/alerts?zone_uid={zone.uid}&limit=500")
        found = False
        if status == 200:
            for alert in body["data"]:
                if alert["code"] == "biz_pump_stuck_on":
                    found = found or zone.seen_alerts.get(alert["id"]) != alert["count"]
                    zone.seen_alerts[alert["id"]] = alert["count"]
        if not ran_unwanted and unwanted_s == 0.0:
            self.stuck_pump[f"{channel}: never ran against a stop"] += 1
            return
        if channel != "pump_main":
            self.stuck_pump[f"{channel}: welded open, undetectable (no sensor)"] += 1
            return
        detectable_after = NO_FLOW_WINDOW_S + 3 * self.cfg.telemetry_interval_s * self.cfg.scale + self.cfg.grace_zone_s
        if status != 200:
            self.stuck_pump["pump_main: alerts unreadable"] += 1
        elif unwanted_s < detectable_after:
            self.stuck_pump[f"pump_main: ran against a stop < {detectable_after:.0f} zone s (too short to judge)"] += 1
        elif found:
            self.stuck_pump["pump_main: ran against a stop long enough, biz_pump_stuck_on raised"] += 1
        else:
            self.stuck_pump["pump_main: ran against a stop long enough, NO new biz_pump_stuck_on"] += 1
            self.notes.append(f"{zone.uid}: welded pump_main ran {unwanted_s:.0f} zone s against a stop without a "
                              "new biz_pump_stuck_on alert")

    # -- wind-down and verdict ----------------------------------------------------------------------------

    async def _wind_down(self) -> list[WorkflowEnd]:
        """No new action; every fault removed, relays repaired, buttons released, then every workflow must
        end (up to ``end_wait_s``); latches cleared, locks reset. Returns the workflows still running."""
        self.stopping = True
        for zone in self.zones:
            self._expire_faults(zone, time.monotonic(), everything=True)
        if not self.server_up:
            await self._wait_ready(180.0)
        deadline = time.monotonic() + self.cfg.end_wait_s
        running: dict[str, _Zone] = {}
        while time.monotonic() < deadline:
            running = {}
            for zone in self.zones:
                status, body = await self.http("GET", f"/api/v1/zones/{zone.uid}/workflows?status=running")
                if status != 200:
                    running[f"?{zone.uid}"] = zone
                    continue
                for record in body["data"]:
                    running[record["id"]] = zone
                if zone.wf_id is not None and zone.wf_id not in running:
                    await self._poll_workflow(zone)
            if not running and all(z.estop_task is None for z in self.zones):
                break
            await asyncio.sleep(0.25)
        # the outcomes as stored (the authority), including workflows adopted after a restart
        for zone in self.zones:
            status, body = await self.http("GET", f"/api/v1/zones/{zone.uid}/workflows?limit=1000")
            if status == 200:
                for record in body["data"]:
                    if record["status"] in TERMINAL and record["id"] not in self.ended:
                        self._ended(zone, record)
                if len(body["data"]) >= 1000:
                    self.notes.append(f"{zone.uid}: more than 1000 workflows; older ones counted from polling only")
        hanging: list[WorkflowEnd] = []
        for wf_id, zone in running.items():
            if wf_id.startswith("?"):
                self.notes.append(f"{zone.uid}: workflows unreadable at the end")
                continue
            status, body = await self.http("GET", f"/api/v1/zones/{zone.uid}/workflows/{wf_id}")
            record = body["data"] if status == 200 else {}
            hanging.append(WorkflowEnd(id=wf_id, zone=zone.uid, type=record.get("type", "?"),
                                       status=record.get("status", "?"), reason_code=record.get("reason_code"),
                                       message=json.dumps(record)[:4000]))
        for zone in self.zones:
            if zone.latched is not None or zone.nodes["irrig"].actions.estop:
                await self._clear_latch(zone)
            await self.http("POST", f"/api/v1/zones/{zone.uid}/safety/reset", {"reason": "campaign: end"})
        await asyncio.sleep(max(1.0, self.cfg.grace_zone_s / self.cfg.scale * 2))
        return hanging

    def _unreachable_within(self, zone: _Zone, start: float, end: float) -> bool:
        return any(since <= end and (until is None or until >= start) for since, until in zone.unreachable
                   if since is not None)

    def _stuck_at(self, zone: _Zone, channel: str, at: float) -> bool:
        return any(name == channel and since <= at and (until is None or until >= at)
                   for name, since, until in zone.stuck_windows)

    def _estop_excuses(self) -> dict[str, str]:
        """Per cmd_id, why a start during an emergency stop could not have been known as one by the server:
        it crossed the node's event on the wire (``CROSSING_REAL_S``), or the event reached the server while
        chaos ``node_silence`` discarded what the node sent, and no refusal (``estop_active``) of an earlier start
        in the same stop had reached it either (the first refusal that gets through latches the zone: every
        later start counts)."""
        excuses: dict[str, str] = {}
        taught: set[tuple[str, str]] = set()
        for violation in sorted(self.observer.violations, key=lambda v: v.at):
            zone = next((z for z in self.zones if z.uid == violation.zone_uid), None)
            match = _ESTOP_SINCE.search(violation.detail)
            if violation.rule != START_DURING_ESTOP or zone is None or match is None or violation.cmd_id is None:
                continue
            since = match.group(1)
            if (violation.at - float(since)) / self.cfg.scale <= CROSSING_REAL_S:
                excuses[violation.cmd_id] = EXCUSED_CROSSED
                continue
            if (zone.uid, since) in taught or not self._silenced_at(zone, float(since)):
                continue
            excuses[violation.cmd_id] = EXCUSED_ESTOP_UNHEARD
            if not self._silenced_at(zone, violation.at):
                taught.add((zone.uid, since))  # its refusal reached the server
        return excuses

    def _silenced_at(self, zone: _Zone, at: float) -> bool:
        """The zone's irrigation node was silenced (chaos) at zone time ``at``."""
        real = self._t0_real + (at - self._t0_zone) / self.cfg.scale
        return any(uid == zone.uids["irrig"] and since <= real <= until for uid, since, until in zone.silenced)

    def _excuse(self, violation: Violation, estop_excuses: dict[str, str]) -> str | None:
        zone = next((z for z in self.zones if z.uid == violation.zone_uid), None)
        if zone is None:
            return None
        if violation.rule in (START_DURING_ESTOP, INTERLOCK_VIOLATION) and violation.cmd_id is not None:
            # an interlock verdict on such a start saw the valves the node's own stop had just closed
            return estop_excuses.get(violation.cmd_id)
        grace = self.cfg.grace_zone_s
        if violation.rule == LEFT_RUNNING_AFTER_STOP:
            match = _LEFT_RUNNING.search(violation.detail)
            if match is None:
                return None
            items = [item.split(" ", 1)[1] for item in match.group(3).split(", ") if " " in item]
            if items and all(self._stuck_at(zone, item, violation.at) for item in items):
                return EXCUSED_STUCK
            if self._unreachable_within(zone, violation.at - grace, violation.at):
                return EXCUSED_UNREACHABLE
            return None
        above = _ABOVE_MIN_AT.search(violation.detail)
        if violation.rule == PUMP_ON_SOURCE_BELOW_MIN and violation.cmd_id is not None and above is not None and (
                violation.at - float(above.group(1))) / self.cfg.scale <= CROSSING_REAL_S:
            return EXCUSED_LEVEL_CROSSED
        if violation.rule == PUMP_ON_SOURCE_BELOW_MIN and violation.cmd_id is None:  # the physical check
            if self._stuck_at(zone, "pump_main", violation.at):
                return EXCUSED_STUCK
            if self._unreachable_within(zone, violation.at - grace, violation.at):
                return EXCUSED_UNREACHABLE
        return None

    def _hint(self, violation: Violation) -> str | None:
        """A counted violation's likely cause, from what the campaign did (printed; the violation counts)."""
        if violation.rule == "start_without_confirmed_stop":
            listed = _NO_EFFECT_STOP.findall(violation.detail.split("confirmed DONE:", 1)[-1])
            if listed and all(channel in DOSING_PUMPS for channel, _ in listed) and \
                    any(status == "NO_EFFECT" for _, status in listed):
                return HINT_DOSING_NO_EFFECT
            return None
        if violation.rule not in (LEFT_RUNNING_AFTER_STOP, PUMP_ON_SOURCE_BELOW_MIN) or violation.cmd_id is not None:
            return None
        span = self.cfg.grace_zone_s
        dry = _DRY_FOR.search(violation.detail)
        if violation.rule == PUMP_ON_SOURCE_BELOW_MIN and dry is not None:
            span = float(dry.group(1))
        def real(at: float) -> float:
            return self._t0_real + (at - self._t0_zone) / self.cfg.scale
        start, end = real(violation.at - span), real(violation.at)
        if any(since <= end and until >= start for since, until in self.db_windows):
            return HINT_DB_OUTAGE
        return None

    async def _judge(self) -> list[Judged]:
        judged: list[Judged] = []
        estop_excuses = self._estop_excuses()
        for violation in self.observer.violations:
            excused = self._excuse(violation, estop_excuses)
            judged.append(Judged(violation=violation, excused=excused,
                                 hint=self._hint(violation) if excused is None else None))
        per_group: Counter[tuple[str, str | None]] = Counter()
        for item in judged:  # evidence: the workflow behind up to 8 counted violations of each kind (every
            if item.excused is not None:  # unexplained one: its record may explain it)
                continue
            group = (item.violation.rule, item.hint)
            if per_group[group] >= 8 and item.hint is not None:
                continue
            per_group[group] += 1
            item.workflow = await self._workflow_behind(item.violation)
            if item.hint is not None or item.workflow is None:
                continue
            if item.violation.rule == "interlock_violation" and _path_confirmed_before(
                    item.workflow, item.violation.cmd_id):
                item.hint = HINT_STALE_SNAPSHOT
            elif item.violation.rule in (LEFT_RUNNING_AFTER_STOP, PUMP_ON_SOURCE_BELOW_MIN):
                item.hint = self._timeout_hint(item.workflow) or _adopted_without_compensation(item.workflow)
        return judged

    def _timeout_hint(self, record: dict[str, Any]) -> str | None:
        """Why ``record`` has commands the server stored TIMEOUT: ``HINT_SERVER_TIMEOUT`` when one went to a
        node that was connected, not silenced and dropping no replies (its reply was lost or held up inside the
        server); ``HINT_UNANSWERED_START`` when a start's replies were dropped by the node (drop_reply fault)."""
        zone = next((z for z in self.zones if z.uid == record.get("zone_uid")), None)
        if zone is None:
            return None
        types = {uid: node_type for node_type, uid in zone.uids.items()}
        timeout_s = self.cfg.command_timeout_s or 30.0
        dropped_start = False
        for command in record.get("commands", []):
            wire = command.get("wire") or {}
            if command.get("status") != "TIMEOUT" or "published" not in wire:
                continue
            sent = self._t0_real + float(wire["published"])
            node_type = types.get(str(command.get("node_uid")))
            if any(uid == command.get("node_uid") and since - 0.5 <= sent + timeout_s and until + 0.5 >= sent
                   for uid, since, until in zone.silenced):
                continue
            faults = {kind for kind, node, since, until in zone.history
                      if node == node_type and since - 0.5 <= sent + timeout_s and until >= sent}
            at = self._t0_zone + (sent - self._t0_real) * self.cfg.scale
            if "node_offline" in faults or (node_type == "irrig" and self._unreachable_within(
                    zone, at, at + timeout_s * self.cfg.scale)):
                continue
            if "drop_reply" in faults:
                dropped_start = dropped_start or (command.get("params") or {}).get("state") in (1, True)
                continue
            return HINT_SERVER_TIMEOUT
        return HINT_UNANSWERED_START if dropped_start else None

    async def _workflow_behind(self, violation: Violation) -> dict[str, Any] | None:
        """The workflow that sent the violating command, else the latest one the zone's log names before it."""
        match = _WF_CMD.match(violation.cmd_id or "")
        wf_id = match.group(1) if match else None
        if wf_id is None:
            zone = next(z for z in self.zones if z.uid == violation.zone_uid)
            named = [found for at, line in zone.log if at <= violation.at for found in _WF_ID.findall(line)]
            wf_id = named[-1] if named else None
        return self._with_wire(await self._record(violation.zone_uid, wf_id)) if wf_id else None

    async def _record(self, zone_uid: str, wf_id: str) -> dict[str, Any] | None:
        status, body = await self.http("GET", f"/api/v1/zones/{zone_uid}/workflows/{wf_id}")
        return body["data"] if status == 200 and isinstance(body, dict) else None

    async def _evidence_records(self, judged: list[Judged]) -> dict[str, Any]:
        """Records for the report's evidence: workflows named in counted violations (e.g. the earlier command
        a stop rule points at) and the first ``*_stop_not_confirmed`` failures."""
        wanted: dict[str, str] = {}
        for item in judged[:60]:
            for wf_id in _WF_ID.findall(item.violation.detail):
                wanted.setdefault(wf_id, item.violation.zone_uid)
        for end in self.ended.values():
            if (end.reason_code or "").endswith("_stop_not_confirmed") and len(wanted) < 80:
                wanted.setdefault(end.id, end.zone)
        records: dict[str, Any] = {}
        for wf_id, zone_uid in wanted.items():
            records[wf_id] = self._with_wire(await self._record(zone_uid, wf_id))
        return records

    async def _lost_replies(self) -> None:
        """Commands the server stored as TIMEOUT although the tap saw the node's terminal reply in time
        (workflows that failed; at most 400 records read): a reply lost inside the server, or one that came
        from a silenced node (chaos ``node_silence`` discards what the server receives, not what the tap sees)."""
        found: list[dict[str, Any]] = []
        silenced = [window for zone in self.zones for window in zone.silenced]
        expected = 0
        checked = 0
        for end in list(self.ended.values()):
            if end.status == "completed" or checked >= 400:
                continue
            checked += 1
            record = self._with_wire(await self._record(end.zone, end.id))
            for command in (record or {}).get("commands", []):
                wire = command.get("wire") or {}
                if command.get("status") == "TIMEOUT" and wire.get("wire_status") and \
                        (wire.get("terminal_after_ms") or 0) < 4000:
                    sent = self._t0_real + float(wire["published"])
                    if any(uid == command.get("node_uid") and since - 0.5 <= sent <= until + 0.5
                           for uid, since, until in silenced):
                        expected += 1  # chaos node_silence: the server discards what that node sends
                        continue
                    found.append({"wf": end.id, "zone": end.zone, "cmd_id": command["cmd_id"],
                                  "role": command["role"], "cmd": command["cmd"], "wire": wire})
                    self._records.setdefault(end.id, record)
        self.lost_replies = found
        if expected:
            self.notes.append(f"{expected} command(s) stored TIMEOUT while their node was silenced (chaos "
                              "node_silence: the server discards its replies, the tap still sees them): expected")
        if found:
            self.notes.append(f"{len(found)} command(s) stored TIMEOUT although the node's terminal reply was on "
                              f"the wire within 4 s (of {checked} failed/cancelled workflows read); see evidence "
                              f"'lost_replies'")

    def _with_wire(self, record: dict[str, Any] | None) -> dict[str, Any] | None:
        """``record`` with what the tap saw of each command (real seconds since the random phase began)."""
        if record is None:
            return None
        for command in record.get("commands", []):
            seen = self.meter.wire(command["cmd_id"])
            if seen is not None:
                seen["published"] = round(seen["published"] - self._t0_real, 3)
            command["wire"] = seen
        return record

    def _latency(self) -> dict[str, list[float]]:
        """Samples in real ms: by kind, all, and "clean": no fault of the zone's, no DB outage or restart
        overlapping the sample (a fault can hide the stimulus from the server: that is not its overhead)."""
        def overlaps(windows: list[list[float | None]], start: float, end: float) -> bool:
            return any(since is not None and since <= end and (until is None or until >= start)
                       for since, until in windows)
        zones = {z.uid: z for z in self.zones}

        def clean(zone: str, start: float, end: float) -> bool:
            owner = zones.get(zone)
            return not overlaps(self.server_windows, start, end) and (
                owner is None or not overlaps(owner.fault_windows, start, end))
        samples = self.meter.samples
        return {"reply": [(b - a) * 1000 for kind, _, a, b, _, _ in samples if kind == "reply"],
                "event": [(b - a) * 1000 for kind, _, a, b, _, _ in samples if kind == "event"],
                "all": [(b - a) * 1000 for _, _, a, b, _, _ in samples],
                "clean": [(b - a) * 1000 for _, zone, a, b, _, _ in samples if clean(zone, a, b)]}

    def _write_evidence(self, report: CampaignReport) -> Path | None:
        if self._tmp is None:
            return None
        where = self.cfg.data_dir if self.cfg.data_dir is not None else Path(tempfile.gettempdir())
        target = where / f"hv-campaign-{self.cfg.seed}-evidence.json"
        data = {
            "seed": report.seed, "zones": report.zones, "scale": report.scale,
            "violations": [{"rule": j.violation.rule, "zone": j.violation.zone_uid, "node": j.violation.node_uid,
                            "at": j.violation.at, "detail": j.violation.detail, "cmd_id": j.violation.cmd_id,
                            "excused": j.excused, "hint": j.hint, "workflow": j.workflow} for j in report.judged],
            "t0_zone": self._t0_zone,
            "hanging": [msgspec.to_builtins(w.__dict__) for w in report.hanging],
            "records": self._records,
            "lost_replies": self.lost_replies,
            "slowest_latency": sorted(({"kind": kind, "zone": zone, "ms": round((b - a) * 1000, 1),
                                        "at_real": round(b - self._t0_real, 2), "cmd_id": cmd_id, "after": what}
                                       for kind, zone, a, b, cmd_id, what in self.meter.samples),
                                      key=lambda x: -float(str(x["ms"])))[:40],
            "zone_logs": {z.uid: z.log[-2000:] for z in self.zones},
            "unreachable": {z.uid: z.unreachable for z in self.zones},
            "stuck_windows": {z.uid: z.stuck_windows for z in self.zones},
            "server_log": str(self.server.log_path if self.cfg.data_dir is not None or self.cfg.keep else
                              Path(tempfile.gettempdir()) / f"hv-campaign-{self.cfg.seed}-server.log")
            if self.server is not None else None,
        }
        with contextlib.suppress(OSError):
            target.write_text(json.dumps(data, indent=1, default=str))
            return target
        return None


# -- rendering ------------------------------------------------------------------------------------------------

HINTS = {
    HINT_DOSING_NO_EFFECT: "an earlier compensating stop of a dosing pump answered NO_EFFECT (already off): sent "
                           "because a DONE dose leaves the pump among the roles to stop; the observer keeps such a "
                           "stop unconfirmed until a DONE stop of that channel, which an idle pump never gives",
    HINT_DB_OUTAGE: "during/right after a DB outage: a stop needs its write-ahead row, so none could go out",
    HINT_SERVER_TIMEOUT: "the workflow's record has a command the server stored TIMEOUT while its node was connected "
                         "and not silenced: its reply was dropped or held up inside the server (see the server log: "
                         "'not stored within 10.0 s', 'stopped (normal) with 1 messages unhandled: DeviceReply')",
    HINT_UNANSWERED_START: "a start's replies were dropped (drop_reply fault): while the workflow waits for them (the "
                           "command timeout) the stage watches none of its end conditions; the pump runs unsupervised",
    HINT_ADOPTED_CANCEL: "the workflow was cancelled (or its zone latched) before a restart; the adopted incarnation "
                         "ended without a stop: WorkflowActor._begin returns before _maybe_on = PLANT",
    HINT_STALE_SNAPSHOT: "the workflow's own record shows a full pump path opened DONE (seen on the wire) before the "
                         "pump start: the observer's belief was reset by a node event whose snapshot was taken "
                         "before those DONEs and published after them (observer/sim ordering, not the product)",
}


def _pct(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def render(report: CampaignReport, *, details: int = 30) -> list[str]:
    """The report as printed lines."""
    out: list[str] = []
    rate = report.simulated_minutes / report.wall_s if report.wall_s else math.nan
    out.append(f"seed {report.seed} | {report.zones} zones | scale {report.scale:g} | verdict "
               f"{'OK' if report.ok else 'FAILED'}")
    out.append(f"simulated minutes covered (sum over zones): {report.simulated_minutes:,.0f}  "
               f"({report.simulated_minutes / 60:,.1f} h)")
    out.append(f"wall seconds: {report.wall_s:,.0f} (random phase {report.run_s:,.0f}; the rest: start, "
               f"wind-down)  ->  {rate:,.2f} simulated minutes per wall second")
    out.append("faults injected by kind:")
    for kind, count in sorted(report.faults.items()):
        out.append(f"  {kind:<24} {count:>6}")
    out.append(f"  {'total':<24} {sum(report.faults.values()):>6}")
    out.append("workflows by type and outcome:")
    outcomes = report.outcomes()
    for wf_type in sorted({t for t, _ in outcomes}):
        row = ", ".join(f"{status} {outcomes[(wf_type, status)]}" for status in ("completed", "failed", "cancelled"))
        out.append(f"  {wf_type:<18} {row}")
    out.append("  reason codes:")
    for (wf_type, status, reason), count in sorted(report.reasons().items()):
        out.append(f"    {wf_type:<18} {status:<10} {reason:<42} {count:>5}")
    missing = [w for w in report.workflows if w.status in ("failed", "cancelled") and not w.reason_code]
    out.append(f"  failures without a reason code: {len(missing)}")
    out.append(f"workflows left running / hanging at the end: {len(report.hanging)}")
    for wf in report.hanging[:details]:
        out.append(f"  {wf.zone} {wf.id} {wf.type} {wf.status}: {wf.message}")
    if report.refusals:
        out.append("workflow starts refused (409 etc., by code):")
        for code, count in report.refusals.most_common():
            out.append(f"  {code:<70} {count:>5}")
    if report.stuck_pump:
        out.append("welded relays (what the product could notice):")
        for what, count in sorted(report.stuck_pump.items()):
            out.append(f"  {what:<80} {count:>4}")
    counted, excused = report.violations, report.excused
    out.append(f"unsafe actuations (observer violations that count): {len(counted)}")
    for (rule, hint), count in Counter((j.violation.rule, j.hint) for j in counted).most_common():
        out.append(f"  {rule:<32} {count:>5}   likely cause: {HINTS.get(hint or '', 'not classified')}")
    for item in counted[:details]:
        v = item.violation
        out.append(f"  - {v.rule} zone {v.zone_uid} node {v.node_uid} at {v.at:.1f} cmd {v.cmd_id}: {v.detail}"
                   + (f" [{item.hint}]" if item.hint else ""))
        record = item.workflow or {}
        if record:
            out.append(f"      workflow {record.get('id')} {record.get('type')} {record.get('status')} "
                       f"{record.get('reason_code')} stage {record.get('stage')}")
    out.append(f"excused (stop physically impossible in the sim; counted apart): {len(excused)}")
    for (rule, why), count in Counter((j.violation.rule, j.excused) for j in excused).most_common():
        out.append(f"  {rule:<32} {why:<14} {count:>5}")
    for item in excused[:min(details, 10)]:
        v = item.violation
        out.append(f"  - [{item.excused}] {v.rule} zone {v.zone_uid} at {v.at:.1f}: {v.detail}")
    out.append("workflow stage latency overhead (real ms, from the MQTT tap):")
    for kind, label in (("reply", "terminal reply -> next command"), ("event", "stage-ending event -> command"),
                        ("all", "all"), ("clean", "all, no fault/outage/restart around")):
        values = report.latency_ms.get(kind, [])
        out.append(f"  {label:<36} n {len(values):>6}  p50 {_pct(values, 50):8.1f}  p99 {_pct(values, 99):8.1f}"
                   f"  max {max(values) if values else math.nan:8.1f}")
    out.append("terminal command replies on the wire (status, error code): " + ", ".join(
        f"{k} {v:,}" for k, v in report.replies.most_common()))
    stats = report.observer_stats
    out.append("observer saw: " + ", ".join(f"{k} {stats.get(k, 0):,}" for k in (
        "publishes", "commands", "starts", "stops", "responses", "telemetry", "events", "plant_readings", "marks",
        "malformed", "unknown_responses", "late_terminals")))
    out.append(f"tap reconnects {report.tap_reconnects}, tap errors {report.tap_errors}")
    if report.plant_not_stopped:
        out.append("plant not at rest at the end: " + "; ".join(report.plant_not_stopped))
    for note in report.notes[:details]:
        out.append(f"note: {note}")
    if report.evidence_path is not None:
        out.append(f"evidence (violations with workflow records, zone logs): {report.evidence_path}")
    out.append(f"replay: --seed {report.seed}")
    return out
