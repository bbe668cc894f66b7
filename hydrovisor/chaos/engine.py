"""The chaos engine behind ``POST /admin/chaos/inject``: real faults, on command, that end by themselves.

Each injection opens a ``chaos`` incident (its id is the answer), runs as a task on the loop and
closes the incident when it is over. What each kind does for real:

- loop stalls (``cpu_bound_loop``, ``sync_io_block``, ``cross_lock_deadlock``, ``recursive_await``):
  :mod:`hydrovisor.chaos.stalls`; the deadlock's actor side runs on ``/system/chaos``.
- ``actor_crash``: ``count`` injected crashes sent at once to ``path``'s mailbox, so they hit that many
  successive incarnations (restart intensity and escalation are exercised as they would be by a bug).
- ``actor_hang``: the actor at ``path`` blocks in its handler until the injection ends; the
  supervisor's liveness probe sees it when ``duration`` exceeds the hang timeout.
- ``db_outage``: the embedded PostgreSQL server is stopped (connections refused, open ones gone) and
  started again after ``duration``.
- ``broker_kick``: every device is disconnected and reconnects are refused (CONNACK 3) for ``duration``.
- ``node_silence``: everything ``node_uid`` sends is discarded for ``duration`` while it stays
  connected, so only the liveness timeout can notice.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from hydrovisor.chaos.stalls import StallKind, schedule_stall
from hydrovisor.chaos.worker import CHAOS_WORKER_PATH, RunInActor
from hydrovisor.process.incidents import Incident, IncidentKind, IncidentStore
from hydrovisor.process.states import new_incident_id
from hydrovisor.refusals import Refused
from hydrovisor.supervisors import ActorSystem, InjectedCrash, InjectedHang, NoSuchActor

log = logging.getLogger("hydrovisor.chaos")

MAX_DURATION = 600.0


class ChaosKind(enum.StrEnum):
    """Every fault that can be injected."""

    CPU_BOUND_LOOP = "cpu_bound_loop"
    SYNC_IO_BLOCK = "sync_io_block"
    CROSS_LOCK_DEADLOCK = "cross_lock_deadlock"
    RECURSIVE_AWAIT = "recursive_await"
    ACTOR_CRASH = "actor_crash"
    ACTOR_HANG = "actor_hang"
    DB_OUTAGE = "db_outage"
    BROKER_KICK = "broker_kick"
    NODE_SILENCE = "node_silence"


STALLS = frozenset({ChaosKind.CPU_BOUND_LOOP, ChaosKind.SYNC_IO_BLOCK, ChaosKind.CROSS_LOCK_DEADLOCK,
                    ChaosKind.RECURSIVE_AWAIT})
# at most one of these at a time: two loop stalls or two outages of one component make no sense
_EXCLUSIVE = {kind: "loop" for kind in STALLS} | {ChaosKind.DB_OUTAGE: "db", ChaosKind.BROKER_KICK: "broker"}


class ChaosRequest(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The body of ``POST /admin/chaos/inject``."""

    type: ChaosKind
    duration: Annotated[float, msgspec.Meta(gt=0, le=MAX_DURATION)] = 5.0
    path: str | None = None  # actor_crash, actor_hang
    count: Annotated[int, msgspec.Meta(ge=1, le=100)] = 1  # actor_crash
    node_uid: str | None = None  # node_silence


class Injection(msgspec.Struct, frozen=True):
    """One running injection, as ``GET /admin/chaos`` lists it."""

    incident_id: str
    type: ChaosKind
    duration: float
    started_at: float  # unix time
    ends_at: float
    attributes: dict[str, str]


class ChaosRefused(Refused):
    """The injection cannot run."""


DbOutage = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class ChaosTargets:
    """What the engine acts on, built by the app (``db_outage`` is None with an external database)."""

    system: ActorSystem
    kick_broker: Callable[[float], Awaitable[int]]
    end_kick: Callable[[], None]
    silence_node: Callable[[str, float], None]
    node_exists: Callable[[str], bool]
    db_outage: DbOutage | None


