"""The one actor factory: each incarnation of a path gets its context here, and here it is asked
to stop, given up on (abandoned), and its path's mailbox closed for good.

Every actor is created through :meth:`Incarnations.new_context`, so the execution model can be
chosen per actor kind in one place without touching actor code.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from hydrovisor.supervisors.cell import Cell, CellState
from hydrovisor.supervisors.context import ActorContext
from hydrovisor.supervisors.errors import ActorHung
from hydrovisor.supervisors.exit import ExitReason
from hydrovisor.supervisors.mailbox import Envelope, StopRequest, is_control
from hydrovisor.supervisors.metrics import ActorCounters
from hydrovisor.supervisors.path_registry import PathRegistry
from hydrovisor.supervisors.spec import Execution

if TYPE_CHECKING:
    from hydrovisor.supervisors.actor_system import ActorSystem

log = logging.getLogger("hydrovisor.supervisor")


class Incarnations:
    """Creates, stops and abandons the incarnations of the paths in one registry."""

    def __init__(self, system: ActorSystem, paths: PathRegistry, counters: ActorCounters) -> None:
        self._system = system
        self._paths = paths
        self._counters = counters
        self.abandoned_threads = 0

    def new_context(self, cell: Cell, report_exit: Callable[[int, ExitReason], None]) -> ActorContext:
        """Context for the next incarnation of ``cell``; takes over its mailbox."""
        return ActorContext(
            system=self._system,
            path=cell.path,
            mailbox=cell.mailbox,
            generation=cell.mailbox.new_generation(),
            report_exit=report_exit,
            pool=self._system.pool if cell.spec.execution is Execution.POOL else None,
        )

    def request_stop(self, cell: Cell, ctx: ActorContext, *, drain: bool = True) -> None:
        """Ask one incarnation to stop.

        Graceful (``drain``, OTP's ``shutdown``): the stop queues behind the messages already
        accepted, which the incarnation handles until its shutdown timeout runs out. Otherwise (a
        kill) it stops after its current message and the backlog waits for the next incarnation.
        """
        if drain:
            ctx.stop_deadline = time.monotonic() + cell.spec.shutdown_timeout
        cell.mailbox.put_control(Envelope(StopRequest(ctx.generation)), first=not drain)

    def close_mailbox(self, cell: Cell, reason: str) -> None:
        """Close a path's mailbox for good; what is left unhandled is counted and reported, never silent."""
        left = [e for e in cell.mailbox.close(reason) if not is_control(e)]
        if not left:
            return
        self._counters.count_dropped(cell.path, len(left))
        kinds = collections.Counter(type(e.message).__name__ for e in left)
        log.warning("%s stopped (%s) with %d messages unhandled: %s", cell.path, reason, len(left),
                    dict(kinds.most_common(5)), extra={"event": "backlog_dropped", "path": cell.path,
                                                       "dropped": len(left), "reason": reason})

    def abandon(self, cell: Cell, ctx: ActorContext) -> None:
        """Give up on an incarnation (hung, or too slow to start or stop): it can take no more
        messages and will exit silently; everything it started is cut off with it."""
        ctx.abandoned.set()
        actor = ctx.actor
        if actor is not None:
            actor.actor_stopped.set()
            reply = actor.current_reply
            if reply is not None:
                error = ActorHung(cell.path)
                with contextlib.suppress(queue.Full):  # the handler answered meanwhile
                    reply.set_exception(exc_info=(ActorHung, error, None))
        if cell.mailbox.closed_reason is None:
            cell.mailbox.new_generation()
        self.abandoned_threads += 1
        self._cut_off_links(ctx, cell)

    def _cut_off_links(self, ctx: ActorContext, parent: Cell) -> None:
        """Python cannot kill threads, so an abandoned supervisor would leave its subtree running
        beside its replacement's. Like OTP links: its children (and theirs) take no more messages,
        leave the registry and exit after their current handler, or as soon as their start ends."""
        for cell, child in list(ctx.links.values()):
            if child.exited.is_set():
                continue
            child.abandoned.set()
            actor = child.actor
            if actor is not None:
                actor.actor_stopped.set()
                child.started.set()  # wakes the abandoned supervisor if it was waiting for this start
            if self._paths.unregister(cell.path, cell):
                parent.remove_child(cell.path)
            cell.state = CellState.STOPPED
            self.close_mailbox(cell, f"supervisor {parent.path} abandoned")
            self._cut_off_links(child, cell)
