"""What the HTTP layer and the tree share: one object built by the app, passed explicitly."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from hydrovisor.actors.health_probe import HealthBoard
from hydrovisor.broker.embedded import EmbeddedBroker
from hydrovisor.config import Settings
from hydrovisor.runtime.bridge import Bridge
from hydrovisor.runtime.loop_lag import LoopLagMonitor
from hydrovisor.store.database import Database
from hydrovisor.supervisors import ActorSystem


@dataclass
class Services:
    """Long-lived components of one running instance (all created on the loop)."""

    settings: Settings
    registry: CollectorRegistry
    bridge: Bridge
    system: ActorSystem
    db: Database
    broker: EmbeddedBroker
    health: HealthBoard
    loop_lag: LoopLagMonitor
