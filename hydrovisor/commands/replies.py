"""Where a ``command_response`` goes: stored on the loop, to the command's actor, or straight to the store.

Replies are matched by ``cmd_id``, never by topic (a node may answer from its new namespace).

- SENT is stored and no earlier reply of the command went to its actor (``CommandWaiters.replies_direct``):
  :class:`ReplyLanes` stores it on the loop with the actor's guarded write, wakes the waiters, and
  tells the actor what was applied. Per command one write at a time; replies arriving meanwhile
  go in the next one, in order, in one transaction (a node's ACK and DONE often do).
- Otherwise, to the live actor (it stores SENT first, then the reply, so the history reads
  QUEUED, SENT, ACK, terminal); every later reply of that command follows it there.
- Without a live actor (the command is terminal already, or was never ours) the reply is applied
  on the loop through the same guarded transition: a late reply is recorded as not applied; an
  unknown ``cmd_id`` gets a stub row (source=device, cmd=unknown, ACK) and then its terminal, so
  terminal timestamps are never lost (DOMAIN §1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from hydrovisor.actors.command import DeviceReply, RepliesStored, device_report
from hydrovisor.commands.plane import CommandPlane
from hydrovisor.commands.spawn import command_path
from hydrovisor.commands.waiters import StatusNews
from hydrovisor.protocol import CommandResponse, CommandStatus
from hydrovisor.store.repos import commands
from hydrovisor.supervisors import ActorStopped, ActorSystem, NoSuchActor

log = logging.getLogger(__name__)


class ReplyLanes:
    """Stores the replies of commands whose SENT is stored, on the loop (loop-only object)."""

    def __init__(self, system: ActorSystem, plane: CommandPlane) -> None:
        self._system = system
        self._plane = plane
        self._queued: dict[str, list[CommandResponse]] = {}  # cmd_id -> replies behind its write in flight
        self._tasks: set[asyncio.Task[None]] = set()  # strong references until each lane is drained

    def take(self, response: CommandResponse) -> bool:
        """Store ``response`` here if its command's replies are stored on the loop; False otherwise."""
        cmd_id = response.cmd_id
        queued = self._queued.get(cmd_id)
        if queued is not None:
            queued.append(response)
            return True
        if not self._plane.waiters.replies_direct(cmd_id):
            return False
        self._queued[cmd_id] = []
        task = asyncio.get_running_loop().create_task(self._drain(cmd_id, [response]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _drain(self, cmd_id: str, batch: list[CommandResponse]) -> None:
        while batch:
            try:
                rows = await self._plane.store(cmd_id, [device_report(r) for r in batch])
            except Exception as exc:
                self._to_actor(cmd_id, batch + self._queued.pop(cmd_id), exc)
                return
            applied = [row for row in rows if row is not None]
            if applied:
                # stopping (terminal already) or restarting: the next incarnation reads the row
                with contextlib.suppress(NoSuchActor, ActorStopped):
                    self._system.tell(command_path(cmd_id), RepliesStored(applied))
            batch = self._queued[cmd_id]
            self._queued[cmd_id] = []
        del self._queued[cmd_id]

    def _to_actor(self, cmd_id: str, responses: list[CommandResponse], error: Exception) -> None:
        # the actor retries a failed write every tick until its deadline, like its own writes
        log.warning("replies of command %s not stored on the loop (%s): handed to its actor", cmd_id, error,
                    extra={"event": "command_reply_to_actor", "cmd_id": cmd_id})
        self._plane.waiters.replies_to_actor(cmd_id)
        for response in responses:
            try:
                self._system.tell(command_path(cmd_id), DeviceReply(response))
            except (NoSuchActor, ActorStopped):
                log.error("reply %s of command %s not stored: no actor to retry it (%s)", response.status, cmd_id,
                          error, extra={"event": "command_reply_not_stored", "cmd_id": cmd_id})


async def route_reply(system: ActorSystem, plane: CommandPlane, lanes: ReplyLanes, response: CommandResponse, *,
                      node_uid: str, zone_uid: str | None, channel: str) -> str:
    """Deliver one reply; returns the outcome label counted by the router."""
    if response.is_unattributed:
        log.warning("node %s could not parse a command: %s %s", node_uid, response.error_code,
                    response.error_message, extra={"event": "command_unattributed", "node_uid": node_uid})
        return "unattributed"
    if lanes.take(response):
        return "stored_on_loop"
    try:
        system.tell(command_path(response.cmd_id), DeviceReply(response))
    except (NoSuchActor, ActorStopped):
        pass
    else:
        plane.waiters.replies_to_actor(response.cmd_id)
        return "to_actor"
    pool = plane.db.pool
    created = await commands.insert_device_stub(pool, response.cmd_id, node_uid, zone_uid, channel)
    if created:
        log.warning("reply for unknown command %s from %s: stub row stored", response.cmd_id, node_uid,
                    extra={"event": "command_unknown_reply", "cmd_id": response.cmd_id, "node_uid": node_uid})
    if response.status is CommandStatus.ACK and created:
        return "stub"
    details = dict(response.details or {})
    row = await commands.transition(pool, response.cmd_id, response.status, source="device",
                                    error_code=response.error_code, error_message=response.error_message,
                                    details=details or None)
    if row is None:
        return "late" if not created else "stub"
    plane.waiters.deliver(StatusNews.stored(row))
    return "stub" if created else "applied_without_actor"
