"""``ActorSystem``: the root of the tree, the path registry and the one actor factory.

Senders address actors by stable path (``/zones/zn-7``), resolved at send time. A message sent
while the child restarts waits in the path's mailbox and is handled by the new incarnation; a
message to a path that stopped for good fails with :class:`ActorStopped` / :class:`NoSuchActor`.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pykka
from prometheus_client import CollectorRegistry, Counter
from pykka import ActorRegistry

from hydrovisor.runtime.bridge import Bridge
from hydrovisor.runtime.timers import TimerService
from hydrovisor.supervisors.cell import Cell, CellState
from hydrovisor.supervisors.context import ActorContext
from hydrovisor.supervisors.errors import ActorHung, NoSuchActor, StartFailed
from hydrovisor.supervisors.exit import ExitKind, ExitReason
from hydrovisor.supervisors.mailbox import Envelope, StopRequest, is_control
from hydrovisor.supervisors.messages import KillChild
from hydrovisor.supervisors.spec import ChildSpec, SupervisorFlags

log = logging.getLogger("hydrovisor.supervisor")

ROOT = "/"


def kill_request(path: str, reason: str) -> tuple[str, KillChild]:
    """The supervisor path to ask, and the message, that kill the actor at ``path``."""
    if path == ROOT or "/" not in path:
        raise NoSuchActor(f"{path} (the root cannot be killed; stop the process)")
    parent, child_id = path.rsplit("/", 1)
    return parent or ROOT, KillChild(child_id, reason)


class ActorSystem:
    """Owns the supervision tree. Create one per process (tests may create several)."""

    def __init__(
        self,
        *,
        bridge: Bridge,
        timers: TimerService,
        registry: CollectorRegistry | None = None,
        on_root_exit: Callable[[ExitReason], None] | None = None,
    ) -> None:
        self.bridge = bridge
        self.timers = timers
        self._on_root_exit = on_root_exit
        self._failure_listeners: list[Callable[[str, ExitReason], None]] = []
        self._cells: dict[str, Cell] = {}
        self._lock = threading.Lock()
        self.abandoned_threads = 0
        self.restarts = Counter(
            "hydrovisor_actor_restarts_total",
            "Restarts performed by supervisors, by child path and exit kind.",
            ["path", "reason"],
            registry=registry,
        )
        self.dropped_messages = Counter(
            "hydrovisor_actor_dropped_messages_total",
            "Messages still queued when their path stopped for good (asks failed with actor_stopped).",
            ["path"],
            registry=registry,
        )
        self.stale_messages = Counter(
            "hydrovisor_actor_stale_messages_total",
            "Messages an incarnation sent itself (piped results, timers) that arrived after it was replaced; "
            "dropped unhandled.",
            ["path"],
            registry=registry,
        )
        bridge.attach(self)

    # the tree --------------------------------------------------------------------------------

    def start(
        self, flags: SupervisorFlags, children: Sequence[ChildSpec], *, start_timeout: float = 60.0
    ) -> None:
        """Start the root supervisor and, in order, its whole tree; raises StartFailed."""
        from hydrovisor.supervisors.supervisor import Supervisor  # noqa: PLC0415 - import cycle

        spec = ChildSpec(
            id="root",
            start=lambda ctx: Supervisor.start(ctx, flags, children),
            start_timeout=start_timeout,
            hang_timeout=None,
            kind="supervisor",
        )
        cell = self.register(ROOT, spec)
        ctx = self.new_context(cell, self._root_exited)
        spec.start(ctx)
        cell.actor_class = "Supervisor"
        if not ctx.started.wait(start_timeout) or ctx.start_error is not None:
            reason = str(ctx.start_error) if ctx.start_error else "start timed out"
            self.unregister(ROOT)
            raise StartFailed(ROOT, reason)
        cell.ctx = ctx
        cell.state = CellState.RUNNING

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop the whole tree (children in reverse start order); True if it finished in time."""
        cell = self._cells.get(ROOT)
        if cell is None or cell.ctx is None:
            return True
        ctx = cell.ctx
        cell.state = CellState.STOPPING
        self.request_stop(cell, ctx)
        done = ctx.exited.wait(timeout)
        cell.state = CellState.STOPPED
        self.close_mailbox(cell, "system stopped")
        self.unregister(ROOT)
        return done

    def _root_exited(self, _generation: int, reason: ExitReason) -> None:
        cell = self._cells.get(ROOT)
        if cell is None or cell.state in (CellState.STOPPING, CellState.STOPPED):
            return  # stop() asked for it (and may already have unregistered the root)
        if reason.kind is ExitKind.START_FAILED:
            return  # start() raises StartFailed to its caller; this is not a running tree failing
        if reason.abnormal:
            cell_failure = cell.record_failure if cell is not None else None
            if cell_failure is not None:
                cell_failure(reason)
            self.report("root_exited", ROOT, reason=str(reason))
        if self._on_root_exit is not None:
            self._on_root_exit(reason)

    # the registry ----------------------------------------------------------------------------

    def register(self, path: str, spec: ChildSpec, *, owner: ActorContext | None = None) -> Cell:
        """Create the cell of a new path for the supervisor incarnation ``owner``.

        An abandoned owner may register nothing: its replacement owns the paths now. (It is
        abandoned before the replacement exists, so it can never overwrite the replacement's cells.)
        """
        with self._lock:
            if owner is not None and owner.abandoned.is_set():
                raise StartFailed(path, f"its supervisor {owner.path} was abandoned")
            cell = Cell(path, spec)
            self._cells[path] = cell
            return cell

    def unregister(self, path: str, cell: Cell | None = None) -> bool:
        """Forget a path that stopped for good; with ``cell``, only while ``path`` is still that cell
        (an abandoned supervisor must not unregister its replacement's child). True if removed."""
        with self._lock:
            if cell is not None and self._cells.get(path) is not cell:
                return False
            return self._cells.pop(path, None) is not None

    def cell(self, path: str) -> Cell:
        """The cell at ``path``; raises :class:`NoSuchActor`."""
        cell = self._cells.get(path)
        if cell is None:
            raise NoSuchActor(path)
        return cell

    def paths(self) -> list[str]:
        """Every registered path, sorted."""
        with self._lock:
            return sorted(self._cells)

    # the one factory -------------------------------------------------------------------------

    def new_context(self, cell: Cell, report_exit: Callable[[int, ExitReason], None]) -> ActorContext:
        """Context for the next incarnation of ``cell``; takes over its mailbox."""
        return ActorContext(
            system=self,
            path=cell.path,
            mailbox=cell.mailbox,
            generation=cell.mailbox.new_generation(),
            report_exit=report_exit,
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
        self.dropped_messages.labels(path=self.series(cell.path)).inc(len(left))
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
            ActorRegistry.unregister(actor.actor_ref)
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
                ActorRegistry.unregister(actor.actor_ref)
            child.started.set()  # wakes the abandoned supervisor if it was waiting for this start
            if self.unregister(cell.path, cell):
                parent.remove_child(cell.path)
            cell.state = CellState.STOPPED
            self.close_mailbox(cell, f"supervisor {parent.path} abandoned")
            self._cut_off_links(child, cell)

    # messaging -------------------------------------------------------------------------------

    def send(self, path: str, message: Any, *, reply_to: Any = None) -> None:
        """Queue ``message`` for the actor at ``path`` (resolved now)."""
        self.cell(path).mailbox.put(Envelope(message, reply_to))

    def tell(self, path: str, message: Any) -> None:
        """Fire-and-forget to a path; raises NoSuchActor / ActorStopped when undeliverable."""
        self.send(path, message)

    def ask(self, path: str, message: Any, *, timeout: float | None = 5.0) -> Any:
        """Blocking ask from an actor thread (never from the loop: use ``bridge.ask``)."""
        if self.bridge.affinity.on_loop():
            raise RuntimeError("ActorSystem.ask blocks; on the loop use bridge.ask")
        future: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
        self.send(path, message, reply_to=future)
        return future.get(timeout=timeout)

    def kill(self, path: str, reason: str) -> None:
        """Fail the actor at ``path`` on purpose; its supervisor restarts it by policy."""
        parent, message = kill_request(path, reason)
        self.ask(parent, message, timeout=60.0)

    # reports ---------------------------------------------------------------------------------

    def on_failure(self, listener: Callable[[str, ExitReason], None]) -> None:
        """Call ``listener(path, reason)`` (on the supervisor's thread) whenever an actor exits abnormally;
        the typed reason lets the listener tell a handled crash from an escalation or a kill."""
        self._failure_listeners.append(listener)

    def child_exited(self, path: str, reason: ExitReason, *, restarts: int) -> None:
        """Report a child's exit (its supervisor decides what follows); abnormal exits reach the listeners."""
        self.report("child_exited", path, level=logging.WARNING if reason.abnormal else logging.INFO,
                    reason=str(reason), kind=reason.kind.value, restarts=restarts)
        if reason.abnormal:
            for listener in self._failure_listeners:
                listener(path, reason)

    def report(self, event: str, path: str, *, level: int | None = None, **fields: Any) -> None:
        """One structured supervisor report line."""
        if level is None:
            level = logging.ERROR if event in ("escalation", "root_exited", "brutal_kill") else logging.INFO
        detail = " ".join(f"{k}={v}" for k, v in fields.items())
        log.log(
            level, "supervisor %s %s %s", event, path, detail, extra={"event": event, "path": path, **fields}
        )

    def count_restart(self, path: str, reason: ExitReason) -> None:
        """Bump ``hydrovisor_actor_restarts_total{path,reason}``."""
        self.restarts.labels(path=self.series(path), reason=reason.kind.value).inc()

    def count_stale(self, path: str) -> None:
        """Bump ``hydrovisor_actor_stale_messages_total{path}``."""
        self.stale_messages.labels(path=self.series(path)).inc()

    def series(self, path: str) -> str:
        """Metric label of ``path``: children of a dynamic supervisor share ``<supervisor>/*``, so one
        series per node or command does not grow without bound."""
        if path == ROOT:
            return path
        parent = path.rsplit("/", 1)[0] or ROOT
        cell = self._cells.get(parent)
        if cell is not None and cell.flags is not None and cell.flags.dynamic:
            return f"{parent.rstrip('/')}/*"
        return path