class ChaosEngine:
    """Starts, lists and ends injections (use on the loop)."""

    def __init__(self, targets: ChaosTargets, incidents: IncidentStore) -> None:
        self._targets = targets
        self._incidents = incidents
        self._active: dict[str, tuple[Injection, asyncio.Task[None]]] = {}
        # read by the loop guard's thread while the loop may be changing _active: a tuple is swapped whole
        self._ids: tuple[str, ...] = ()

    def active(self) -> list[Injection]:
        """Running injections, oldest first."""
        return [injection for injection, _ in self._active.values()]

    def active_ids(self) -> list[str]:
        """Incident ids of the running injections; safe from any thread."""
        return list(self._ids)

    async def inject(self, request: ChaosRequest) -> Injection:
        """Validate, open the incident, start the fault; returns at once."""
        attributes = self._validate(request)
        now = time.time()
        injection = Injection(
            incident_id=new_incident_id("chaos"), type=request.type, duration=request.duration, started_at=now,
            ends_at=now + request.duration, attributes=attributes)
        self._incidents.open(Incident(
            incident_id=injection.incident_id, kind=IncidentKind.CHAOS, title=f"chaos {request.type.value}",
            reason=f"injected over HTTP for {request.duration:g}s", owner="chaos", opened_at=now,
            attributes=_incident_attributes(injection)))
        log.critical("CHAOS_INJECTION_TRIGGERED incident_id=%s chaos_type=%s duration=%.1fs",
                     injection.incident_id, request.type.value, request.duration,
                     extra={"event": "chaos_injected", "incident_id": injection.incident_id,
                            "chaos_type": request.type.value, "duration": request.duration, **attributes})
        task = asyncio.get_running_loop().create_task(self._run(injection, request),
                                                      name=f"chaos-{injection.incident_id}")
        self._active[injection.incident_id] = (injection, task)
        self._ids = tuple(self._active)
        return injection

    async def stop(self) -> None:
        """End every running injection now (each restores what it broke)."""
        tasks = [task for _, task in self._active.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _validate(self, request: ChaosRequest) -> dict[str, str]:
        kind = request.type
        group = _EXCLUSIVE.get(kind)
        if group is not None:
            for injection in self.active():
                if _EXCLUSIVE.get(injection.type) == group:
                    raise ChaosRefused(409, "chaos_already_active",
                                       f"{injection.type.value} ({injection.incident_id}) is still running")
        if kind in (ChaosKind.ACTOR_CRASH, ChaosKind.ACTOR_HANG):
            if not request.path:
                raise ChaosRefused(400, "missing_path", f"{kind.value} needs `path` (e.g. /store/rollups)")
            path = "/" + request.path.strip("/")
            try:
                self._targets.system.cell(path)
            except NoSuchActor:
                raise ChaosRefused(404, "actor_not_found", f"no actor at path {path}") from None
            return {"path": path, "count": str(request.count)} if kind is ChaosKind.ACTOR_CRASH else {"path": path}
        if kind is ChaosKind.NODE_SILENCE:
            if not request.node_uid:
                raise ChaosRefused(400, "missing_node_uid", "node_silence needs `node_uid`")
            if not self._targets.node_exists(request.node_uid):
                raise ChaosRefused(404, "node_not_found", f"no registered node {request.node_uid}")
            return {"node_uid": request.node_uid}
        if kind is ChaosKind.DB_OUTAGE and self._targets.db_outage is None:
            raise ChaosRefused(409, "chaos_unsupported",
                               "db_outage stops the embedded PostgreSQL; this instance uses an external database")
        return {}

    async def _run(self, injection: Injection, request: ChaosRequest) -> None:
        outcome = "ended"
        try:
            await self._inflict(injection, request)
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except Exception as exc:
            outcome = f"failed: {exc}"
            log.exception("chaos injection %s failed", injection.incident_id,
                          extra={"event": "chaos_failed", "incident_id": injection.incident_id})
        finally:
            self._active.pop(injection.incident_id, None)
            self._ids = tuple(self._active)
            self._incidents.close(injection.incident_id,
                                  attributes={**_incident_attributes(injection), "outcome": outcome})
            log.warning("CHAOS_INJECTION_ENDED incident_id=%s chaos_type=%s outcome=%s", injection.incident_id,
                        injection.type.value, outcome, extra={"event": "chaos_ended",
                                                              "incident_id": injection.incident_id,
                                                              "chaos_type": injection.type.value})

    async def _inflict(self, injection: Injection, request: ChaosRequest) -> None:
        kind, duration, targets = request.type, request.duration, self._targets
        if kind in STALLS:
            loop = asyncio.get_running_loop()
            await asyncio.wrap_future(schedule_stall(StallKind(kind.value), loop, duration,
                                                     run_in_actor=self._run_in_actor))
        elif kind is ChaosKind.ACTOR_CRASH:
            path = injection.attributes["path"]
            for _ in range(request.count):
                _tell(targets.system, path, InjectedCrash(injection.incident_id))
            await asyncio.sleep(duration)  # the window in which the restarts are watched
        elif kind is ChaosKind.ACTOR_HANG:
            release = threading.Event()
            _tell(targets.system, injection.attributes["path"], InjectedHang(injection.incident_id, release, duration))
            try:
                await asyncio.sleep(duration)
            finally:
                release.set()
        elif kind is ChaosKind.DB_OUTAGE and targets.db_outage is not None:
            await targets.db_outage(duration)
        elif kind is ChaosKind.BROKER_KICK:
            try:
                await targets.kick_broker(duration)
                await asyncio.sleep(duration)
            finally:
                targets.end_kick()
        elif kind is ChaosKind.NODE_SILENCE:
            uid = injection.attributes["node_uid"]
            targets.silence_node(uid, duration)
            try:
                await asyncio.sleep(duration)
            finally:
                targets.silence_node(uid, 0)

    def _run_in_actor(self, call: Callable[[], None]) -> None:
        _tell(self._targets.system, CHAOS_WORKER_PATH, RunInActor(call))


def _tell(system: ActorSystem, path: str, message: Any) -> None:
    with contextlib.suppress(NoSuchActor):  # gone since validation: nothing left to break
        system.tell(path, message)


def _incident_attributes(injection: Injection) -> dict[str, str]:
    return {"type": injection.type.value, "duration_s": f"{injection.duration:g}", **injection.attributes}
