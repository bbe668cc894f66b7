"""Fill the in-memory views (node registry, broker directory) from PostgreSQL at start."""

from __future__ import annotations

import logging

from hydrovisor.broker import DeviceDirectory
from hydrovisor.devices.credentials import identities
from hydrovisor.devices.registry import BootRows, NodeRegistry, NodeView
from hydrovisor.store.database import Database
from hydrovisor.store.repos import fleet, nodes

log = logging.getLogger(__name__)


async def load_registry(db: Database, registry: NodeRegistry, directory: DeviceDirectory, boot_rows: BootRows) -> None:
    """Zones, nodes and device credentials, as stored; the node rows also go to ``boot_rows``."""
    pool = db.pool
    for zone in await fleet.list_zones(pool):
        registry.put_zone(zone.uid, zone.greenhouse_uid)
    rows = await nodes.list_nodes(pool)
    boot_rows.fill(rows)
    for node in rows:
        registry.put(NodeView(uid=node.uid, hardware_id=node.hardware_id, zone_uid=node.zone_uid,
                              gh_uid=registry.greenhouse_of(node.zone_uid) if node.zone_uid else None,
                              validated=node.validated, pending_zone_uid=node.pending_zone_uid))
    credentials = await nodes.mqtt_credentials(pool)
    for uid, _hardware_id, password_hash, _zone in credentials:
        view = registry.get(uid)
        if view is not None:
            for identity in identities(view, password_hash, registry):
                directory.put(identity)
    log.info("registry loaded", extra={"event": "registry_loaded", "nodes": len(registry),
                                        "credentials": len(credentials)})
