"""Child specs of command actors, starting them, and adopting open commands after a restart."""

from __future__ import annotations

import logging
from typing import Any

import pykka

from hydrovisor.actors.command import CommandActor, Preload
from hydrovisor.commands.plane import CommandPlane
from hydrovisor.store.repos import commands
from hydrovisor.supervisors import ActorContext, ActorSystem, ChildSpec, DuplicateChild, Restart, StartChild

log = logging.getLogger(__name__)

COMMANDS = "/commands"


def command_path(cmd_id: str) -> str:
    """Stable path of a command's actor."""
    return f"{COMMANDS}/{cmd_id}"


def command_spec(cmd_id: str, plane: CommandPlane, preload: Preload | None = None) -> ChildSpec:
    """Transient: restarted after a crash (it resumes from its row), gone once terminal.

    ``preload`` is handed to the first incarnation only: a restarted one must read the row again
    (a stale QUEUED row would make it publish a command that is already SENT).
    """
    once = [preload] if preload is not None else []

    def start(ctx: ActorContext) -> pykka.ActorRef[Any]:
        return CommandActor.start(ctx, cmd_id=cmd_id, plane=plane, preload=once.pop() if once else None)

    return ChildSpec(cmd_id, start, restart=Restart.TRANSIENT)


async def start_command_actor(system: ActorSystem, plane: CommandPlane, cmd_id: str,
                              preload: Preload | None = None) -> bool:
    """Start ``/commands/<cmd_id>``; False if it runs already. Raises CapacityExceeded at the cap."""
    try:
        await system.bridge.ask(COMMANDS, StartChild(command_spec(cmd_id, plane, preload)), within=15.0)
    except DuplicateChild:
        return False
    return True


def open_command_specs(system: ActorSystem, plane: CommandPlane) -> list[ChildSpec]:
    """Every non-terminal command, adopted by a new actor whenever ``/commands`` (re)starts.

    Runs in the supervisor's thread; if PostgreSQL is unreachable the subtree starts empty
    (logged) rather than failing upward: replies still reach the store through the router.
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
