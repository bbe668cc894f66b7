"""Fixtures of the workflow tests: an instance on a scaled clock with a two-tank zone (``tests.zone_plant``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.app.conftest import Running, node_factory, process, start_app  # noqa: F401 - fixtures
from tests.zone_plant import PlantZone

SCALE = 20.0  # zone seconds per real second: the node's ±10 s command window is half a real second


@pytest.fixture
def plant_instance(start_app: Callable[..., Running]) -> Running:  # noqa: F811 - the fixture above
    """An instance whose zone clock runs ``SCALE`` times faster (chaos enabled: tests crash workflow actors)."""
    return start_app(time_scale=SCALE, chaos_enabled=True)


@pytest.fixture
def plant_zone(plant_instance: Running) -> Iterator[Callable[..., PlantZone]]:
    """Factory: ``plant_zone(zone_uid="zn-1", **PlantZone options)`` -> a started zone (stopped after)."""
    made: list[PlantZone] = []

    def make(zone_uid: str = "zn-1", **options: Any) -> PlantZone:
        zone = PlantZone(plant_instance, zone_uid, **options)
        made.append(zone)
        zone.start()
        return zone

    yield make
    for zone in made:
        zone.stop()
