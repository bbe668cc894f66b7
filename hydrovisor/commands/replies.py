"""Where a ``command_response`` goes: to the command's actor, else straight to the guarded store.

Replies are matched by ``cmd_id``, never by topic (a node may answer from its new namespace).
Without a live actor (the command is terminal already, or was never ours) the reply is applied
on the loop through the same guarded transition: a late reply is recorded as not applied; an
unknown ``cmd_id`` gets a stub row (source=device, cmd=unknown, ACK) and then its terminal, so
terminal timestamps are never lost (DOMAIN §1).
"""

from __future__ import annotations

import logging

from hydrovisor.actors.command import DeviceReply
from hydrovisor.commands.plane import CommandPlane
from hydrovisor.commands.spawn import command_path
from hydrovisor.commands.waiters import StatusNews
from hydrovisor.protocol import CommandResponse, CommandStatus
from hydrovisor.store.repos import commands
from hydrovisor.supervisors import ActorStopped, ActorSystem, NoSuchActor

log = logging.getLogger(__name__)


async def route_reply(system: ActorSystem, plane: CommandPlane, response: CommandResponse, *, node_uid: str,
                      zone_uid: str | None, channel: str) -> str:
    """Deliver one reply; returns the outcome label counted by the router."""
    if response.is_unattributed:
        log.warning("node %s could not parse a command: %s %s", node_uid, response.error_code,
                    response.error_message, extra={"event": "command_unattributed", "node_uid": node_uid})
        return "unattributed"
    try:
        system.tell(command_path(response.cmd_id), DeviceReply(response))
    except (NoSuchActor, ActorStopped):
        pass
    else:
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
    plane.waiters.announce(StatusNews.stored(row))
    return "stub" if created else "applied_without_actor"
