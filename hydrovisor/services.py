"""What the HTTP layer and the tree share: one object built by the app, passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from hydrovisor.actors.health_probe import HealthBoard
from hydrovisor.actors.telemetry_writer import WriterMetrics
from hydrovisor.broker import DeviceDirectory, EmbeddedBroker
from hydrovisor.broker.receipts import ReceiptBook
from hydrovisor.chaos.engine import ChaosEngine
from hydrovisor.commands.plane import CommandPlane
from hydrovisor.commands.submit import CommandSubmitter
from hydrovisor.config import Settings
from hydrovisor.devices.credentials import identities
from hydrovisor.devices.ingest import TelemetryCounters
from hydrovisor.devices.plane import DevicePlane
from hydrovisor.devices.registry import NodeView
from hydrovisor.devices.telemetry_store import TelemetryStore
from hydrovisor.process.control import SystemControl
from hydrovisor.runtime.bridge import Bridge
from hydrovisor.runtime.loop_lag import LoopLagMonitor
from hydrovisor.scheduler.plane import SchedulerPlane
from hydrovisor.store.database import Database
from hydrovisor.store.repos.nodes import NodeRecord
from hydrovisor.supervisors import ActorSystem
from hydrovisor.workflows.runtime import WorkflowRuntime
from hydrovisor.zoneplane.plane import ZonePlane
from hydrovisor.zoneplane.runtime import ZoneRuntime


@dataclass
class Services:
    """Long-lived components of one running instance (all created on the loop)."""

    settings: Settings
    registry: CollectorRegistry
    bridge: Bridge
    system: ActorSystem
    db: Database
    broker: EmbeddedBroker
    directory: DeviceDirectory
    health: HealthBoard
    loop_lag: LoopLagMonitor
    devices: DevicePlane
    telemetry: TelemetryCounters
    writer_metrics: WriterMetrics
    commands: CommandPlane
    control: SystemControl
    chaos: ChaosEngine
    receipts: ReceiptBook  # receipts of samples handed to the telemetry writer
    telemetry_store: TelemetryStore
    zone_plane: ZonePlane
    zones: ZoneRuntime
    submitter: CommandSubmitter  # the one command path (HTTP API, workflows)
    workflows: WorkflowRuntime
    scheduler: SchedulerPlane  # tasks: planning, dispatch, recovery (leader only)

    def credentials_changed(self, node: NodeRecord, password_hash: str) -> None:
        """A node got new MQTT credentials: the broker accepts them from now on."""
        view = self.devices.registry.get(node.uid) or NodeView(
            uid=node.uid, hardware_id=node.hardware_id, zone_uid=node.zone_uid, gh_uid=None,
            validated=node.validated, pending_zone_uid=node.pending_zone_uid)
        for identity in identities(view, password_hash, self.devices.registry):
            self.directory.put(identity)
