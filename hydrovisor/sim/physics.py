"""A small, seeded model of a zone's plant behind the simulated nodes' sensors.

The two-tank irrigation plant of DOMAIN §4 ("Hydraulics of the two-tank irrigation node"): a clean-water
tank and a solution tank (volumes in litres, ``PlantOptions``), the five valves and ``pump_main``, the four
level switches, solution pH/EC/temperature, the air of the greenhouse and the dosing pumps. Several nodes of
one zone may share one model (``SimNode(physics=...)``): then a dose on the pH node mixes fastest while the
irrigation node recirculates.

- Paths (``options.PATHS``): clean fill = ``valve_clean_fill`` (mains into the clean tank, no pump);
  solution fill = ``valve_clean_supply`` + ``valve_solution_fill`` + ``pump_main`` (clean → solution);
  recirculation = ``valve_solution_supply`` + ``valve_solution_fill`` + ``pump_main`` (solution → solution);
  irrigation = ``valve_solution_supply`` + ``valve_irrigation`` + ``pump_main`` (solution → out).
  ``pump_main`` running without an open path (or with an empty source tank) moves nothing: no flow.
- ``level_*_min`` reads 1 once the tank holds water (``min_switch_pct``), ``level_*_max`` at ~90 %.
- The node's own stages: opening a path starts its stage; ``clean_fill_completed`` /
  ``solution_fill_completed`` fire when the tank's max switch trips; ``solution_fill_source_empty``,
  ``recirculation_solution_low`` and ``irrigation_solution_low`` when the pump's source runs dry on that path.
  Every level switch change is a ``level_switch_changed`` event. Events queue up in ``take_events()``.
- Two views of every actuator: what the node was told (``commanded``, what its ``state`` snapshot reports)
  and what physically happens (``pumps``/``valves``); they differ only for a stuck relay (``stuck``).
- A running pump draws current (main ~1.8 A, dosing ~0.25 A, ~3.6 A when ``overcurrent``); the ``no_flow``
  fault (``flowing=False``) leaves the current on and the flow at 0.
- pH drifts up towards 6.8, EC down with plant uptake; acid/base/nutrient doses mix in over time, about ten
  times faster while the solution recirculates.

The single-tank plant (``PlantOptions(topology="single_tank")``, DOMAIN §4 "Water cycle", the ``recirculation``
node): one solution tank, no paths, no interlock.

- ``pump_main`` is the recirculation pump on a normally-closed relay: it runs at power-on (a new model starts
  with it running and commanded on) and whenever the node does not drive it; while it runs with water in the
  tank the solution recirculates (doses mix fast) and the main line flows at ``pump_flow_lpm``.
- ``pump_drain`` takes the solution to waste at ``drain_lpm``; on an empty tank it runs dry (no flow, current
  on). ``valve_fill`` lets mains water in at ``mains_fill_lpm`` (capped at the tank's capacity): fresh water
  dilutes the solution in proportion to the volume added (EC towards 0, pH towards 7.0, undissolved doses
  likewise), and the drain takes undissolved doses out with the water.
- ``flow`` reads what the node's pumps move: recirculation plus drain. The clean tank stays empty (its
  switches read 0 whatever the faults). The snapshot has ``solution_level_min``/``solution_level_max``,
  ``pump_main``, ``pump_drain`` and ``valve_fill``; there are no stage events (the controller watches the level
  switches and their ``level_switch_changed`` events).

``advance(dt)`` is deterministic for a given seed and sequence of steps; ``update()`` advances by the time
elapsed on the model's ``Clock`` (``hydrovisor.zones.clock``), which is what a running node uses. Readings add
a little seeded noise (the switches none).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import msgspec

from hydrovisor.sim.options import PATHS, PUMP_PATHS, PlantOptions
from hydrovisor.zones.clock import Clock, SystemClock

__all__ = ["LEVEL_SWITCHES", "OVERCURRENT_THRESHOLD_MA", "SINGLE_TANK_SNAPSHOT_KEYS", "VALVES", "PlantEvent",
           "PumpRun", "WaterPhysics"]

_MAIN_CURRENT_MA = 1800.0
_DOSING_CURRENT_MA = 250.0
_OVERCURRENT_MA = 3600.0
OVERCURRENT_THRESHOLD_MA = 2500.0
_PH_PER_ML = 0.01  # per ml of acid/base in the solution tank
_EC_PER_ML = 0.004  # mS/cm per ml of nutrient concentrate
_MIX_SLOW, _MIX_FAST = 0.05, 0.5  # 1/s: how fast a dose mixes in, still vs recirculating
_MAINS_PH, _MAINS_EC = 7.0, 0.0  # fresh mains water (single-tank fill)

VALVES: tuple[str, ...] = ("valve_clean_fill", "valve_clean_supply", "valve_solution_fill",
                           "valve_solution_supply", "valve_irrigation")
LEVEL_SWITCHES: dict[str, tuple[str, str]] = {
    "level_clean_min": ("clean", "min"),
    "level_clean_max": ("clean", "max"),
    "level_solution_min": ("solution", "min"),
    "level_solution_max": ("solution", "max"),
}
"""Level switch channel → (tank, which switch)."""
_SNAPSHOT_LEVELS = {"level_clean_max": "clean_level_max", "level_clean_min": "clean_level_min",
                    "level_solution_max": "solution_level_max", "level_solution_min": "solution_level_min"}
_SWITCH_SOURCES = {"clean_level_min": "level_clean_min", "solution_level_min": "level_solution_min"}
STORAGE_STATE = "storage_state"
PUMP_MAIN = "pump_main"
PUMP_DRAIN = "pump_drain"
VALVE_FILL = "valve_fill"
SINGLE_TANK_SNAPSHOT_KEYS: tuple[str, ...] = ("solution_level_max", "solution_level_min", PUMP_MAIN, PUMP_DRAIN,
                                              VALVE_FILL)
"""What ``state{}`` reports for a single-tank plant."""


class PumpRun(msgspec.Struct, frozen=True, kw_only=True):
    """A pump that is running: ``main`` pumps move water, ``flowing=False`` means no water moves."""

    main: bool
    flowing: bool = True
    overcurrent: bool = False


class PlantEvent(msgspec.Struct, frozen=True, kw_only=True):
    """An event the node publishes on ``{channel}/event``: ``{event_code, ts, **fields}``."""

    channel: str
    code: str
    fields: dict[str, Any]


def _toward(value: float, target: float, rate: float, dt: float) -> float:
    return target + (value - target) * math.exp(-rate * dt)


class WaterPhysics:
    """The simulated water and air of one node or one zone (see the module docstring)."""

    def __init__(self, seed: int | None = None, *, clock: Clock | None = None,
                 plant: PlantOptions | None = None) -> None:
        self._rng = random.Random(seed)
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._last = self._clock.monotonic()
        self.plant = plant if plant is not None else PlantOptions()
        self.single_tank = self.plant.topology == "single_tank"
        self.clean_l = 0.0 if self.single_tank else self.plant.clean_capacity_l * self.plant.clean_start_pct / 100.0
        self.solution_l = self.plant.solution_capacity_l * self.plant.solution_start_pct / 100.0
        self.ph = 6.0 + self._rng.uniform(-0.3, 0.3)
        self.ec = 1.6 + self._rng.uniform(-0.2, 0.2)
        self.water_temp_c = 21.0 + self._rng.uniform(-1, 1)
        self.air_temp_c = 24.0 + self._rng.uniform(-2, 2)
        self.humidity_pct = 65.0 + self._rng.uniform(-5, 5)
        self.co2_ppm = 600.0 + self._rng.uniform(-50, 50)
        self.light_pct = 0.0
        self.pumps: dict[str, PumpRun] = {}
        self.valves: set[str] = set()
        self.commanded: set[str] = set()
        self.stuck: frozenset[str] = frozenset()
        self.inconsistent: frozenset[str] = frozenset()
        self.listeners: list[Callable[[], None]] = []
        self._unmixed_ph = 0.0
        self._unmixed_ec = 0.0
        self._events: list[PlantEvent] = []
        self._stages: dict[str, set[str]] = {}
        if self.plant.open_path is not None:
            for valve in PATHS[self.plant.open_path]:
                self.valves.add(valve)
                self.commanded.add(valve)
        if self.single_tank:  # the NC recirculation pump runs from power-on
            self.pumps[PUMP_MAIN] = PumpRun(main=True)
            self.commanded.add(PUMP_MAIN)
        self._switches = self.switches()
        self._update_stages()

    @property
    def clock(self) -> Clock:
        """The clock the model advances on."""
        return self._clock

    @property
    def clean_level_pct(self) -> float:
        """How full the clean tank is, in %."""
        return self.clean_l / self.plant.clean_capacity_l * 100.0

    @property
    def solution_level_pct(self) -> float:
        """How full the solution tank is, in %."""
        return self.solution_l / self.plant.solution_capacity_l * 100.0

    # -- time ----------------------------------------------------------------------------------

    def update(self) -> None:
        """Advance by the clock time elapsed since the last update."""
        now = self._clock.monotonic()
        elapsed, self._last = max(0.0, now - self._last), now
        if elapsed > 0:
            self.advance(elapsed)

    def advance(self, dt: float) -> None:
        """Advance the model by ``dt`` simulated seconds (deterministic for a given seed and step sequence)."""
        if dt <= 0:
            return
        rng, walk = self._rng, math.sqrt(dt)
        self.ph = _toward(self.ph, 6.8, 2e-4, dt) + rng.gauss(0, 2e-4) * walk
        self.ec = max(0.0, self.ec * math.exp(-1e-5 * dt) + rng.gauss(0, 1e-4) * walk)
        self.water_temp_c = _toward(self.water_temp_c, 21.0, 1e-3, dt) + rng.gauss(0, 2e-3) * walk
        self.air_temp_c = _toward(self.air_temp_c, 24.0 + 0.02 * self.light_pct, 2e-3, dt) + rng.gauss(0, 5e-3) * walk
        self.humidity_pct = min(100.0, max(0.0, _toward(self.humidity_pct, 65.0, 2e-3, dt)
                                           + rng.gauss(0, 0.01) * walk))
        self.co2_ppm = max(300.0, _toward(self.co2_ppm, 600.0, 1e-3, dt) + rng.gauss(0, 0.5) * walk)
        self._mix(dt)
        if self.single_tank:
            self._advance_single_tank(dt)
            self._check()
            return
        plant = self.plant
        if "valve_clean_fill" in self.valves:
            self.clean_l = min(plant.clean_capacity_l, self.clean_l + plant.mains_fill_lpm / 60.0 * dt)
        path = self._flowing_path()
        if path is not None:
            wanted = plant.pump_flow_lpm / 60.0 * dt
            if path == "solution_fill":
                moved = min(wanted, self.clean_l)
                self.clean_l -= moved
                self.solution_l = min(plant.solution_capacity_l, self.solution_l + moved)
            elif path == "irrigation":
                self.solution_l = max(0.0, self.solution_l - wanted)
        self._check()

    def _advance_single_tank(self, dt: float) -> None:
        plant = self.plant
        if VALVE_FILL in self.valves:
            before = self.solution_l
            added = min(plant.solution_capacity_l - before, plant.mains_fill_lpm / 60.0 * dt)
            if added > 0:
                self.solution_l = before + added
                old_share = before / self.solution_l  # fresh water dilutes in proportion to the volume added
                self.ph = self.ph * old_share + _MAINS_PH * (1.0 - old_share)
                self.ec = self.ec * old_share + _MAINS_EC * (1.0 - old_share)
                self._unmixed_ph *= old_share
                self._unmixed_ec *= old_share
        if self.draining():
            before = self.solution_l
            self.solution_l = max(0.0, before - plant.drain_lpm / 60.0 * dt)
            left = self.solution_l / before  # undissolved doses go out with the water
            self._unmixed_ph *= left
            self._unmixed_ec *= left

    def _mix(self, dt: float) -> None:
        if not (self._unmixed_ph or self._unmixed_ec):
            return
        share = 1.0 - math.exp(-(_MIX_FAST if self.recirculating() else _MIX_SLOW) * dt)
        self.ph = min(9.0, max(3.0, self.ph + self._unmixed_ph * share))
        self.ec = min(5.0, max(0.0, self.ec + self._unmixed_ec * share))
        self._unmixed_ph *= 1.0 - share
        self._unmixed_ec *= 1.0 - share

    # -- actuators -----------------------------------------------------------------------------

    def start_pump(self, name: str, *, main: bool, flowing: bool = True, overcurrent: bool = False) -> None:
        """Start pump ``name`` (restarting it replaces the previous run)."""
        self.update()
        self.commanded.add(name)
        self.pumps[name] = PumpRun(main=main, flowing=flowing, overcurrent=overcurrent)
        self._changed()

    def stop_pump(self, name: str) -> None:
        """Stop pump ``name`` (no-op when it is not running; a stuck relay keeps it running)."""
        self.update()
        self.commanded.discard(name)
        if name not in self.stuck:
            self.pumps.pop(name, None)
        self._changed()

    def set_valve(self, name: str, is_open: bool) -> None:
        """Open or close valve ``name`` (a stuck valve stays open once open)."""
        self.update()
        if is_open:
            self.valves.add(name)
            self.commanded.add(name)
        else:
            self.commanded.discard(name)
            if name not in self.stuck:
                self.valves.discard(name)
        self._changed()

    def set_light(self, pct: float) -> None:
        """Set the grow light to ``pct`` % (0-100)."""
        self.update()
        self.light_pct = min(100.0, max(0.0, pct))

    def dose(self, kind: str, ml: float) -> None:
        """Add ``ml`` of ``acid``, ``base`` or ``nutrient`` to the solution tank; it mixes in over time."""
        self.update()
        if kind == "acid":
            self._unmixed_ph -= _PH_PER_ML * ml
        elif kind == "base":
            self._unmixed_ph += _PH_PER_ML * ml
        elif kind == "nutrient":
            self._unmixed_ec += _EC_PER_ML * ml

    def _changed(self) -> None:
        self._update_stages()
        self._check()
        for listener in self.listeners:
            listener()

    # -- hydraulics ----------------------------------------------------------------------------

    def pump_path(self, valves: set[str] | None = None) -> str | None:
        """The pump path open among ``valves`` (default: the commanded ones, as the firmware's interlock
        sees them), or None."""
        open_valves = self.commanded if valves is None else valves
        return next((path for path in PUMP_PATHS if PATHS[path] <= open_valves), None)

    def _flowing_path(self) -> str | None:
        run = self.pumps.get(PUMP_MAIN)
        if run is None or not run.flowing:
            return None
        if self.single_tank:  # no valves: the pump circulates the tank while it holds water
            return "recirculation" if self.solution_l > 0 else None
        path = self.pump_path(self.valves)
        if path is None:
            if self.plant.interlock:
                return None
            path = "recirculation"  # a bare relay board: the pump circulates the solution tank
        source = self.clean_l if path == "solution_fill" else self.solution_l
        return path if source > 0 else None

    def recirculating(self) -> bool:
        """True while the main pump moves solution round the recirculation path."""
        return self._flowing_path() == "recirculation"

    def draining(self) -> bool:
        """True while ``pump_drain`` takes solution out of a single-tank plant (not when it runs dry)."""
        if not self.single_tank:
            return False
        run = self.pumps.get(PUMP_DRAIN)
        return run is not None and run.flowing and self.solution_l > 0

    def moving(self) -> bool:
        """True while water moves (events may fire as time passes)."""
        if self.single_tank:  # recirculation alone never moves a level
            return VALVE_FILL in self.valves or self.draining()
        return "valve_clean_fill" in self.valves or self._flowing_path() is not None

    # -- level switches, stages, events ----------------------------------------------------------

    def switches(self) -> dict[str, bool]:
        """The four level switches by channel (``inconsistent`` tanks read max=1, min=0)."""
        plant, out = self.plant, {}
        for channel, (tank, which) in LEVEL_SWITCHES.items():
            if self.single_tank and tank == "clean":
                out[channel] = False  # there is no clean tank
                continue
            if tank in self.inconsistent:
                out[channel] = which == "max"
                continue
            pct = self.clean_level_pct if tank == "clean" else self.solution_level_pct
            out[channel] = pct >= (plant.min_switch_pct if which == "min" else plant.max_switch_pct)
        return out

    def _update_stages(self) -> None:
        for stage, valves in PATHS.items():
            if valves <= self.commanded:
                self._stages.setdefault(stage, set())
            else:
                self._stages.pop(stage, None)

    def _emit(self, channel: str, code: str, /, **fields: Any) -> None:
        self._events.append(PlantEvent(channel=channel, code=code, fields={**fields, "snapshot": self.snapshot()}))

    def _check(self) -> None:
        switches = self.switches()
        before, self._switches = self._switches, switches
        for channel, state in switches.items():
            if before.get(channel) != state:
                self._emit(channel, "level_switch_changed", channel=channel, state=state, initial=False)
        pumping = self.pump_path() if PUMP_MAIN in self.commanded else None
        checks = (
            ("clean_fill", "clean_fill_completed", switches["level_clean_max"]),
            ("solution_fill", "solution_fill_completed", switches["level_solution_max"]),
            ("solution_fill", "solution_fill_source_empty",
             pumping == "solution_fill" and not switches["level_clean_min"]),
            ("recirculation", "recirculation_solution_low",
             pumping == "recirculation" and not switches["level_solution_min"]),
            ("irrigation", "irrigation_solution_low",
             pumping == "irrigation" and not switches["level_solution_min"]),
        )
        for stage, code, condition in checks:
            fired = self._stages.get(stage)
            if fired is None:
                continue
            if condition and code not in fired:
                fired.add(code)
                self._emit(STORAGE_STATE, code, stage=stage)
            elif not condition and not code.endswith("_completed"):
                fired.discard(code)  # a low-level alarm re-arms once the water is back

    def emergency_stop(self, channels: set[str], reason: str) -> list[str]:
        """Stop every pump and close every valve among ``channels`` (the node's own); publish
        ``emergency_stop_activated``. Returns the pumps that were running."""
        self.update()
        stopped = sorted(name for name in self.commanded if name in channels and name in self.pumps)
        for name in sorted(channels & (set(self.pumps) | self.commanded)):
            self.commanded.discard(name)
            if name not in self.stuck:
                self.pumps.pop(name, None)
                self.valves.discard(name)
        self._update_stages()
        self._emit(STORAGE_STATE, "emergency_stop_activated", reason=reason, stopped_pumps=stopped)
        self._check()
        for listener in self.listeners:
            listener()
        return stopped

    def emit(self, channel: str, code: str, /, **fields: Any) -> None:
        """Queue an event of the node (e.g. a stage timeout), with the snapshot attached."""
        self._emit(channel, code, **fields)
        for listener in self.listeners:
            listener()

    def refresh(self) -> None:
        """Re-read the switches and stages now (after a fault changed what they read)."""
        self.update()
        self._changed()

    def take_events(self) -> list[PlantEvent]:
        """The events that fired since the last call (oldest first)."""
        self.update()
        events, self._events = self._events, []
        return events

    # -- sensors -------------------------------------------------------------------------------

    def flow_lpm_true(self) -> float:
        """Noise-free flow of the main line (single tank: recirculation plus drain)."""
        flow = self.plant.pump_flow_lpm if self._flowing_path() is not None else 0.0
        if self.draining():
            flow += self.plant.drain_lpm
        return flow

    def pump_current_ma_true(self) -> float:
        """Noise-free current drawn by all running pumps."""
        total = 0.0
        for run in self.pumps.values():
            if run.overcurrent:
                total += _OVERCURRENT_MA
            else:
                total += _MAIN_CURRENT_MA if run.main else _DOSING_CURRENT_MA
        return total

    def read(self, source: str) -> float:
        """A noisy reading of quantity ``source`` (see ``profiles.Sensor.source``); raises ``KeyError``."""
        self.update()
        switch = _SWITCH_SOURCES.get(source, source)
        if switch in LEVEL_SWITCHES:
            return float(self.switches()[switch])
        noise = self._rng.gauss
        values: dict[str, Callable[[], float]] = {
            "ph": lambda: self.ph + noise(0, 0.005),
            "ec": lambda: max(0.0, self.ec + noise(0, 0.005)),
            "water_temp": lambda: self.water_temp_c + noise(0, 0.05),
            "air_temp": lambda: self.air_temp_c + noise(0, 0.05),
            "humidity": lambda: min(100.0, max(0.0, self.humidity_pct + noise(0, 0.2))),
            "co2": lambda: max(0.0, self.co2_ppm + noise(0, 5)),
            "lux": lambda: max(0.0, self.light_pct * 300.0 + noise(0, 3)),
            "flow_lpm": lambda: max(0.0, self.flow_lpm_true() + noise(0, 0.2)) if self.flow_lpm_true() else 0.0,
            "pump_current_ma": lambda: max(0.0, self.pump_current_ma_true() + noise(0, 15))
            if self.pumps else 0.0,
            "clean_level_pct": lambda: min(100.0, max(0.0, self.clean_level_pct + noise(0, 0.1))),
            "solution_level_pct": lambda: min(100.0, max(0.0, self.solution_level_pct + noise(0, 0.1))),
        }
        return values[source]()

    def snapshot(self) -> dict[str, Any]:
        """The two-tank snapshot (PROTOCOL §4 snapshot keys) as ``state{}`` reports it: the switches and
        what the node believes its valves and pump are doing (single tank: ``SINGLE_TANK_SNAPSHOT_KEYS``)."""
        switches = self.switches()
        if self.single_tank:
            return {"solution_level_max": switches["level_solution_max"],
                    "solution_level_min": switches["level_solution_min"],
                    **{name: name in self.commanded for name in (PUMP_MAIN, PUMP_DRAIN, VALVE_FILL)}}
        snapshot: dict[str, Any] = {key: switches[channel] for channel, key in _SNAPSHOT_LEVELS.items()}
        for valve in VALVES:
            snapshot[valve] = valve in self.commanded
        snapshot[PUMP_MAIN] = PUMP_MAIN in self.commanded
        return snapshot
