"""``ZoneRuntime``: the loop-side door to the zone subtrees.

The app builds one and hands it to the router (telemetry, events, errors), the node actors (liveness),
the command plane (every stored status), and the HTTP API (create/delete, settings, state, the gate,
the safety reset). Telling is non-blocking and safe from any thread; asking is awaited on the loop
through the bridge, never blocking it. A message for a zone whose actor is not running (being created,
deleted, or restarting beyond its mailbox) is counted and dropped: the zone rebuilds its state from
what follows, and the gate fails closed until it has loaded.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from hydrovisor.actors.zone import (
    ZONE_NOT_READY,
    CheckStart,
    GetZoneObserved,
    GetZoneState,
    ResetSafety,
    ZoneAlertResolved,
    ZoneCommandStatus,
    ZoneDeviceReport,
    ZoneNodeLiveness,
    ZoneNotReady,
    ZoneObserved,
    ZoneReading,
    ZoneReload,
    ZoneStateReply,
)
from hydrovisor.protocol import ErrorReport, Event
from hydrovisor.store.repos.commands import CommandRecord
from hydrovisor.supervisors import (
    ActorSystem,
    DuplicateChild,
    NoSuchActor,
    StartChild,
    SupervisionError,
    TerminateChild,
)
from hydrovisor.zoneplane.plane import ZonePlane
from hydrovisor.zoneplane.spawn import ZONES, zone_actor_path, zone_spec
from hydrovisor.zones.safety import Refusal

log = logging.getLogger(__name__)

ASK_WITHIN_S = 5.0
LOAD_WAIT_S = 3.0
LOAD_POLL_S = 0.05


class ZoneUnavailable(Exception):
    """The zone's actor is not running or did not answer in time; ``code`` says which."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class ZoneRuntime:
    """See the module docstring."""

    def __init__(self, system: ActorSystem, plane: ZonePlane, registry: CollectorRegistry) -> None:
        self._system = system
        self._plane = plane
        self._undelivered = Counter("hydrovisor_zone_messages_undelivered_total",
                                    "Inputs for a zone whose actor was not running, by kind.", ["kind"],
                                    registry=registry)

    # lifecycle (on the loop) ----------------------------------------------------------------------------

    async def start(self, uid: str) -> None:
        """Start ``/zones/<uid>`` (a created zone); a running one is left alone."""
        try:
            await self._system.bridge.ask(ZONES, StartChild(zone_spec(uid, self._plane)), within=15.0)
        except DuplicateChild:
            return

    async def stop(self, uid: str) -> None:
        """Stop ``/zones/<uid>`` for good (a deleted zone), gracefully; unknown zones are ignored."""
        try:
            await self._system.bridge.ask(ZONES, TerminateChild(uid), within=60.0)
        except NoSuchActor:
            return

    # inputs (any thread) -----------------------------------------------------------------------------------

    def reading(self, zone_uid: str, *, node_uid: str, channel: str, value: float, ts: float,
                flags: dict[str, Any] | None, received_at: float) -> None:
        """A telemetry sample of one of the zone's nodes, accepted for storage."""
        self._tell(zone_uid, ZoneReading(node_uid, channel, value, ts, flags, received_at), "reading")

    def device_report(self, zone_uid: str, node_uid: str, channel: str | None, report: Event | ErrorReport,
                      received_at: float) -> None:
        """An event or error report of one of the zone's nodes."""
        self._tell(zone_uid, ZoneDeviceReport(node_uid, channel, report, received_at), "device_report")

    def node_liveness(self, zone_uid: str, node_uid: str, online: bool, at: float) -> None:
        """A node of the zone went online or offline."""
        self._tell(zone_uid, ZoneNodeLiveness(node_uid, online, at), "liveness")

    def command_stored(self, row: CommandRecord) -> None:
        """``CommandPlane.on_stored`` hook: a command status of a zone's node was stored."""
        if row.zone_uid is None:
            return
        self._tell(row.zone_uid, ZoneCommandStatus(row.cmd_id, row.node_uid, row.channel, row.cmd, row.params,
                                                   row.status, row.error_code, row.details), "command")

    def reload(self, zone_uid: str) -> None:
        """The zone's settings or its nodes' channels changed."""
        self._tell(zone_uid, ZoneReload(), "reload")

    def reload_all(self) -> None:
        """Something that may concern any zone changed (a node bound, unbound, or moved)."""
        for uid in self._plane.registry.zones():
            self.reload(uid)

    # questions (on the loop) ------------------------------------------------------------------------------

    async def state(self, zone_uid: str) -> ZoneStateReply:
        """The zone's live state (a zone still loading is given ``LOAD_WAIT_S``); raises :class:`ZoneUnavailable`."""
        reply = await self._until_loaded(zone_uid, lambda _: GetZoneState(), lambda r: isinstance(r, ZoneNotReady))
        if isinstance(reply, ZoneNotReady):
            raise ZoneUnavailable("zone_not_ready", reply.reason)
        assert isinstance(reply, ZoneStateReply)
        return reply

    async def observed(self, zone_uid: str) -> ZoneObserved:
        """The zone as its workflows see it (settings, devices, state); raises :class:`ZoneUnavailable`."""
        reply = await self._until_loaded(zone_uid, lambda _: GetZoneObserved(), lambda r: isinstance(r, ZoneNotReady))
        if isinstance(reply, ZoneNotReady):
            raise ZoneUnavailable("zone_not_ready", reply.reason)
        assert isinstance(reply, ZoneObserved)
        return reply

    async def check_start(self, zone_uid: str, *, node_uid: str, channel: str, cmd: str, params: dict[str, Any],
                          source: str) -> Refusal | None:
        """The gate's verdict on starting ``channel`` of ``node_uid`` with ``cmd`` (None: allowed).

        Fails closed: a zone that cannot answer refuses (``zone_unavailable``). A zone still loading its
        state (just created or restarted) is given up to ``LOAD_WAIT_S`` before its refusal stands.
        """
        try:
            reply = await self._until_loaded(
                zone_uid, lambda last: CheckStart(node_uid, channel, cmd, params, source, last),
                lambda r: isinstance(r, Refusal) and r.reason_code == ZONE_NOT_READY)
        except ZoneUnavailable as exc:
            return Refusal(reason_code="zone_unavailable", message=str(exc))
        assert reply is None or isinstance(reply, Refusal)
        return reply

    async def reset_safety(self, zone_uid: str) -> list[str]:
        """The operator's safety reset (stored and audited by the caller) reaches the zone actor; returns
        the codes it let go of. A zone not running has nothing to let go of."""
        try:
            codes = await self._ask(zone_uid, ResetSafety())
        except ZoneUnavailable:
            return []
        assert isinstance(codes, list)
        return codes

    def alert_resolved(self, zone_uid: str, code: str, dedupe_key: str) -> None:
        """An operator resolved one alert of the zone: the zone lets go of it (a lock, if it was one)."""
        self._tell(zone_uid, ZoneAlertResolved(code, dedupe_key), "alert_resolved")

    # internals -------------------------------------------------------------------------------------------

    async def _until_loaded(self, zone_uid: str, message: Callable[[bool], Any], loading: Callable[[Any], bool]) -> Any:
        """Ask, and ask again while the reply says the zone is loading, for up to ``LOAD_WAIT_S``: a zone
        just created, restarted or re-resolving its roles answers within milliseconds. ``message(last)``
        builds each question; ``last`` is True for the one whose answer stands."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + LOAD_WAIT_S
        while True:
            last = loop.time() >= deadline
            reply = await self._ask(zone_uid, message(last))
            if last or not loading(reply):
                return reply
            await asyncio.sleep(LOAD_POLL_S)

    def _tell(self, zone_uid: str, message: Any, kind: str) -> None:
        try:
            self._system.tell(zone_actor_path(zone_uid), message)
        except SupervisionError:
            self._undelivered.labels(kind=kind).inc()

    async def _ask(self, zone_uid: str, message: Any) -> Any:
        try:
            return await self._system.bridge.ask(zone_actor_path(zone_uid), message, within=ASK_WITHIN_S)
        except NoSuchActor as exc:
            raise ZoneUnavailable("zone_not_running", f"zone {zone_uid} is not running") from exc
        except TimeoutError as exc:
            raise ZoneUnavailable("zone_not_answering", f"zone {zone_uid} did not answer in time") from exc
        except SupervisionError as exc:
            raise ZoneUnavailable(exc.code, str(exc)) from exc
