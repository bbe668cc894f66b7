"""In-memory view of the node registry, consulted on every device message.

PostgreSQL is the truth; this view is loaded from it at start and updated by whoever changes a
node (node actors, HTTP handlers) right after the database write succeeded. Reads and writes
are thread-safe (the loop reads, actors write).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import msgspec

from hydrovisor.store.repos.nodes import NodeRecord


class NodeView(msgspec.Struct, frozen=True):
    """What routing and validation need to know about one node."""

    uid: str
    hardware_id: str
    zone_uid: str | None
    gh_uid: str | None
    validated: bool
    pending_zone_uid: str | None = None


class NodeRegistry:
    """Thread-safe maps uid -> node, hardware id -> uid, zone -> greenhouse."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_uid: dict[str, NodeView] = {}
        self._uid_by_hw: dict[str, str] = {}
        self._zone_gh: dict[str, str] = {}
        self._last_seen: dict[str, float] = {}

    def put(self, node: NodeView) -> None:
        """Insert or replace a node."""
        with self._lock:
            old = self._by_uid.get(node.uid)
            if old is not None and old.hardware_id != node.hardware_id:
                self._uid_by_hw.pop(old.hardware_id, None)
            self._by_uid[node.uid] = node
            self._uid_by_hw[node.hardware_id] = node.uid

    def get(self, uid: str) -> NodeView | None:
        """Node by uid."""
        with self._lock:
            return self._by_uid.get(uid)

    def by_hardware_id(self, hardware_id: str) -> NodeView | None:
        """Node by hardware id (the ``{node}`` segment in the temp namespace)."""
        with self._lock:
            uid = self._uid_by_hw.get(hardware_id)
            return self._by_uid.get(uid) if uid else None

    def put_zone(self, zone_uid: str, greenhouse_uid: str) -> None:
        """Remember which greenhouse a zone belongs to."""
        with self._lock:
            self._zone_gh[zone_uid] = greenhouse_uid

    def forget_zone(self, zone_uid: str) -> None:
        """The zone was deleted."""
        with self._lock:
            self._zone_gh.pop(zone_uid, None)

    def zones(self) -> list[str]:
        """Every zone uid, sorted."""
        with self._lock:
            return sorted(self._zone_gh)

    def greenhouse_of(self, zone_uid: str) -> str | None:
        """Greenhouse uid of a zone."""
        with self._lock:
            return self._zone_gh.get(zone_uid)

    def uids(self) -> list[str]:
        """Every registered node uid, sorted."""
        with self._lock:
            return sorted(self._by_uid)

    def touch(self, uid: str, at: float) -> None:
        """Record traffic from a node (called per message on the hot path: one dict store)."""
        self._last_seen[uid] = at

    def last_seen(self, uid: str) -> float | None:
        """Unix time of the node's latest traffic seen by the router."""
        return self._last_seen.get(uid)

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_uid)


class BootRows:
    """The node rows read at start (one query for the whole fleet), each handed to the first incarnation
    of its node actor, so a fleet of thousands starts without a query per node. Later incarnations load
    their own row: by then it may have changed. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: dict[str, NodeRecord] = {}

    def fill(self, rows: Iterable[NodeRecord]) -> None:
        """The rows just loaded."""
        with self._lock:
            self._rows = {row.uid: row for row in rows}

    def take(self, uid: str) -> NodeRecord | None:
        """``uid``'s row, once."""
        with self._lock:
            return self._rows.pop(uid, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)
