"""What node actors and the router share: storage, the registry view, publishing, timings."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from hydrovisor.devices.registry import NodeRegistry, NodeView
from hydrovisor.store.database import Database

Publish = Callable[[str, bytes], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class DevicePlane:
    """Dependencies of the device plane, built once by the app."""

    db: Database
    registry: NodeRegistry
    publish: Publish
    on_binding_changed: Callable[[NodeView], None]
    client_connected: Callable[[str], bool]
    offline_after: float = 120.0
    bind_expiry: float = 1800.0
    liveness_interval: float = 10.0
    persist_seen_every: float = 60.0
