"""Reading the simulator's plant (the physical truth) into the observer.

``plant_reading`` copies what a ``hydrovisor.sim.physics.WaterPhysics`` holds right now, without stepping it:
``WaterPhysics.update()`` would draw from the plant's seeded noise generator and so change the run being
observed. A running node steps its plant often enough while water moves (``NodeOptions.plant_tick_s``).

``WaterPhysics`` is imported for type checking only, so importing the observer at run time loads nothing
of the simulator (which itself depends on ``hydrovisor.zones.clock``): the observer shares no code with the
automation, not even transitively.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from hydrovisor.observer.model import PlantReading

if TYPE_CHECKING:
    from hydrovisor.observer.observer import SafetyObserver
    from hydrovisor.sim.physics import WaterPhysics

__all__ = ["PlantSampler", "plant_reading"]

log = logging.getLogger(__name__)


def plant_reading(physics: WaterPhysics) -> PlantReading:
    """What ``physics`` physically does right now: tank levels, switches, running pumps, open valves."""
    return PlantReading(
        clean_level_pct=float(physics.clean_level_pct),
        solution_level_pct=float(physics.solution_level_pct),
        min_switch_pct=float(physics.plant.min_switch_pct),
        switches=dict(physics.switches()),
        pumps=frozenset(physics.pumps),
        valves=frozenset(physics.valves),
        commanded=frozenset(physics.commanded),
    )


class PlantSampler:
    """Feeds ``observer.observe_plant`` with every zone's plant every ``interval_s`` real seconds.

    ``plants`` maps zone uid -> the ``WaterPhysics`` its nodes share; ``clock`` gives the zone-clock time
    (the same clock the ``MqttTap`` uses, so both feeds are on one time line). Runs on the event loop that
    calls ``start()``, like the simulated nodes whose plants it reads (no locking needed).
    """

    def __init__(self, observer: SafetyObserver, plants: Mapping[str, WaterPhysics], clock: Callable[[], float],
                 *, interval_s: float = 0.05) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, not {interval_s!r}")
        self._observer = observer
        self._plants = dict(plants)
        self._clock = clock
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self.samples = 0

    def add(self, zone_uid: str, physics: WaterPhysics) -> None:
        """Sample one more zone (or replace its plant)."""
        self._plants[zone_uid] = physics

    def sample_now(self) -> None:
        """Take one reading of every plant now (also what ``MqttTap`` calls right before a command)."""
        at = self._clock()
        for zone_uid, physics in self._plants.items():
            self._observer.observe_plant(zone_uid, plant_reading(physics), at)
        self.samples += 1

    def start(self) -> None:
        """Start sampling in the background (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="observer-plant-sampler")

    async def stop(self) -> None:
        """Stop sampling; takes one last reading so the end state is judged too."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.sample_now()

    async def _run(self) -> None:
        while True:
            try:
                self.sample_now()
            except Exception:  # a sampling bug must not end the observation silently: log, keep going
                log.exception("plant sampling failed", extra={"event": "observer_sample_failed"})
            await asyncio.sleep(self._interval_s)
