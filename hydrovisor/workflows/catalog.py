"""The workflow types: their parameters, the topology they need, whether the zone must be ``ready``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from hydrovisor.workflows.context import WorkflowContext
from hydrovisor.workflows.effects import Script
from hydrovisor.workflows.irrigation import correction, irrigation
from hydrovisor.workflows.two_tank import two_tank_startup
from hydrovisor.workflows.water_change import water_change
from hydrovisor.zones.roles import Role


class NoParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A workflow that takes no parameters (unknown keys are refused: a typo must not pass silently)."""


class IrrigationParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``irrigation``: how long the pump runs (PROTOCOL §5 caps ``duration_ms`` at 300,000)."""

    duration_s: Annotated[int, msgspec.Meta(ge=1, le=300)]


@dataclass(frozen=True)
class Kind:
    """A workflow type. ``gate_role``: the start the safety gate is asked about before it is accepted;
    ``alert``: raised on every failure; ``restore``: roles put back on after a failure's compensating stop
    (their fail-safe state: the normally-closed recirculation pump)."""

    name: str
    params: type[Any]
    script: Callable[[WorkflowContext, str | None], Script]
    topology: str
    needs_ready: bool
    first_stage: str
    gate_role: Role
    alert: str | None = None
    restore: tuple[Role, ...] = ()


KINDS: dict[str, Kind] = {kind.name: kind for kind in (
    Kind("two_tank_startup", NoParams, two_tank_startup, "two_tank", False, "startup", Role.VALVE_CLEAN_FILL),
    Kind("irrigation", IrrigationParams, irrigation, "two_tank", True, "irrigation_check", Role.PUMP_MAIN),
    Kind("correction", NoParams, correction, "two_tank", True, "correction_check", Role.PUMP_MAIN),
    Kind("water_change", NoParams, water_change, "single_tank", False, "normal_recirc", Role.PUMP_DRAIN,
         alert="biz_water_change_failed", restore=(Role.PUMP_MAIN,)),
)}
