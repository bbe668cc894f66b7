"""The supervisor actor: starts children in order, restarts them by strategy, escalates by intensity."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pykka

from hydrovisor.supervisors.actor import SupervisedActor
from hydrovisor.supervisors.cell import Cell, CellState
from hydrovisor.supervisors.context import ActorContext
from hydrovisor.supervisors.errors import (
    CapacityExceeded,
    DuplicateChild,
    Escalated,
    NoSuchActor,
    StartFailed,
)
from hydrovisor.supervisors.exit import SHUTDOWN, ExitKind, ExitReason
from hydrovisor.supervisors.intensity import add_restart
from hydrovisor.supervisors.messages import (
    CheckLiveness,
    ChildExited,
    KillChild,
    RestartDue,
    StartChild,
    StartChildren,
    StartedChildren,
    TerminateChild,
)
from hydrovisor.supervisors.spec import ChildSpec, Execution, Restart, Strategy, SupervisorFlags

if TYPE_CHECKING:
    from hydrovisor.runtime.timers import Timer

log = logging.getLogger("hydrovisor.supervisor")

# the initial children, or a function giving them at every (re)start (e.g. from a registry)
Children = Sequence[ChildSpec] | Callable[[], Sequence[ChildSpec]]


def should_restart(restart: Restart, reason: ExitReason) -> bool:
    """OTP restart types: permanent always, transient after abnormal exits (not after an exceeded
    intensity, OTP's ``shutdown``), temporary never."""
    if restart is Restart.PERMANENT:
        return True
    return restart is Restart.TRANSIENT and reason.restarts_transient


class Supervisor(SupervisedActor):
    """Supervises an ordered list of children (static) or a capped set started at runtime (dynamic)."""

    def __init__(self, ctx: ActorContext, flags: SupervisorFlags, children: Children) -> None:
        super().__init__(ctx)
        self.flags = flags
        self._initial = children
        self._cells: dict[str, Cell] = {}  # by child id, in start order
        self._thread_children: dict[str, None] = {}  # ids of the children on their own threads
        self._history: tuple[float, ...] = ()
        self._restart_token = 0
        self._pending_restarts: dict[str, int] = {}  # child id -> token of its backed-off restart
        self._ticker: Timer | None = None
        # the path's cell, owned by our parent: resolved once, because an abandoned incarnation
        # must keep acting on its own cell, never on a replacement registered under the same path
        self._cell = ctx.system.cell(ctx.path)

    # lifecycle -------------------------------------------------------------------------------

    def on_start(self) -> None:
        self._cell.flags = self.flags
        specs = self._initial() if callable(self._initial) else self._initial
        if self.flags.dynamic:  # interchangeable children: no start order to keep, launch them together
            failed = self._start_many(specs).failed
            if failed:
                self._terminate_all()
                raise StartFailed(self.path, f"{len(failed)} children failed to start; first: {failed[0][1]}")
        for spec in () if self.flags.dynamic else specs:
            try:
                self._add(spec)
            except StartFailed:
                self._terminate_all()
                raise
        ref = self.actor_ref  # the ticker ends with this incarnation (tell raises ActorDeadError)
        self._ticker = self.ctx.system.timers.every(self.flags.liveness_interval, lambda: ref.tell(CheckLiveness()))

    def on_stop(self) -> None:
        self._shutdown()

    def on_failure(self, *_: Any) -> None:
        self._shutdown()

    def _shutdown(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
        self._terminate_all()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, ChildExited):
            self._on_child_exit(message)
        elif isinstance(message, CheckLiveness):
            self._check_liveness()
        elif isinstance(message, RestartDue):
            due = tuple(i for i in message.child_ids if self._pending_restarts.get(i) == message.token)
            for child_id in due:
                del self._pending_restarts[child_id]
            self._start_group(due)
        elif isinstance(message, StartChild):
            return self._start_dynamic(message.spec)
        elif isinstance(message, StartChildren):
            self._check_room(len(message.specs))
            return self._start_many(message.specs)
        elif isinstance(message, TerminateChild):
            self._terminate_for_good(message.child_id)
        elif isinstance(message, KillChild):
            self._kill(message)
        else:
            return super().on_receive(message)
        return None

    # starting --------------------------------------------------------------------------------

    def _child_path(self, child_id: str) -> str:
        return f"/{child_id}" if self.path == "/" else f"{self.path}/{child_id}"

    def _add(self, spec: ChildSpec) -> str:
        path = self._child_path(spec.id)
        if spec.id in self._cells:
            raise DuplicateChild(path)
        cell = self._register(spec)
        try:
            self._spawn(cell)
            self.ctx.system.report("child_started", cell.path)
        except StartFailed as exc:
            self._start_failed(cell, exc)
            raise
        return path

    def _register(self, spec: ChildSpec) -> Cell:
        cell = self.ctx.system.register(self._child_path(spec.id), spec, owner=self.ctx)
        self._cells[spec.id] = cell
        if spec.execution is Execution.THREAD:
            self._thread_children[spec.id] = None
        self._cell.add_child(cell.path)
        return cell

    def _check_room(self, more: int) -> None:
        if self.flags.max_children is not None and len(self._cells) + more > self.flags.max_children:
            raise CapacityExceeded(self.path, self.flags.max_children)

    def _start_dynamic(self, spec: ChildSpec) -> str:
        self._check_room(1)
        return self._add(spec)

    def _start_many(self, specs: Sequence[ChildSpec]) -> StartedChildren:
        """Launch every child, then wait for each start: one wait for the slowest, not one per child."""
        seen: set[str] = set()
        for spec in specs:
            if spec.id in self._cells or spec.id in seen:
                raise DuplicateChild(self._child_path(spec.id))
            seen.add(spec.id)
        launched: list[tuple[Cell, ActorContext | StartFailed, float]] = []
        for spec in specs:
            cell = self._register(spec)
            at = time.monotonic()
            try:
                launched.append((cell, self._launch(cell), at))
            except StartFailed as exc:
                launched.append((cell, exc, at))
        started: list[str] = []
        failed: list[tuple[str, str]] = []
        for cell, ctx, at in launched:
            try:
                if isinstance(ctx, StartFailed):
                    raise ctx
                self._await_start(cell, ctx, launched_at=at)
            except StartFailed as exc:
                self._start_failed(cell, exc)
                failed.append((cell.path, exc.reason))
                continue
            # one line per child would be 45 % of a batch's cost: per child at DEBUG, a summary below
            self.ctx.system.report("child_started", cell.path, level=logging.DEBUG)
            started.append(cell.path)
        self.ctx.system.report("children_started", self.path, started=len(started), failed=len(failed),
                               level=logging.WARNING if failed else logging.INFO)
        return StartedChildren(tuple(started), tuple(failed))

    def _start_failed(self, cell: Cell, exc: StartFailed) -> None:
        cell.record_failure(ExitReason(ExitKind.START_FAILED, exc.reason))
        cell.state = CellState.STOPPED
        self.ctx.system.close_mailbox(cell, f"start failed: {exc.reason}")
        self._forget(cell)

    def _spawn(self, cell: Cell) -> None:
        """Start one incarnation and wait for its ``on_start``; raises StartFailed."""
        self._await_start(cell, self._launch(cell))

    def _launch(self, cell: Cell) -> ActorContext:
        """Create and start the next incarnation of ``cell`` (its ``on_start`` may still be running)."""
        ctx = self.ctx.system.new_context(cell, self._report_exit_for(cell.spec.id))
        cell.state = CellState.STARTING
        self.ctx.links[cell.path] = (cell, ctx)
        try:
            ref = cell.spec.start(ctx)
        except Exception as exc:  # a factory bug is a start failure, not a supervisor crash
            raise StartFailed(cell.path, f"{type(exc).__name__}: {exc}") from exc
        cell.actor_class = ref.actor_class.__name__
        return ctx

    def _await_start(self, cell: Cell, ctx: ActorContext, *, launched_at: float | None = None) -> None:
        """Wait for the incarnation's ``on_start`` (``start_timeout`` from its launch); raises StartFailed."""
        timeout = cell.spec.start_timeout
        left = timeout if launched_at is None else launched_at + timeout - time.monotonic()
        if not ctx.started.wait(max(0.0, left)):
            self.ctx.system.abandon(cell, ctx)
            raise StartFailed(cell.path, f"on_start did not finish in {cell.spec.start_timeout}s")
        if ctx.abandoned.is_set():  # we were given up on meanwhile, and this start with us
            raise StartFailed(cell.path, f"its supervisor {self.path} was abandoned")
        if ctx.start_error is not None:
            raise StartFailed(cell.path, str(ctx.start_error))
        cell.ctx = ctx
        cell.state = CellState.RUNNING
        cell.started_at = time.monotonic()

    def _report_exit_for(self, child_id: str) -> Any:
        # The path mailbox outlives this supervisor incarnation: tag reports with it, so that the
        # next incarnation does not mistake an exit of our children for one of its own.
        parent_generation = self.ctx.generation

        def report(generation: int, reason: ExitReason) -> None:
            self._tell_self(ChildExited(child_id, generation, reason, parent_generation))

        return report

    def _tell_self(self, message: Any) -> None:
        # through this incarnation's ref: a successor drops it (a stale RestartDue token or exit report)
        with contextlib.suppress(pykka.ActorDeadError):
            self.actor_ref.tell(message)

    # failures --------------------------------------------------------------------------------

    def _on_child_exit(self, msg: ChildExited) -> None:
        cell = self._cells.get(msg.child_id)
        if (
            msg.parent_generation != self.ctx.generation
            or cell is None
            or cell.ctx is None
            or cell.ctx.generation != msg.generation
            or cell.state is not CellState.RUNNING
        ):
            return  # a stale report: that incarnation was already stopped or replaced
        cell.ctx = None
        self._child_failed(cell, msg.reason)

    def _check_liveness(self) -> None:
        """Abandon children busy in one handler past their hang timeout.

        Only children that can be busy are looked at: thread children, and the pooled children
        whose turn a pool worker runs right now (at most one per worker). A sweep over every child
        each second would cost O(children) — 0.05 cores idle and restarts queued behind it with
        100,000 pooled children."""
        now = time.monotonic()
        for cell in self._busy_candidates():
            ctx = cell.ctx
            if ctx is None or ctx.actor is None or cell.state is not CellState.RUNNING:
                continue
            busy_since = ctx.actor.busy_since
            hang = cell.spec.hang_timeout
            if hang is not None and busy_since is not None and now - busy_since > hang:
                self.ctx.system.abandon(cell, ctx)
                cell.ctx = None
                self._child_failed(cell, ExitReason(ExitKind.HUNG, f"handler busy for over {hang}s"))

    def _busy_candidates(self) -> list[Cell]:
        cells = [self._cells[i] for i in self._thread_children if i in self._cells]
        for path in self.ctx.system.running_pooled_paths():
            parent, _, child_id = path.rpartition("/")
            if (parent or "/") == self.path and (cell := self._cells.get(child_id)) is not None:
                cells.append(cell)
        return cells

    def _kill(self, msg: KillChild) -> None:
        cell = self._cells.get(msg.child_id)
        if cell is None or cell.state is not CellState.RUNNING:
            raise NoSuchActor(self._child_path(msg.child_id))
        self._terminate(cell, drain=False)
        self._child_failed(cell, ExitReason(ExitKind.KILLED, msg.reason))

    def _child_failed(self, cell: Cell, reason: ExitReason, *, retry: bool = False) -> None:
        backoff = cell.spec.backoff
        if backoff is not None and not retry and time.monotonic() - cell.started_at > backoff.reset_after:
            cell.consecutive_restarts = 0  # it ran long enough: this failure starts a new series
        if reason.abnormal:
            cell.record_failure(reason)
        self.ctx.system.child_exited(cell.path, reason, restarts=cell.restarts_total)
        if not should_restart(cell.spec.restart, reason):
            self._retire(cell, reason)
            return
        self._history, exceeded = add_restart(
            self._history, time.monotonic(), self.flags.max_restarts, self.flags.period
        )
        if exceeded:
            self.ctx.system.report(
                "escalation",
                self.path,
                reason=f"child {cell.path}: {reason}",
                restarts=len(self._history) - 1,
            )
            self._terminate_all()
            raise Escalated(
                f"{self.path}: more than {self.flags.max_restarts} restarts in "
                f"{self.flags.period}s; last: {cell.path} {reason}"
            )
        cell.record_restart()
        self.ctx.system.count_restart(cell.path, reason)
        self._restart(cell, retry=retry)

    def _restart(self, failed: Cell, *, retry: bool = False) -> None:
        """Restart ``failed`` and its group by strategy; a ``retry`` (the previous attempt failed to
        start) goes through the mailbox, like OTP's ``try_again_restart``, so that the supervisor
        handles what is queued for it between two attempts instead of looping on a broken child."""
        if self.flags.strategy is Strategy.ONE_FOR_ONE:
            group = [failed.spec.id]  # no list of every child: O(1) with 100,000 of them
        else:
            ids = list(self._cells)
            group = ids if self.flags.strategy is Strategy.ONE_FOR_ALL else ids[ids.index(failed.spec.id):]
        for child_id in reversed(group):
            if child_id != failed.spec.id:
                # no drain: the path lives on, its backlog goes to the next incarnation unharmed
                self._terminate(self._cells[child_id], drain=False)
        survivors = []
        for child_id in group:
            cell = self._cells[child_id]
            if child_id != failed.spec.id and cell.state is CellState.STOPPED:
                continue  # stopped for good (a transient that finished, its mailbox closed)
            if child_id != failed.spec.id and cell.spec.restart is Restart.TEMPORARY:
                self._retire(cell, SHUTDOWN)
            else:
                cell.state = CellState.RESTARTING
                survivors.append(child_id)
        delay = failed.spec.backoff.delay(failed.consecutive_restarts) if failed.spec.backoff else 0.0
        self._restart_token += 1
        for child_id in survivors:  # this decision supersedes any backed-off restart still pending
            self._pending_restarts.pop(child_id, None)
        if delay > 0 or retry:
            token = self._restart_token
            self._pending_restarts.update(dict.fromkeys(survivors, token))
            msg = RestartDue(tuple(survivors), token)
            if delay > 0:
                self.ctx.system.timers.after(delay, lambda: self._tell_self(msg))
            else:
                self._tell_self(msg)
        else:
            self._start_group(tuple(survivors))

    def _start_group(self, child_ids: Sequence[str]) -> None:
        for child_id in child_ids:
            cell = self._cells.get(child_id)
            if cell is None or cell.state is not CellState.RESTARTING:
                continue
            try:
                self._spawn(cell)
            except StartFailed as exc:
                # counts as one more restart; siblings still waiting are started below
                self._child_failed(cell, ExitReason(ExitKind.START_FAILED, exc.reason), retry=True)
                continue
            self.ctx.system.report("child_restarted", cell.path, restarts=cell.restarts_total)

    # stopping --------------------------------------------------------------------------------

    def _terminate(self, cell: Cell, *, drain: bool = True) -> None:
        """Stop the running incarnation (if any); keep the mailbox.

        Graceful (``drain``): the child handles its backlog for up to its shutdown timeout, then
        gets the same timeout for ``on_stop``; a handler still running when the drain time is over
        gets one more timeout to return. Past those it is brutally killed (abandoned).
        """
        ctx = self._request_terminate(cell, drain=drain)
        if ctx is not None:
            self._await_terminated(cell, ctx, drain=drain, requested_at=time.monotonic())

    def _request_terminate(self, cell: Cell, *, drain: bool) -> ActorContext | None:
        """Ask the running incarnation to stop; returns it, or None when there is nothing to stop."""
        ctx = cell.ctx
        cell.ctx = None
        if ctx is None or ctx.exited.is_set() or ctx.abandoned.is_set():
            return None
        cell.state = CellState.STOPPING
        self.ctx.system.request_stop(cell, ctx, drain=drain)
        return ctx

    def _await_terminated(self, cell: Cell, ctx: ActorContext, *, drain: bool, requested_at: float) -> None:
        """Wait for a requested stop within the shutdown timeouts, else abandon the incarnation."""
        timeout = cell.spec.shutdown_timeout
        left = requested_at + (2 * timeout if drain else timeout) - time.monotonic()
        if not ctx.stopping.wait(max(0.0, left)) or not ctx.exited.wait(timeout):
            self.ctx.system.report(
                "brutal_kill",
                cell.path,
                reason=f"no exit within its shutdown timeout ({timeout}s); thread abandoned",
            )
            self.ctx.system.abandon(cell, ctx)

    def _retire(self, cell: Cell, reason: ExitReason) -> None:
        """Stop a child for good: close its mailbox, forget it if temporary or dynamic."""
        self._terminate(cell)
        cell.state = CellState.STOPPED
        self.ctx.system.close_mailbox(cell, str(reason))
        if cell.spec.restart is Restart.TEMPORARY or self.flags.dynamic:
            self._forget(cell)

    def _forget(self, cell: Cell) -> None:
        self._cells.pop(cell.spec.id, None)
        self._thread_children.pop(cell.spec.id, None)
        self._unlink(cell)

    def _unlink(self, cell: Cell) -> None:
        self.ctx.links.pop(cell.path, None)
        if self.ctx.system.unregister(cell.path, cell):
            self._cell.remove_child(cell.path)

    def _terminate_for_good(self, child_id: str) -> None:
        cell = self._cells.get(child_id)
        if cell is None:
            raise NoSuchActor(self._child_path(child_id))
        self._retire(cell, SHUTDOWN)
        if child_id in self._cells:
            self._forget(cell)
        self.ctx.system.report("child_terminated", cell.path)

    def _terminate_all(self) -> None:
        """Stop every child: in reverse start order, or (dynamic children, like OTP's
        simple_one_for_one) all at once, so that stopping N children costs one wait, not N."""
        cells = [self._cells.pop(child_id) for child_id in reversed(list(self._cells))]
        self._thread_children.clear()
        if self.flags.dynamic:
            requested_at = time.monotonic()
            stopping = [(cell, self._request_terminate(cell, drain=True)) for cell in cells]
            for cell, ctx in stopping:
                if ctx is not None:
                    self._await_terminated(cell, ctx, drain=True, requested_at=requested_at)
                self._stopped_for_good(cell)
            return
        for cell in cells:
            self._terminate(cell)
            self._stopped_for_good(cell)

    def _stopped_for_good(self, cell: Cell) -> None:
        cell.state = CellState.STOPPED
        self.ctx.system.close_mailbox(cell, f"parent {self.path} stopped")
        self._unlink(cell)
