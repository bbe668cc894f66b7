"""Synthetic Protocol 2.0 traffic for the observer's unit tests: publishes built the way the server and the
nodes build them, fed straight into a ``SafetyObserver`` with an explicit time."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hydrovisor.observer import PlantReading, SafetyObserver

GH, ZONE = "gh-1", "zn-1"
IRR, PH = "nd-irr-000000000001", "nd-ph-000000000002"
RECIRC = ("valve_solution_supply", "valve_solution_fill")
SOLUTION_FILL = ("valve_clean_supply", "valve_solution_fill")


def plant(*, clean: float = 100.0, solution: float = 100.0, pumps: tuple[str, ...] = (),
          valves: tuple[str, ...] = ()) -> PlantReading:
    """A plant reading (min switch at 5 %)."""
    return PlantReading(clean_level_pct=clean, solution_level_pct=solution, min_switch_pct=5.0,
                        switches={"level_clean_min": clean >= 5, "level_solution_min": solution >= 5},
                        pumps=frozenset(pumps), valves=frozenset(valves), commanded=frozenset((*pumps, *valves)))


class Wire:
    """Publishes into ``observer`` as the server (commands) and the nodes (replies, telemetry, events)."""

    def __init__(self, observer: SafetyObserver, zone: str = ZONE) -> None:
        self.observer = observer
        self.zone = zone
        self._ids = itertools.count(1)

    def publish(self, topic: str, body: Any, at: float) -> None:
        self.observer.observe(topic, body if isinstance(body, bytes) else json.dumps(body).encode(), at)

    def command(self, node: str, channel: str, cmd: str, at: float, params: dict[str, Any] | None = None,
                *, cmd_id: str | None = None) -> str:
        cmd_id = cmd_id or f"cmd-{next(self._ids)}"
        self.publish(f"hydro/{GH}/{self.zone}/{node}/{channel}/command",
                     {"cmd": cmd, "cmd_id": cmd_id, "params": params or {}, "ts": int(at), "sig": "0" * 64}, at)
        return cmd_id

    def reply(self, node: str, channel: str, cmd_id: str, status: str, at: float, **extra: Any) -> None:
        self.publish(f"hydro/{GH}/{self.zone}/{node}/{channel}/command_response",
                     {"cmd_id": cmd_id, "status": status, "ts": int(at * 1000), **extra}, at)

    def relay(self, node: str, channel: str, state: bool, at: float, status: str | None = "DONE",
              **params: Any) -> str:
        """``set_relay`` and (unless ``status`` is None) its ACK and terminal reply at the same time."""
        cmd_id = self.command(node, channel, "set_relay", at, {"state": int(state), **params})
        if status is not None:
            self.reply(node, channel, cmd_id, "ACK", at)
            self.reply(node, channel, cmd_id, status, at)
        return cmd_id

    def open_path(self, valves: tuple[str, ...], at: float, node: str = IRR) -> None:
        for valve in valves:
            self.relay(node, valve, True, at)

    def telemetry(self, node: str, channel: str, at: float, **body: Any) -> None:
        self.publish(f"hydro/{GH}/{self.zone}/{node}/{channel}/telemetry", {"ts": int(at), **body}, at)

    def ph(self, at: float, flags: dict[str, Any] | None = None, *, node: str = PH) -> None:
        """A pH reading of ``node`` carrying ``flags`` (stable / flow_active / corrections_allowed)."""
        self.telemetry(node, "ph_sensor", at, metric_type="PH", value=5.9, **(flags or {}))

    def event(self, node: str, channel: str, code: str, at: float, **fields: Any) -> None:
        self.publish(f"hydro/{GH}/{self.zone}/{node}/{channel}/event",
                     {"event_code": code, "ts": int(at), **fields}, at)
