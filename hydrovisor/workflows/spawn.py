"""Paths and child specs of workflow actors (children of their zone's supervisor)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pykka

from hydrovisor.supervisors import ActorContext, ChildSpec, Execution, Restart
from hydrovisor.workflows.plane import WorkflowPlane
from hydrovisor.zoneplane.spawn import zone_path

if TYPE_CHECKING:
    from hydrovisor.workflows.water_cycle import WaterCyclePlane

WATER_CYCLE = "water_cycle"


def workflow_path(zone_uid: str, wf_id: str) -> str:
    """``/zones/<uid>/<wf_id>``."""
    return f"{zone_path(zone_uid)}/{wf_id}"


def workflow_spec(zone_uid: str, wf_id: str, plane: WorkflowPlane) -> ChildSpec:
    """Transient: a crashed incarnation is replaced by one that recovers from the row (stop everything,
    resume only a resumable stage); gone once its outcome is stored. Pooled: it never blocks."""
    from hydrovisor.workflows.actor import WorkflowActor  # noqa: PLC0415 - the actor imports the zone actor

    def start(ctx: ActorContext) -> pykka.ActorRef[Any]:
        return WorkflowActor.start(ctx, wf_id=wf_id, zone_uid=zone_uid, plane=plane)

    return ChildSpec(wf_id, start, restart=Restart.TRANSIENT, hang_timeout=plane.hang_timeout,
                     execution=Execution.POOL)


def water_cycle_path(zone_uid: str) -> str:
    """``/zones/<uid>/water_cycle``."""
    return f"{zone_path(zone_uid)}/{WATER_CYCLE}"


def water_cycle_spec(zone_uid: str, plane: WaterCyclePlane) -> ChildSpec:
    """Permanent while the zone is single-tank (its zone actor asks for it, and for its removal, as the
    settings change); pooled."""
    from hydrovisor.workflows.water_cycle import WaterCycleActor  # noqa: PLC0415 - as above

    def start(ctx: ActorContext) -> pykka.ActorRef[Any]:
        return WaterCycleActor.start(ctx, zone_uid=zone_uid, plane=plane)

    return ChildSpec(WATER_CYCLE, start, restart=Restart.PERMANENT, hang_timeout=plane.workflows.hang_timeout,
                     execution=Execution.POOL)
