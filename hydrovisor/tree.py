"""The application's supervision tree (ARCHITECTURE §2)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import asyncpg

from hydrovisor.actors.health_probe import Check, HealthProbe, OnChange
from hydrovisor.actors.rollups import RollupWorker
from hydrovisor.actors.telemetry_writer import StoreSample, TelemetryWriter
from hydrovisor.broker.receipts import RemoteReceipts
from hydrovisor.chaos.worker import ChaosWorker
from hydrovisor.commands.spawn import open_command_specs
from hydrovisor.config import Settings
from hydrovisor.devices.spawn import registered_nodes
from hydrovisor.notifications.wiring import notifier_child
from hydrovisor.process.infra_alerts import broker_alerts, database_alerts
from hydrovisor.process.state_actor import SystemStateActor
from hydrovisor.scheduler.actors import Cadence
from hydrovisor.scheduler.spawn import scheduler_spec
from hydrovisor.store.repos import telemetry
from hydrovisor.supervisors import ChildSpec, SupervisorFlags, supervisor_spec
from hydrovisor.zoneplane.spawn import registered_zones

if TYPE_CHECKING:
    from hydrovisor.services import Services


def root_flags(settings: Settings) -> SupervisorFlags:
    """Root intensity: exceeding it is FATAL (exit code 10)."""
    sup = settings.supervision
    return SupervisorFlags(max_restarts=sup.max_restarts, period=sup.period,
                           liveness_interval=sup.liveness_interval)


def build_tree(
    settings: Settings, services: Services, *, db_check: Check, broker_check: Check
) -> list[ChildSpec]:
    """Children of the root, in start order (stopped in reverse)."""
    sup = settings.supervision
    static = SupervisorFlags(max_restarts=3, period=10.0, liveness_interval=sup.liveness_interval)

    def probe(component: str, check: Check, interval: float, on_change: OnChange) -> ChildSpec:
        return ChildSpec(
            f"{component}_health",
            lambda ctx: HealthProbe.start(ctx, component, check, interval, services.health, on_change=on_change),
            hang_timeout=sup.hang_timeout,
        )

    def pool() -> asyncpg.Pool:
        return services.db.pool

    def dynamic(cap: int) -> SupervisorFlags:
        return SupervisorFlags(dynamic=True, max_children=cap, max_restarts=10, period=10.0,
                               liveness_interval=sup.liveness_interval)

    async def write(batch: Sequence[StoreSample]) -> int:
        return (await services.telemetry_store.write(batch)).stored

    async def advance(bucket: str) -> int:
        return await telemetry.advance_rollups(services.db.pool, bucket)

    receipts = RemoteReceipts(services.receipts, services.bridge.loop)
    writer = ChildSpec("telemetry_writer", lambda ctx: TelemetryWriter.start(
        ctx, write=write, metrics=services.writer_metrics, receipts=receipts,
        health=services.health), hang_timeout=sup.hang_timeout)
    rollups = ChildSpec("rollups", lambda ctx: RollupWorker.start(ctx, advance=advance),
                        hang_timeout=sup.hang_timeout)
    control = services.control
    state = ChildSpec("state", lambda ctx: SystemStateActor.start(ctx, control.machine, control.failing, control.apply),
                      hang_timeout=sup.hang_timeout)
    # no hang probe: blocking is what the chaos worker is for, each fault bounds itself
    chaos = ChildSpec("chaos", ChaosWorker.start, hang_timeout=None)
    return [
        supervisor_spec("system", static, (state, chaos)),  # first up, last down: it watches the rest
        supervisor_spec("store", static, (
            probe("db", db_check, settings.database.health_interval, database_alerts(pool)), writer, rollups,
            notifier_child(settings, services, hang_timeout=sup.hang_timeout))),  # pending/DLQ -> webhooks
        supervisor_spec("broker", static, (probe("broker", broker_check, 2.0, broker_alerts(pool)),)),
        supervisor_spec("nodes", dynamic(sup.max_nodes), lambda: registered_nodes(services.devices)),
        supervisor_spec("zones", dynamic(sup.max_zones), lambda: registered_zones(services.zone_plane)),
        supervisor_spec("commands", dynamic(sup.max_commands),
                        lambda: open_command_specs(services.system, services.commands)),
        scheduler_spec(services.system, services.scheduler, Cadence(), liveness_interval=sup.liveness_interval,
                       hang_timeout=sup.hang_timeout),  # last up: it starts work in zones and commands
    ]
