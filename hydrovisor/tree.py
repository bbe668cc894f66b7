"""The application's supervision tree (ARCHITECTURE §2)."""

from __future__ import annotations

from hydrovisor.actors.health_probe import Check, HealthBoard, HealthProbe
from hydrovisor.config import Settings
from hydrovisor.supervisors import ChildSpec, SupervisorFlags, supervisor_spec


def root_flags(settings: Settings) -> SupervisorFlags:
    """Root intensity: exceeding it is FATAL (exit code 10)."""
    sup = settings.supervision
    return SupervisorFlags(max_restarts=sup.max_restarts, period=sup.period,
                           liveness_interval=sup.liveness_interval)


def build_tree(
    settings: Settings, board: HealthBoard, db_check: Check, broker_check: Check
) -> list[ChildSpec]:
    """Children of the root, in start order (stopped in reverse)."""
    sup = settings.supervision
    static = SupervisorFlags(max_restarts=3, period=10.0, liveness_interval=sup.liveness_interval)

    def probe(component: str, check: Check, interval: float) -> ChildSpec:
        return ChildSpec(
            f"{component}_health",
            lambda ctx: HealthProbe.start(ctx, component, check, interval, board),
            hang_timeout=sup.hang_timeout,
        )

    def dynamic(cap: int) -> SupervisorFlags:
        return SupervisorFlags(dynamic=True, max_children=cap, max_restarts=10, period=10.0,
                               liveness_interval=sup.liveness_interval)

    return [
        supervisor_spec("store", static, (probe("db", db_check, settings.database.health_interval),)),
        supervisor_spec("broker", static, (probe("broker", broker_check, 2.0),)),
        supervisor_spec("nodes", dynamic(sup.max_nodes)),
        supervisor_spec("zones", dynamic(sup.max_zones)),
        supervisor_spec("commands", dynamic(sup.max_commands)),
    ]
