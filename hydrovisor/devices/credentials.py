"""Keeps the broker's device directory in step with the node registry."""

from __future__ import annotations

from hydrovisor.broker import DeviceDirectory, DeviceIdentity
from hydrovisor.devices.registry import NodeRegistry, NodeView


def identities(view: NodeView, password_hash: str, registry: NodeRegistry) -> list[DeviceIdentity]:
    """A node may log in with its uid or its hardware id; both get the same ACL namespace.

    While a bind is pending the node will reconnect in the target namespace, so that one is
    used (PROTOCOL §7 step 4); the temp namespace is always allowed by the ACL.
    """
    zone = view.pending_zone_uid or view.zone_uid
    gh = registry.greenhouse_of(zone) if zone else None
    return [
        DeviceIdentity(username=name, hardware_id=view.hardware_id, password_hash=password_hash,
                       node_uid=view.uid, gh_uid=gh, zone_uid=zone if gh else None)
        for name in dict.fromkeys((view.uid, view.hardware_id))
    ]


def sync_binding(directory: DeviceDirectory, registry: NodeRegistry, view: NodeView) -> None:
    """Move a node's credentials to its new namespace (no-op for nodes without credentials)."""
    current = directory.get(view.uid) or directory.get(view.hardware_id)
    if current is None:
        return
    for identity in identities(view, current.password_hash, registry):
        directory.put(identity)
