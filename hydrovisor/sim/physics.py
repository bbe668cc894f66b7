"""A small, seeded water model behind a simulated node's sensors.

Two tanks (clean water and nutrient solution, in % of capacity), solution pH/EC/temperature, the air of the
greenhouse, a main pump and dosing pumps. ``advance(dt)`` is deterministic for a given seed and sequence of
steps; ``update()`` advances by the simulated time elapsed on the clock (real time ÷ ``time_scale``), which
is what a running node uses. Readings add a little seeded noise.

- The main pump (``main=True``) drains the solution tank at ~12 l/min while it has flow; with ``flowing=False``
  (the ``no_flow`` fault) or an empty tank nothing moves and the flow sensor reads 0.
- A running pump draws current (main ~1.8 A, dosing ~0.25 A, ~3.6 A when ``overcurrent``).
- pH and EC drift slowly (pH up towards 6.8, EC down with plant uptake); acid/base doses move pH, nutrient
  doses raise EC. Open fill valves move water between the tanks.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["OVERCURRENT_THRESHOLD_MA", "PumpRun", "WaterPhysics"]

_TANK_L = 200.0
_MAIN_FLOW_LPM = 12.0
_MAIN_CURRENT_MA = 1800.0
_DOSING_CURRENT_MA = 250.0
_OVERCURRENT_MA = 3600.0
OVERCURRENT_THRESHOLD_MA = 2500.0
_FILL_PCT_PER_S = 0.2
_TRANSFER_PCT_PER_S = 0.15
_PH_PER_ML = 0.01  # per ml of acid/base in the 200 l tank
_EC_PER_ML = 0.004  # mS/cm per ml of nutrient concentrate
_LEVEL_SWITCH_MIN, _LEVEL_SWITCH_MAX = 10.0, 95.0


class PumpRun(msgspec.Struct, frozen=True, kw_only=True):
    """A pump that is running: ``main`` pumps move solution, ``flowing=False`` means no water moves."""

    main: bool
    flowing: bool = True
    overcurrent: bool = False


def _toward(value: float, target: float, rate: float, dt: float) -> float:
    return target + (value - target) * math.exp(-rate * dt)


class WaterPhysics:
    """The simulated water and air of one node (see the module docstring)."""

    def __init__(self, seed: int | None = None, *, time_scale: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._rng = random.Random(seed)
        self._time_scale = time_scale
        self._clock = clock
        self._last = clock()
        self.clean_level_pct = 80.0 + self._rng.uniform(-5, 5)
        self.solution_level_pct = 70.0 + self._rng.uniform(-5, 5)
        self.ph = 6.0 + self._rng.uniform(-0.3, 0.3)
        self.ec = 1.6 + self._rng.uniform(-0.2, 0.2)
        self.water_temp_c = 21.0 + self._rng.uniform(-1, 1)
        self.air_temp_c = 24.0 + self._rng.uniform(-2, 2)
        self.humidity_pct = 65.0 + self._rng.uniform(-5, 5)
        self.co2_ppm = 600.0 + self._rng.uniform(-50, 50)
        self.light_pct = 0.0
        self.pumps: dict[str, PumpRun] = {}
        self.valves: set[str] = set()

    # -- time ----------------------------------------------------------------------------------

    def update(self) -> None:
        """Advance by the simulated time elapsed since the last update."""
        now = self._clock()
        elapsed, self._last = max(0.0, now - self._last), now
        if elapsed > 0:
            self.advance(elapsed / self._time_scale)

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
        if self.flow_lpm_true() > 0:
            drained = _MAIN_FLOW_LPM / 60.0 * dt / _TANK_L * 100.0
            self.solution_level_pct = max(0.0, self.solution_level_pct - drained)
        if "valve_clean_fill" in self.valves:
            self.clean_level_pct = min(100.0, self.clean_level_pct + _FILL_PCT_PER_S * dt)
        if "valve_solution_fill" in self.valves:
            moved = min(self.clean_level_pct, _TRANSFER_PCT_PER_S * dt, 100.0 - self.solution_level_pct)
            self.clean_level_pct -= moved
            self.solution_level_pct += moved

    # -- actuators -----------------------------------------------------------------------------

    def start_pump(self, name: str, *, main: bool, flowing: bool = True, overcurrent: bool = False) -> None:
        """Start pump ``name`` (restarting it replaces the previous run)."""
        self.update()
        self.pumps[name] = PumpRun(main=main, flowing=flowing, overcurrent=overcurrent)

    def stop_pump(self, name: str) -> None:
        """Stop pump ``name`` (no-op when it is not running)."""
        self.update()
        self.pumps.pop(name, None)

    def set_valve(self, name: str, is_open: bool) -> None:
        """Open or close valve ``name``."""
        self.update()
        if is_open:
            self.valves.add(name)
        else:
            self.valves.discard(name)

    def set_light(self, pct: float) -> None:
        """Set the grow light to ``pct`` % (0-100)."""
        self.update()
        self.light_pct = min(100.0, max(0.0, pct))

    def dose(self, kind: str, ml: float) -> None:
        """Add ``ml`` of ``acid``, ``base`` or ``nutrient`` to the solution tank."""
        self.update()
        if kind == "acid":
            self.ph = max(3.0, self.ph - _PH_PER_ML * ml)
        elif kind == "base":
            self.ph = min(9.0, self.ph + _PH_PER_ML * ml)
        elif kind == "nutrient":
            self.ec = min(5.0, self.ec + _EC_PER_ML * ml)

    # -- sensors -------------------------------------------------------------------------------

    def flow_lpm_true(self) -> float:
        """Noise-free flow of the main line."""
        flowing = any(run.main and run.flowing for run in self.pumps.values())
        return _MAIN_FLOW_LPM if flowing and self.solution_level_pct > 0 else 0.0

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
            "pump_current_ma": lambda: max(0.0, self.pump_current_ma_true() + noise(0, 15)),
            "clean_level_pct": lambda: min(100.0, max(0.0, self.clean_level_pct + noise(0, 0.1))),
            "solution_level_pct": lambda: min(100.0, max(0.0, self.solution_level_pct + noise(0, 0.1))),
            "clean_level_min": lambda: float(self.clean_level_pct >= _LEVEL_SWITCH_MIN),
            "solution_level_min": lambda: float(self.solution_level_pct >= _LEVEL_SWITCH_MIN),
        }
        return values[source]()

    def snapshot(self) -> dict[str, Any]:
        """The two-tank snapshot (PROTOCOL §4 snapshot keys) as ``state{}`` reports it."""
        self.update()
        snapshot: dict[str, Any] = {
            "clean_level_max": self.clean_level_pct >= _LEVEL_SWITCH_MAX,
            "clean_level_min": self.clean_level_pct >= _LEVEL_SWITCH_MIN,
            "solution_level_max": self.solution_level_pct >= _LEVEL_SWITCH_MAX,
            "solution_level_min": self.solution_level_pct >= _LEVEL_SWITCH_MIN,
        }
        for valve in ("valve_clean_fill", "valve_clean_supply", "valve_solution_fill", "valve_solution_supply",
                      "valve_irrigation"):
            snapshot[valve] = valve in self.valves
        snapshot["pump_main"] = "pump_main" in self.pumps
        return snapshot
