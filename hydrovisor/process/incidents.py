"""Incidents: what went wrong, when, and what the process looked like at that moment.

Kept in memory (newest ``keep``) and as one JSON file per incident under ``<data_dir>/incidents``,
written from whichever thread opens it (the loop guard writes while the loop is stalled, so this
never touches asyncio). Files outlive the process: after a FATAL exit the next start lists the
incident that ended the previous one. Deliberately not in PostgreSQL: the database may be the
thing that failed.
"""

from __future__ import annotations

import enum
import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path

import msgspec

from hydrovisor.process.states import Transition
from hydrovisor.process.task_dump import TaskDump

log = logging.getLogger(__name__)


class IncidentKind(enum.StrEnum):
    """What opened the incident."""

    LOOP_STALL = "loop_stall"
    STATE_TRANSITION = "state_transition"
    CHAOS = "chaos"
    POOL_TURN_STUCK = "pool_turn_stuck"


class Incident(msgspec.Struct, frozen=True):
    """One incident; ``dump`` holds the task and thread stacks taken when it opened (if any)."""

    incident_id: str
    kind: IncidentKind
    title: str
    reason: str
    owner: str
    opened_at: float  # unix time
    closed_at: float | None = None
    duration_s: float | None = None
    related: list[str] = []
    attributes: dict[str, str] = {}
    transition: Transition | None = None
    dump: TaskDump | None = None

    @property
    def is_open(self) -> bool:
        """Still going on (a stall not over, a chaos run not ended, a state not left, a turn still stuck)."""
        return self.closed_at is None


class IncidentSummary(msgspec.Struct, frozen=True):
    """An incident without its dump, for lists."""

    incident_id: str
    kind: IncidentKind
    title: str
    reason: str
    owner: str
    opened_at: float
    closed_at: float | None
    duration_s: float | None
    related: list[str]
    attributes: dict[str, str]
    has_dump: bool


def summarize(incident: Incident) -> IncidentSummary:
    """The list view of one incident."""
    return IncidentSummary(
        incident_id=incident.incident_id, kind=incident.kind, title=incident.title, reason=incident.reason,
        owner=incident.owner, opened_at=incident.opened_at, closed_at=incident.closed_at,
        duration_s=incident.duration_s, related=incident.related, attributes=incident.attributes,
        has_dump=incident.dump is not None)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Incident)


class IncidentStore:
    """Thread-safe incidents, newest last; ``directory=None`` keeps them in memory only."""

    def __init__(self, directory: Path | None, keep: int = 200) -> None:
        self._dir = directory
        self._keep = keep
        self._lock = threading.Lock()
        self._items: OrderedDict[str, Incident] = OrderedDict()
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._load(directory)

    def open(self, incident: Incident) -> Incident:
        """Record a new incident (and write its file)."""
        with self._lock:
            self._items[incident.incident_id] = incident
            self._items.move_to_end(incident.incident_id)
            dropped = self._trim()
        self._write(incident)
        self._remove_files(dropped)
        return incident

    def close(self, incident_id: str, **changes: object) -> Incident | None:
        """Mark an open incident closed now (``changes`` may add attributes, related ids ...)."""
        with self._lock:
            current = self._items.get(incident_id)
            if current is None or not current.is_open:
                return None
            now = time.time()
            closed = msgspec.structs.replace(current, closed_at=now, duration_s=round(now - current.opened_at, 3),
                                             **changes)
            self._items[incident_id] = closed
        self._write(closed)
        return closed

    def get(self, incident_id: str) -> Incident | None:
        """One incident with its dump."""
        with self._lock:
            return self._items.get(incident_id)

    def recent(self, *, kind: IncidentKind | None = None, open_only: bool = False, limit: int = 50) -> list[Incident]:
        """Newest first."""
        with self._lock:
            items = list(reversed(self._items.values()))
        chosen = [i for i in items if (kind is None or i.kind is kind) and (not open_only or i.is_open)]
        return chosen[:limit]

    def _trim(self) -> list[Incident]:
        dropped = []
        while len(self._items) > self._keep:
            dropped.append(self._items.popitem(last=False)[1])
        return dropped

    def _path(self, incident: Incident) -> Path | None:
        if self._dir is None:
            return None
        return self._dir / f"{int(incident.opened_at * 1000):015d}-{incident.incident_id}.json"

    def _write(self, incident: Incident) -> None:
        path = self._path(incident)
        if path is None:
            return
        tmp = path.with_suffix(".tmp")
        try:
            tmp.write_bytes(_encoder.encode(incident))
            os.replace(tmp, path)  # a reader never sees half a file, a crash leaves the old one
        except OSError as exc:
            log.error("cannot write incident %s: %s", incident.incident_id, exc,
                      extra={"event": "incident_write_failed", "incident_id": incident.incident_id})

    def _remove_files(self, incidents: list[Incident]) -> None:
        for incident in incidents:
            path = self._path(incident)
            if path is not None:
                path.unlink(missing_ok=True)

    def _load(self, directory: Path) -> None:
        files = sorted(directory.glob("*.json"))
        for stale in files[: max(0, len(files) - self._keep)]:
            stale.unlink(missing_ok=True)
        for path in files[-self._keep:]:
            try:
                incident = _decoder.decode(path.read_bytes())
            except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.warning("skipping unreadable incident file %s: %s", path.name, exc,
                            extra={"event": "incident_unreadable", "file": path.name})
                continue
            if incident.is_open:  # the process that owned it is gone: it cannot be going on any more
                incident = msgspec.structs.replace(
                    incident, closed_at=time.time(), attributes={**incident.attributes, "closed_by": "restart"})
                self._write(incident)
            self._items[incident.incident_id] = incident
