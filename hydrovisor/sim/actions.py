"""What a simulated node does with an admitted command, per channel and node type (PROTOCOL §5).

``Actions.plan(channel, command)`` decides synchronously: it returns either an immediate ``Outcome`` (a
rejection such as ``ERROR node_not_activated`` or ``INVALID invalid_params``, sent without ``ACK``) or a
coroutine function to run after the node has sent ``ACK``. Long actions (``run_pump``, ``dose``) sleep their
simulated duration on the node's ``Clock`` (``hydrovisor.zones.clock``; a scaled clock makes them shorter).

The two-tank node's firmware rules (DOMAIN §4 "Hydraulics"): ``pump_main`` on (``set_relay`` on,
``run_pump``) is refused with ``ERROR pump_interlock_blocked`` unless a pump path is open (valves first);
after an emergency stop every start is ``ERROR estop_active`` until it is released. ``dose`` needs sensor
mode (``ERROR node_not_activated``). A timed ``set_relay{state, timeout_ms, stage}`` that times out reports
``{stage}_timeout`` on ``storage_state`` (``solution_fill_timeout``, ``prepare_recirculation_timeout``).

The single-tank ``recirculation`` node has no interlock: ``pump_main`` is its NC recirculation pump, which
runs at power-on; ``set_relay{state:0}`` stops it and ``state:1`` runs it (``state`` is the load's state, as
everywhere), ``set_relay{state:0, duration_ms}`` is an OFF window after which it runs again, and a reboot or
a stopped node leaves it running (``Profile.unpowered_on``) unless the emergency stop is latched.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from hydrovisor.protocol import ChannelConfig, Command
from hydrovisor.sim.clock import DeviceClock
from hydrovisor.sim.faults import Faults
from hydrovisor.sim.options import NodeOptions
from hydrovisor.sim.physics import OVERCURRENT_THRESHOLD_MA, PUMP_MAIN, STORAGE_STATE, WaterPhysics
from hydrovisor.sim.profiles import Profile
from hydrovisor.zones.clock import Clock, real_seconds

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
_STAGE_TIMEOUTS = frozenset({"solution_fill", "prepare_recirculation"})
_WATER = frozenset({"PUMP", "PERISTALTIC_PUMP", "VALVE"})

ErrorReport = Callable[[str, str, str, dict[str, Any]], None]
"""``(component, error_code, message, details)``: publish an ``error`` report of the node."""


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
                 options: NodeOptions, rng: random.Random, time: Clock | None = None,
                 report_error: ErrorReport | None = None) -> None:
        self._profile = profile
        self._physics = physics
        self._clock = clock
        self._faults = faults
        self._options = options
        self._rng = rng
        self._time: Clock = time if time is not None else physics.clock
        self._report_error = report_error
        self.relays: dict[str, bool] = {}
        self.pwm: dict[str, float] = {}
        self.busy: set[str] = set()
        self.sensor_mode_since: float | None = None
        self.estop = False
        self._background: set[asyncio.Task[None]] = set()
        self._channels = {channel.name for channel in profile.channels}

    @property
    def faults(self) -> Faults:
        """The failure modes in force."""
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults

    async def _sleep(self, seconds: float) -> None:
        """Sleep ``seconds`` of the node's clock."""
        await asyncio.sleep(real_seconds(self._time, seconds))

    def is_on(self, name: str) -> bool:
        """What the node believes channel ``name`` is doing (on/open)."""
        config = self._profile.channel(name)
        if config is not None and config.actuator_type in _WATER:
            return name in self._physics.commanded
        return self.relays.get(name, False)

    def emergency_stop(self, reason: str = "button") -> list[str]:
        """The node's emergency stop: every pump stops, every valve closes, ``emergency_stop_activated`` is
        reported and every start is refused (``estop_active``) until :meth:`release_emergency_stop`."""
        self.estop = True
        for task in self._background:
            task.cancel()
        for name in list(self.relays):
            self.relays[name] = False
        return self._physics.emergency_stop(self._channels, reason)

    def release_emergency_stop(self) -> None:
        """The emergency stop button is released: starts are accepted again (nothing restarts by itself)."""
        self.estop = False

    # -- sensor mode ---------------------------------------------------------------------------

    def sensor_flags(self) -> dict[str, bool]:
        """``stable`` / ``flow_active`` / ``corrections_allowed`` for a pH/EC reading right now (none while
        sensor mode is off).

        ``stable`` is omitted when stable and ``omit_stable_when_true`` is set, as the firmware does.
        """
        since = self.sensor_mode_since
        if since is None:
            return {}  # the firmware sends the flags only while sensor mode is active
        stable = self._time.monotonic() - since >= self._options.sensor_stabilize_s
        flags = {"flow_active": True, "corrections_allowed": stable}
        if not (stable and self._options.omit_stable_when_true):
            flags["stable"] = stable
        return flags

    def reset(self) -> None:
        """Reboot: everything of this node off (a shared plant's other nodes keep theirs), sensor mode off,
        background actions cancelled. The emergency stop is a latch in hardware: it survives a reboot.

        Loads on NC relays the profile runs unpowered (``Profile.unpowered_on``) run again, as they do while
        nobody drives their relay, unless the emergency stop is latched (it cuts them)."""
        for task in self._background:
            task.cancel()
        self._background.clear()
        unpowered_on = self._profile.unpowered_on
        for config in self._profile.channels:
            if config.name in unpowered_on:
                continue
            if config.actuator_type in _PUMPS and config.name in self._physics.commanded:
                self._physics.stop_pump(config.name)
            elif config.actuator_type == "VALVE" and config.name in self._physics.commanded:
                self._physics.set_valve(config.name, False)
            elif config.actuator_type == "LED":
                self._physics.set_light(0)
        for name in unpowered_on:
            if self.estop:
                if name in self._physics.commanded:
                    self._physics.stop_pump(name)
            elif name not in self._physics.commanded:
                channel = self._profile.channel(name)
                main = channel is not None and channel.actuator_type == "PUMP"
                flowing = not (main and self._rng.random() < self._faults.no_flow)
                self._physics.start_pump(name, main=main, flowing=flowing)
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
        if config.name in self.busy or self.is_on(config.name):
            return Outcome(status="BUSY", message=f"{config.name} is already running")
        refused = self._start_refused(config)
        if refused is not None:
            return refused
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
        refused = self._start_refused(config)
        if refused is not None:
            return refused
        seconds = ml / (config.ml_per_second or 1.0)
        return self._pump_run(config.name, seconds, main=False, dose_ml=ml,
                              details={"ml": ml, "duration_ms": int(seconds * 1000)})

    def _start_refused(self, config: ChannelConfig) -> Outcome | None:
        """The firmware's refusal of a start on ``config`` (emergency stop, pump interlock), or None."""
        if self.estop and config.actuator_type in _SWITCHABLE:
            return _error("estop_active", "the emergency stop is active; release it first")
        if (config.name == PUMP_MAIN and self._options.plant.interlock and not self._physics.single_tank
                and self._physics.pump_path() is None):
            return _error("pump_interlock_blocked", "no pump path is open: open the valves of a path first",
                          channel=config.name, open_valves=sorted(v for v in self._physics.commanded
                                                                  if v.startswith("valve_")))
        return None

    def _trip(self, name: str) -> Outcome:
        """An overcurrent trip of pump ``name``: the answer, and the node's ``error`` report."""
        current = round(self._physics.pump_current_ma_true())
        details: dict[str, Any] = {"channel": name, "current_ma": current, "threshold_ma": OVERCURRENT_THRESHOLD_MA}
        message = f"{name} tripped at {current} mA"
        if self._report_error is not None:
            self._report_error(name, "overcurrent", message, details)
        return _error("overcurrent", message, **details)

    def _pump_run(self, name: str, seconds: float, *, main: bool, dose_ml: float, details: dict[str, Any]) -> Run:
        self.busy.add(name)  # reserved now: a second command planned before this one runs gets BUSY

        async def run() -> Outcome:
            try:
                trip = self._rng.random() < self._faults.overcurrent
                flowing = not (main and self._rng.random() < self._faults.no_flow)
                self._physics.start_pump(name, main=main, flowing=flowing, overcurrent=trip)
                try:
                    if trip:
                        await self._sleep(min(seconds, _TRIP_AFTER_S))
                        return self._trip(name)
                    kind = self._profile.dose_kinds.get(name)
                    if kind is not None and dose_ml > 0:
                        self._physics.dose(kind, dose_ml)  # mixes in while it runs and after
                    await self._sleep(seconds)
                finally:
                    self._physics.stop_pump(name)
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
        if self.is_on(config.name) == state and duration is None:
            return Outcome(status="NO_EFFECT", message=f"{config.name} already {'on' if state else 'off'}")
        if state:
            refused = self._start_refused(config)
            if refused is not None:
                return refused
        stage = params.get("stage") if "timeout_ms" in params else None

        async def switch() -> Outcome:
            if state and config.actuator_type in _PUMPS and self._rng.random() < self._faults.overcurrent:
                self._physics.start_pump(config.name, main=config.actuator_type == "PUMP", overcurrent=True)
                await self._sleep(_TRIP_AFTER_S)
                outcome = self._trip(config.name)
                self._physics.stop_pump(config.name)
                return outcome
            self._apply_switch(config, state)
            if duration is not None:
                self._spawn(self._revert_after(config, not state, duration / 1000.0,
                                               stage if isinstance(stage, str) else None))
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

    async def _revert_after(self, config: ChannelConfig, state: bool, seconds: float, stage: str | None) -> None:
        self.busy.add(config.name)
        try:
            await self._sleep(seconds)
            self._apply_switch(config, state)
            if stage in _STAGE_TIMEOUTS and self._profile.channel(STORAGE_STATE) is not None:
                self._physics.emit(STORAGE_STATE, f"{stage}_timeout", stage=stage, channel=config.name)
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
                self.sensor_mode_since = self._time.monotonic()
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
