"""Paths and child specs of the zone subtrees."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hydrovisor.supervisors import ChildSpec, Execution, Restart, SupervisorFlags, supervisor_spec

if TYPE_CHECKING:
    from hydrovisor.zoneplane.plane import ZonePlane

ZONES = "/zones"
ZONE_ACTOR = "zone"


def zone_path(uid: str) -> str:
    """The zone's supervisor."""
    return f"{ZONES}/{uid}"


def zone_actor_path(uid: str) -> str:
    """The zone actor: the zone's live state and safety verdicts."""
    return f"{ZONES}/{uid}/{ZONE_ACTOR}"


def zone_spec(uid: str, plane: ZonePlane) -> ChildSpec:
    """``/zones/<uid>``: a supervisor whose first child is the zone actor; workflows will join it as
    temporary children. Its intensity is its own: a zone that keeps failing escalates to ``/zones``,
    which restarts that zone's subtree only (one_for_one), never another zone. The zone actor never
    blocks and runs pooled; its supervisor has a thread of its own (supervisors wait for children)."""
    from hydrovisor.actors.zone import ZoneActor  # noqa: PLC0415 - the actor imports the plane

    flags = SupervisorFlags(dynamic=True, max_restarts=5, period=30.0,
                            liveness_interval=plane.liveness_interval)
    actor = ChildSpec(ZONE_ACTOR, lambda ctx: ZoneActor.start(ctx, uid=uid, plane=plane),
                      restart=Restart.PERMANENT, hang_timeout=plane.hang_timeout, execution=Execution.POOL)
    return supervisor_spec(uid, flags, (actor,), restart=Restart.PERMANENT)


def registered_zones(plane: ZonePlane) -> list[ChildSpec]:
    """Specs of every zone in the registry view (``/zones`` starts them all at boot)."""
    return [zone_spec(uid, plane) for uid in plane.registry.zones()]
