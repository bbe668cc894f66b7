"""The reply path: everything a device's ``command_response`` goes through, owned here.

:func:`route_reply` is the one entry point; it returns once the reply is stored in PostgreSQL.
Replies are matched by ``cmd_id``, never by topic (a node may answer from its new namespace).
Where one goes is decided here, from what :class:`ReplyLanes` learns of every stored status
(``CommandPlane.on_stored``):

- SENT is stored and no earlier reply of the command went to its actor: stored on the loop with
  the actor's guarded write (``CommandPlane.store``, which wakes the waiters), then the actor is
  told what was applied. Per command one write at a time; replies arriving meanwhile go in the
  next one, in order, in one transaction (a node's ACK and DONE often do).
- Otherwise, to the live actor (it stores SENT first, then the reply, so the history reads
  QUEUED, SENT, ACK, terminal), with a slot it sets once the reply's write commits; every later
  reply of that command follows it there, so one command's replies are never stored out of order.
  A write on the loop that fails also hands its replies to the actor, which retries every tick.
- Without a live actor (the command is terminal already, was never ours, or its actor stopped with the
  reply unstored, :class:`ReplyLost`): applied through the
  same guarded transition in one transaction, a late reply recorded as not applied, an unknown
  ``cmd_id`` given a stub row (source=device, cmd=unknown, ACK) and then its terminal, so terminal
  timestamps are never lost (DOMAIN §1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hydrovisor.actors.command import DeviceReply, RepliesStored, ReplyLost, device_report
from hydrovisor.commands.plane import CommandPlane
from hydrovisor.commands.spawn import command_path
from hydrovisor.protocol import TERMINAL, CommandResponse, CommandStatus
from hydrovisor.runtime.bridge import LoopReply
from hydrovisor.store.repos import commands
from hydrovisor.store.repos.commands import CommandRecord
from hydrovisor.supervisors import ActorStopped, ActorSystem, NoSuchActor

log = logging.getLogger(__name__)

STORE_WAIT_S = 10.0  # how long route_reply waits for a reply's write before saying it is not stored
_DIRECT, _TO_ACTOR = "direct", "to_actor"  # ReplyLanes._route values


class ReplyNotStored(Exception):
    """The reply is not known to be stored: its write failed, or its actor did not store it in time.

    Do not acknowledge it to the device. It may still be stored later (by its actor, which retries);
    the device's retransmission is then recorded as a duplicate, not applied twice.
    """


class ReplyLanes:
    """Where each open command's replies are stored, and the writes on the loop (loop-only object)."""

    def __init__(self, system: ActorSystem, plane: CommandPlane) -> None:
        self._system = system
        self._plane = plane
        # open commands only: _DIRECT once SENT is stored, _TO_ACTOR once a reply went to the actor
        self._route: dict[str, str] = {}
        # cmd_id -> replies behind its write in flight, each with the future its router awaits
        self._queued: dict[str, list[tuple[CommandResponse, asyncio.Future[str | None]]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until each lane is drained
        plane.on_stored(self._track)

    def _track(self, row: CommandRecord) -> None:
        if CommandStatus(row.status) in TERMINAL:
            self._route.pop(row.cmd_id, None)
        elif row.status in (CommandStatus.SENT, CommandStatus.ACK):
            self._route.setdefault(row.cmd_id, _DIRECT)

    def take(self, response: CommandResponse) -> asyncio.Future[str | None] | None:
        """Store ``response`` on the loop, or hand it to its actor; ``None`` when it has no live actor.

        The future resolves once the reply is stored: with ``"stored_on_loop"``, or ``None`` when
        its actor stored it; it fails with :class:`ReplyNotStored` when the actor cannot.
        """
        cmd_id = response.cmd_id
        stored: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        queued = self._queued.get(cmd_id)
        if queued is not None:
            queued.append((response, stored))
            return stored
        if self._route.get(cmd_id) == _DIRECT:
            self._queued[cmd_id] = []
            task = asyncio.get_running_loop().create_task(self._drain(cmd_id, [(response, stored)]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return stored
        try:
            self._system.tell(command_path(cmd_id), DeviceReply(response, LoopReply(stored.get_loop(), stored)))
        except (NoSuchActor, ActorStopped):
            self._route.pop(cmd_id, None)
            return None
        self._route[cmd_id] = _TO_ACTOR
        return stored

    async def _drain(self, cmd_id: str, batch: list[tuple[CommandResponse, asyncio.Future[str | None]]]) -> None:
        while batch:
            try:
                rows = await self._plane.store(cmd_id, [device_report(response) for response, _ in batch])
            except Exception as exc:
                self._to_actor(cmd_id, batch + self._queued.pop(cmd_id), exc)
                return
            for _, stored in batch:
                if not stored.done():
                    stored.set_result("stored_on_loop")
            applied = [row for row in rows if row is not None]
            if applied:
                # stopping (terminal already) or restarting: the next incarnation reads the row
                with contextlib.suppress(NoSuchActor, ActorStopped):
                    self._system.tell(command_path(cmd_id), RepliesStored(applied))
            batch = self._queued[cmd_id]
            self._queued[cmd_id] = []
        del self._queued[cmd_id]

    def _to_actor(self, cmd_id: str, batch: list[tuple[CommandResponse, asyncio.Future[str | None]]],
                  error: Exception) -> None:
        # the actor retries a failed write every tick until its deadline, like its own writes
        log.warning("replies of command %s not stored on the loop (%s): handed to its actor", cmd_id, error,
                    extra={"event": "command_reply_to_actor", "cmd_id": cmd_id})
        self._route[cmd_id] = _TO_ACTOR
        for response, stored in batch:
            try:
                self._system.tell(command_path(cmd_id), DeviceReply(response, LoopReply(stored.get_loop(), stored)))
            except (NoSuchActor, ActorStopped):
                log.error("reply %s of command %s not stored: no actor to retry it (%s)", response.status, cmd_id,
                          error, extra={"event": "command_reply_not_stored", "cmd_id": cmd_id})
                if not stored.done():
                    stored.set_exception(ReplyNotStored(f"reply {response.status} of {cmd_id}: {error}"))


async def route_reply(system: ActorSystem, plane: CommandPlane, lanes: ReplyLanes, response: CommandResponse, *,
                      node_uid: str, zone_uid: str | None, channel: str) -> str:
    """Store one device reply; returns once it is stored in PostgreSQL, or raises that it was not.

    Stored means its status applied, or recorded as not applied (late, duplicate, contradicting)
    in the command's timeline; either way it is durable, so the device may be acknowledged.
    Returns the outcome label counted by the router; ``"unattributed"`` (a node that could not
    parse a command) stores nothing and is only logged. Raises :class:`ReplyNotStored` when the
    reply is not known to be stored within ``STORE_WAIT_S``, or could not be.
    """
    if response.is_unattributed:
        log.warning("node %s could not parse a command: %s %s", node_uid, response.error_code,
                    response.error_message, extra={"event": "command_unattributed", "node_uid": node_uid})
        return "unattributed"
    stored = lanes.take(response)
    if stored is None:
        return await _without_actor(plane, response, node_uid=node_uid, zone_uid=zone_uid, channel=channel)
    try:
        label = await asyncio.wait_for(asyncio.shield(stored), STORE_WAIT_S)
    except TimeoutError:
        raise ReplyNotStored(f"reply {response.status} of {response.cmd_id} not stored within {STORE_WAIT_S} s") \
            from None
    except ReplyNotStored:
        raise
    except ReplyLost:
        # its actor stopped before storing it (terminal meanwhile, or crashed): stored here through the same
        # guarded transition, rather than waiting for the node to resend it
        return await _without_actor(plane, response, node_uid=node_uid, zone_uid=zone_uid, channel=channel)
    except Exception as exc:
        raise ReplyNotStored(f"reply {response.status} of {response.cmd_id}: {exc}") from exc
    return label or "to_actor"


async def _without_actor(plane: CommandPlane, response: CommandResponse, *, node_uid: str, zone_uid: str | None,
                         channel: str) -> str:
    try:
        created, row = await commands.apply_orphan_reply(plane.db.pool, response.cmd_id, device_report(response),
                                                         node_uid=node_uid, zone_uid=zone_uid, channel=channel)
    except Exception as exc:
        raise ReplyNotStored(f"reply {response.status} of {response.cmd_id}: {exc}") from exc
    if created:
        log.warning("reply for unknown command %s from %s: stub row stored", response.cmd_id, node_uid,
                    extra={"event": "command_unknown_reply", "cmd_id": response.cmd_id, "node_uid": node_uid})
    if row is not None:
        plane.stored(row)
    if created:
        return "stub"
    return "applied_without_actor" if row is not None else "late"
