"""How often a zone's supervisor checks its zone actor for a hang."""

from __future__ import annotations

from typing import Any

import pytest

from hydrovisor.zoneplane.plane import ZonePlane
from hydrovisor.zoneplane.spawn import zone_liveness_interval, zone_spec
from hydrovisor.zones.clock import SystemClock


def _plane(**values: Any) -> ZonePlane:
    return ZonePlane(db=None, registry=None, clock=SystemClock(), **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(("liveness", "hang", "interval"), [
    (1.0, 30.0, 5.0),  # the defaults: a hang is seen after 30 to 35 s (was 30 to 31 s)
    (0.1, 30.0, 0.5),  # the test settings
    (1.0, 9.0, 3.0),  # never more than a third of the hang timeout
    (1.0, 1.5, 1.0),  # never more often than every other supervisor
    (1.0, None, 5.0),  # no hang to see: only the longer interval
])
def test_a_zone_supervisor_checks_less_often_within_a_third_of_the_hang_timeout(
    liveness: float, hang: float | None, interval: float,
) -> None:
    plane = _plane(liveness_interval=liveness, hang_timeout=hang)
    assert zone_liveness_interval(plane) == pytest.approx(interval)
    assert zone_spec("zn-1", plane).id == "zn-1"
