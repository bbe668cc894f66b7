"""What a simulated node does with an admitted command, per channel and node type (PROTOCOL §5).

``Actions.plan(channel, command)`` decides synchronously: it returns either an immediate ``Outcome`` (a
rejection such as ``ERROR node_not_activated`` or ``INVALID invalid_params``, sent without ``ACK``) or a
coroutine function to run after the node has sent ``ACK``. Long actions (``run_pump``, ``dose``) sleep their
simulated duration times ``time_scale``.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from hydrovisor.protocol import ChannelConfig, Command
from hydrovisor.sim.clock import DeviceClock
from hydrovisor.sim.faults import Faults
from hydrovisor.sim.options import NodeOptions
from hydrovisor.sim.physics import OVERCURRENT_THRESHOLD_MA, WaterPhysics
from hydrovisor.sim.profiles import Profile

__all__ = ["KNOWN_COMMANDS", "Actions", "Outcome", "Run"]

KNOWN_COMMANDS = frozenset({
    "run_pump", "dose", "set_relay", "set_pwm", "activate_sensor_mode", "deactivate_sensor_mode", "state",
    "test_sensor", "calibrate", "set_time", "restart", "report_config", "light_on", "light_off",
})

_PUMPS = frozenset({"PUMP", "PERISTALTIC_PUMP"})
_SWITCHABLE = frozenset({"PUMP", "PERISTALTIC_PUMP", "RELAY", "VALVE", "FAN", "HEATER", "LED", "PWM", "DRIVE"})
_DIMMABLE = frozenset({"PWM", "LED", "FAN"})
_MAX_DURATION_MS = 300_000
_MAX_ML = 500.0
_TRIP_AFTER_S = 0.2  # simulated seconds before an overcurrent trips


class Outcome(msgspec.Struct, frozen=True, kw_only=True):
    """The terminal answer to a command. ``follow_up``: ``report_config`` (publish the config report before
    answering) or ``restart`` (reboot after answering)."""

    status: str
    details: dict[str, Any] | None = None
    error_code: str | None = None
    error_message: str | None = None
    message: str | None = None
    follow_up: str | None = None


Run = Callable[[], Awaitable[Outcome]]


def _error(code: str, message: str, status: str = "ERROR", **details: Any) -> Outcome:
    return Outcome(status=status, error_code=code, error_message=message, details=details or None)


def _invalid(message: str) -> Outcome:
    return _error("invalid_params", message, status="INVALID")


def _number(params: dict[str, Any], name: str) -> float | None:
    value = params.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _switch_state(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("on", "off"):
        return value.lower() == "on"
    return None


class Actions:
    """The actuator side of one node: relay states, sensor mode, busy channels (see the module docstring)."""

    def __init__(self, profile: Profile, physics: WaterPhysics, clock: DeviceClock, *, faults: Faults,
                 options: NodeOptions, rng: random.Random, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._profile = profile
        self._physics = physics
        self._clock = clock
        self._faults = faults
        self._options = options
        self._rng = rng
        self._monotonic = monotonic
        self.relays: dict[str, bool] = {}
        self.pwm: dict[str, float] = {}
        self.busy: set[str] = set()
        self.sensor_mode_since: float | None = None
        self._background: set[asyncio.Task[None]] = set()

    # -- sensor mode ---------------------------------------------------------------------------

    def sensor_flags(self) -> dict[str, bool]:
        """``stable`` / ``flow_active`` / ``corrections_allowed`` for a pH/EC reading right now.

        ``stable`` is omitted when stable and ``omit_stable_when_true`` is set, as the firmware does.
        """
        since = self.sensor_mode_since
        active = since is not None
        stable = since is not None and (
            (self._monotonic() - since) / self._options.time_scale >= self._options.sensor_stabilize_s)
        flags = {"flow_active": active, "corrections_allowed": active and stable}
        if not (stable and self._options.omit_stable_when_true):
            flags["stable"] = stable
        return flags

    def reset(self) -> None:
        """Reboot: everything off, sensor mode off, background actions cancelled."""
        for task in self._background:
            task.cancel()
        self._background.clear()
        for name in list(self._physics.pumps):
            self._physics.stop_pump(name)
        for name in list(self._physics.valves):
            self._physics.set_valve(name, False)
        self._physics.set_light(0)
        self.relays.clear()
        self.pwm.clear()
        self.busy.clear()
        self.sensor_mode_since = None

    # -- planning ------------------------------------------------------------------------------

    def plan(self, channel: str, command: Command) -> Outcome | Run:
        """An immediate outcome (sent without ACK) or the action to run after ACK."""
        cmd, params = command.cmd, command.params
        if cmd not in KNOWN_COMMANDS:
            return _error("unknown_command", f"unknown command {cmd!r}")
        config = self._profile.channel(channel)
        if config is None:
            return _error("unsupported_channel_cmd", f"the node has no channel {channel!r}")
        if cmd in ("set_time", "restart", "report_config"):
            return self._plan_system(cmd, params)
        planner = getattr(self, f"_plan_{cmd}")
        result: Outcome | Run = planner(config, params)
        return result

    def _unsupported(self, cmd: str, channel: str) -> Outcome:
        return _error("unsupported_channel_cmd", f"{cmd} is not supported on channel {channel!r}")

    def _plan_system(self, cmd: str, params: dict[str, Any]) -> Outcome | Run:
        if cmd == "set_time":
            unix_ts = _number(params, "unix_ts")
            if unix_ts is None or not self._clock.sync(unix_ts):
                return _invalid("set_time needs params.unix_ts in Unix seconds")

            async def set_time() -> Outcome:
                return Outcome(status="DONE", details={"unix_ts": int(self._clock.now())})
            return set_time

        async def done() -> Outcome:
            return Outcome(status="DONE", follow_up=cmd)
        return done

    # pumps -------------------------------------------------------------------------------------

    def _plan_run_pump(self, config: ChannelConfig, params: dict[str, Any]) -> Outcome | Run:
        if config.actuator_type not in _PUMPS:
            return self._unsupported("run_pump", config.name)
        duration_ms = _number(params, "duration_ms")
        if duration_ms is None or not 0 < duration_ms <= _MAX_DURATION_MS:
            return _invalid(f"run_pump needs params.duration_ms in (0, {_MAX_DURATION_MS}]")
        if config.name in self.busy:
            return Outcome(status="BUSY", message=f"{config.name} is already running")
        main = config.actuator_type == "PUMP"
        ml = duration_ms / 1000.0 * (config.ml_per_second or 0.0)
        return self._pump_run(config.name, duration_ms / 1000.0, main=main,
                              dose_ml=ml if not main else 0.0, details={"duration_ms": int(duration_ms)})

    def _plan_dose(self, config: ChannelConfig, params: dict[str, Any]) -> Outcome | Run:
        if config.actuator_type != "PERISTALTIC_PUMP":
            return self._unsupported("dose", config.name)
        ml = _number(params, "ml")
        if ml is None or not 0 < ml <= _MAX_ML:
            return _invalid(f"dose needs params.ml in (0, {_MAX_ML:g}]")
        if self.sensor_mode_since is None:
            return _error("node_not_activated", "sensor mode is not active; send activate_sensor_mode first")
        if config.name in self.busy:
            return Outcome(status="BUSY", message=f"{config.name} is already running")
        seconds = ml / (config.ml_per_second or 1.0)
        return self._pump_run(config.name, seconds, main=False, dose_ml=ml,
                              details={"ml": ml, "duration_ms": int(seconds * 1000)})

    def _pump_run(self, name: str, seconds: float, *, main: bool, dose_ml: float, details: dict[str, Any]) -> Run:
        self.busy.add(name)  # reserved now: a second command planned before this one runs gets BUSY

        async def run() -> Outcome:
            try:
                trip = self._rng.random() < self._faults.overcurrent
                flowing = not (main and self._rng.random() < self._faults.no_flow)
                self._physics.start_pump(name, main=main, flowing=flowing, overcurrent=trip)
                try:
                    if trip:
                        await asyncio.sleep(min(seconds, _TRIP_AFTER_S) * self._options.time_scale)
                        current = round(self._physics.pump_current_ma_true())
                        return _error("overcurrent", f"{name} tripped at {current} mA", channel=name,
                                      current_ma=current, threshold_ma=OVERCURRENT_THRESHOLD_MA)
                    await asyncio.sleep(seconds * self._options.time_scale)
                finally:
                    self._physics.stop_pump(name)
                kind = self._profile.dose_kinds.get(name)
                if kind is not None and dose_ml > 0:
                    self._physics.dose(kind, dose_ml)
                return Outcome(status="DONE", details=details)
            finally:
                self.busy.discard(name)
        return run

    # relays and PWM ----------------------------------------------------------------------------

    def _plan_set_relay(self, config: ChannelConfig, params: dict[str, Any]) -> Outcome | Run:
        if config.actuator_type not in _SWITCHABLE:
            return self._unsupported("set_relay", config.name)
        state = _switch_state(params.get("state"))
        if state is None:
            return _invalid("set_relay needs params.state (true/false, 1/0, on/off)")
        duration = _number(params, "duration_ms") or _number(params, "timeout_ms")
        if duration is not None and not 0 < duration <= _MAX_DURATION_MS:
            return _invalid(f"duration_ms/timeout_ms must be in (0, {_MAX_DURATION_MS}]")
        if config.name in self.busy:
            return Outcome(status="BUSY", message=f"{config.name} is running a timed command")
        if self.relays.get(config.name, False) == state and duration is None:
            return Outcome(status="NO_EFFECT", message=f"{config.name} already {'on' if state else 'off'}")

        async def switch() -> Outcome:
            if state and config.actuator_type in _PUMPS and self._rng.random() < self._faults.overcurrent:
                self._physics.start_pump(config.name, main=config.actuator_type == "PUMP", overcurrent=True)
                await asyncio.sleep(_TRIP_AFTER_S * self._options.time_scale)
                current = round(self._physics.pump_current_ma_true())
                self._physics.stop_pump(config.name)
                return _error("overcurrent", f"{config.name} tripped at {current} mA", channel=config.name,
                              current_ma=current, threshold_ma=OVERCURRENT_THRESHOLD_MA)
            self._apply_switch(config, state)
            if duration is not None:
                self._spawn(self._revert_after(config, not state, duration / 1000.0))
            return Outcome(status="DONE", details={"state": state})
        return switch

    def _apply_switch(self, config: ChannelConfig, state: bool) -> None:
        self.relays[config.name] = state
        if config.actuator_type in _PUMPS:
            if state:
                flowing = not (config.actuator_type == "PUMP" and self._rng.random() < self._faults.no_flow)
                self._physics.start_pump(config.name, main=config.actuator_type == "PUMP", flowing=flowing)
            else:
                self._physics.stop_pump(config.name)
        elif config.actuator_type == "VALVE":
            self._physics.set_valve(config.name, state)
        elif config.actuator_type == "LED":
            self._physics.set_light(100.0 if state else 0.0)

    async def _revert_after(self, config: ChannelConfig, state: bool, seconds: float) -> None:
        self.busy.add(config.name)
        try:
            await asyncio.sleep(seconds * self._options.time_scale)
            self._apply_switch(config, state)
        finally:
            self.busy.discard(config.name)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _plan_set_pwm(self, config: ChannelConfig, params: dict[str, Any]) -> Outcome | Run:
        if config.actuator_type not in _DIMMABLE:
            return self._unsupported("set_pwm", config.name)
        value = _number(params, "value")
        if value is None or not 0 <= value <= 255:
            return _invalid("set_pwm needs params.value in [0, 255]")

        async def pwm() -> Outcome:
            self.pwm[config.name] = value
            if config.actuator_type == "LED":
                self._physics.set_light(value / 255.0 * 100.0)
            return Outcome(status="DONE", details={"value": value})
        return pwm

    def _plan_light_on(self, config: ChannelConfig, params: dict[str, Any]) -> Outcome | Run:
        return self._light(config, on=True)

    def _plan_light_off(self, config: ChannelConfig, params: dict[str, Any]) -> Outcome | Run:
        return self._light(config, on=False)

    def _light(self, config: ChannelConfig, *, on: bool) -> Outcome | Run:
        if config.actuator_type != "LED":
            return self._unsupported("light_on" if on else "light_off", config.name)

        async def light() -> Outcome:
            self._apply_switch(config, on)
            return Outcome(status="DONE", details={"state": on})
        return light

    # sensors -----------------------------------------------------------------------------------

    def _plan_activate_sensor_mode(self, config: ChannelConfig, params: dict[str, Any]) -> Outcome | Run:
        if config.name != "system" or self._profile.node_type not in ("ph", "ec"):
            return self._unsupported("activate_sensor_mode", config.name)

        async def activate() -> Outcome:
            if self.sensor_mode_since is None:
                self.sensor_mode_since = self._monotonic()
            return Outcome(status="DONE", details={"sensor_mode": True})
        return activate

    def _plan_deactivate_sensor_mode(self, config: ChannelConfig, params: dict[str, Any]) -> Outcome | Run:
        if config.name != "system" or self._profile.node_type not in ("ph", "ec"):
            return self._unsupported("deactivate_sensor_mode", config.name)

        async def deactivate() -> Outcome:
            self.sensor_mode_since = None
            return Outcome(status="DONE", details={"sensor_mode": False})
        return deactivate

    def _plan_state(self, config: ChannelConfig, params: dict[str, Any]) -> Outcome | Run:
        if config.name != "storage_state":
            return self._unsupported("state", config.name)

        async def state() -> Outcome:
            return Outcome(status="DONE", details={"snapshot": self._physics.snapshot()})
        return state

    def _plan_test_sensor(self, config: ChannelConfig, params: dict[str, Any]) -> Outcome | Run:
        sensor = self._profile.sensor(config.name)
        if sensor is None:
            return self._unsupported("test_sensor", config.name)

        async def test() -> Outcome:
            value = round(self._physics.read(sensor.source), sensor.decimals)
            return Outcome(status="DONE", details={"metric_type": sensor.metric, "value": value,
                                                   "unit": sensor.unit, "ok": True})
        return test

    def _plan_calibrate(self, config: ChannelConfig, params: dict[str, Any]) -> Outcome | Run:
        sensor = self._profile.sensor(config.name)
        if sensor is None or not sensor.gated:
            return self._unsupported("calibrate", config.name)
        stage = params.get("stage")
        known = _number(params, "known_ph") if sensor.metric == "PH" else _number(params, "tds_value")
        if stage is None or known is None:
            wanted = "known_ph" if sensor.metric == "PH" else "tds_value"
            return _invalid(f"calibrate needs params.stage and params.{wanted}")

        async def calibrate() -> Outcome:
            return Outcome(status="DONE", details={"stage": stage, "reference": known})
        return calibrate
