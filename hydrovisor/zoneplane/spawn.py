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
                            liveness_interval=zone_liveness_interval(plane))
    actor = ChildSpec(ZONE_ACTOR, lambda ctx: ZoneActor.start(ctx, uid=uid, plane=plane),
                      restart=Restart.PERMANENT, hang_timeout=plane.hang_timeout, execution=Execution.POOL)
    return supervisor_spec(uid, flags, (actor,), restart=Restart.PERMANENT)


def zone_liveness_interval(plane: ZonePlane) -> float:
    """How often ``/zones/<uid>`` checks its zone actor: ``min(5 x liveness_interval, hang_timeout / 3)``, never
    more often than ``liveness_interval`` (what every other supervisor uses).

    A zone supervisor's liveness check does one thing for its one child: abandon it once a handler has
    been busy longer than ``hang_timeout`` (the zone spec has no restart backoff to reset). A check every
    ``I`` seconds sees a hang after ``hang_timeout`` plus at most ``I``; with ``I <= hang_timeout / 3`` that
    is at most a third later (35 s instead of 31 s at the defaults: 30 s, checked every 5 s instead of 1 s),
    while the supervisors of 1,000 zones wake their threads 200 times a second instead of 1,000. The zone
    actor's handlers are short by contract (it never blocks; the pool flags a stuck turn on its own,
    ``stuck_after_s``), so a hang is a bug being contained, not a latency that a few seconds would change.
    Without a hang timeout there is nothing to probe often: the longer interval then.
    """
    longer = plane.liveness_interval * 5
    if plane.hang_timeout is None:
        return longer
    return max(plane.liveness_interval, min(longer, plane.hang_timeout / 3))


def registered_zones(plane: ZonePlane) -> list[ChildSpec]:
    """Specs of every zone in the registry view (``/zones`` starts them all at boot)."""
    return [zone_spec(uid, plane) for uid in plane.registry.zones()]
