"""Child specs of command actors, starting them, and adopting open commands after a restart."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pykka

from hydrovisor.actors.command import CommandActor, Preload
from hydrovisor.commands.plane import CommandPlane
from hydrovisor.commands.waiters import StatusNews
from hydrovisor.protocol import CommandStatus
from hydrovisor.store.repos import commands
from hydrovisor.supervisors import (
    ActorContext,
    ActorSystem,
    CapacityExceeded,
    ChildSpec,
    DuplicateChild,
    Execution,
    Restart,
    StartChild,
)

log = logging.getLogger(__name__)

COMMANDS = "/commands"
START_WAIT_S = 15.0
_late_refusals: set[asyncio.Task[None]] = set()  # strong references until each write is done


class StartQueued(Exception):
    """``/commands`` did not take the start request within ``START_WAIT_S``: it stays queued there.

    The command is durable (QUEUED) and will be tracked once the supervisor gets to it; should the
    supervisor then refuse it at the cap, the row becomes SEND_FAILED ``capacity_exceeded``.
    """


def command_path(cmd_id: str) -> str:
    """Stable path of a command's actor."""
    return f"{COMMANDS}/{cmd_id}"


def command_spec(cmd_id: str, plane: CommandPlane, preload: Preload | None = None) -> ChildSpec:
    """Transient: restarted after a crash (it resumes from its row), gone once terminal. Pooled: the
    actor never blocks (a restarted incarnation loads its row as a continuation).

    ``preload`` is handed to the first incarnation only: a restarted one must read the row again
    (a stale QUEUED row would make it publish a command that is already SENT).
    """
    once = [preload] if preload is not None else []

    def start(ctx: ActorContext) -> pykka.ActorRef[Any]:
        return CommandActor.start(ctx, cmd_id=cmd_id, plane=plane, preload=once.pop() if once else None)

    return ChildSpec(cmd_id, start, restart=Restart.TRANSIENT, execution=Execution.POOL)


async def start_command_actor(system: ActorSystem, plane: CommandPlane, cmd_id: str,
                              preload: Preload | None = None) -> bool:
    """Start ``/commands/<cmd_id>``; False if it runs already.

    Raises CapacityExceeded at the cap, StartQueued when the supervisor is too busy to answer.
    """
    reply = system.bridge.request(COMMANDS, StartChild(command_spec(cmd_id, plane, preload)))
    try:
        await asyncio.wait_for(asyncio.shield(reply), START_WAIT_S)
    except DuplicateChild:
        return False
    except TimeoutError:
        # the StartChild still runs when its turn comes: only an explicit refusal must reach the row
        reply.add_done_callback(lambda done: _late_outcome(plane, cmd_id, done))
        raise StartQueued(cmd_id) from None
    return True


def _late_outcome(plane: CommandPlane, cmd_id: str, reply: asyncio.Future[Any]) -> None:
    error = None if reply.cancelled() else reply.exception()
    if isinstance(error, CapacityExceeded):
        task = asyncio.get_running_loop().create_task(_refuse(plane, cmd_id))
        _late_refusals.add(task)
        task.add_done_callback(_late_refusals.discard)
    elif error is not None and not isinstance(error, DuplicateChild):
        # e.g. StartFailed: the row stays QUEUED and is adopted when /commands next starts
        log.error("queued start of command %s failed: %s", cmd_id, error,
                  extra={"event": "command_start_failed", "cmd_id": cmd_id})


async def _refuse(plane: CommandPlane, cmd_id: str) -> None:
    try:
        row = await commands.transition(plane.db.pool, cmd_id, CommandStatus.SEND_FAILED, source="server",
                                        error_code="capacity_exceeded",
                                        error_message="too many commands in flight")
    except Exception as exc:  # the row stays QUEUED: adopted when /commands next starts
        log.error("command %s refused at the cap, SEND_FAILED not stored: %s", cmd_id, exc,
                  extra={"event": "command_state_sync_failed", "cmd_id": cmd_id})
        return
    if row is not None:
        plane.waiters.announce(StatusNews.stored(row))


def open_command_specs(system: ActorSystem, plane: CommandPlane) -> list[ChildSpec]:
    """Every non-terminal command, adopted by a new actor whenever ``/commands`` (re)starts.

    Runs in the supervisor's thread (``/commands``' ``on_start``: a thread actor, never a pool
    worker), so its one blocking wait for the query holds only that thread, once per (re)start of the
    subtree, before any child exists. If PostgreSQL is unreachable the subtree starts empty (logged)
    rather than failing upward: replies still reach the store through the router.
    """
    try:
        rows = system.bridge.submit(_open(plane)).result(timeout=10)
    except Exception as exc:
        log.error("open commands not adopted: %s", exc, extra={"event": "command_adoption_failed"})
        return []
    if rows:
        log.info("adopting %d open commands", len(rows), extra={"event": "command_adoption", "count": len(rows)})
    return [command_spec(cmd_id, plane) for cmd_id in rows]


async def _open(plane: CommandPlane) -> list[str]:
    return [row.cmd_id for row in await commands.open_commands(plane.db.pool)]
