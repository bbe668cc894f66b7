"""What node actors and the router share: storage, the registry view, the broker, timings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from hydrovisor.broker.transport import Transport
from hydrovisor.devices.registry import BootRows, NodeRegistry, NodeView
from hydrovisor.store.database import Database
from hydrovisor.zones.clock import Clock, SystemClock


@dataclass(frozen=True)
class DevicePlane:
    """Dependencies of the device plane, built once by the app."""

    db: Database
    registry: NodeRegistry
    transport: Transport
    on_binding_changed: Callable[[NodeView], None]
    # (zone uid, node uid, online, unix time): a node of a zone went online or offline; any thread
    on_liveness: Callable[[str, str, bool, float], None] = lambda *_: None
    # (zone uid): the channels a node of that zone reported were stored; any thread
    on_channels_changed: Callable[[str], None] = lambda _: None
    boot_rows: BootRows = field(default_factory=BootRows)
    clock: Clock = field(default_factory=SystemClock)  # the devices' wall time (time responses)
    offline_after: float = 120.0
    bind_expiry: float = 1800.0
    liveness_interval: float = 10.0
    persist_seen_every: float = 60.0

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish to devices (QoS 1, not retained: PROTOCOL §1)."""
        await self.transport.publish(topic, payload, qos=1)

    def client_connected(self, client_id: str) -> bool:
        """Whether a device session with that client id is live (call on the loop)."""
        return client_id in self.transport.connected_clients()
