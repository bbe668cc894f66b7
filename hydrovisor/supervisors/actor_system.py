"""``ActorSystem``: the root of the tree, and the one facade over the jobs it is made of.

- :mod:`path_registry`: stable paths → cells (``register``, ``unregister``, ``cell``, ``paths``);
- :mod:`incarnations`: the one factory (``new_context``), stop requests, abandonment, closing mailboxes;
- :mod:`messaging`: ``send``, ``tell``, ``ask`` and ``kill`` by path, resolved at send time;
- :mod:`metrics`: the restart / dropped / stale counters and their bounded ``series`` labels;
- :mod:`reports`: structured supervisor reports and the listeners of abnormal exits.

This module starts and stops the tree; every other method delegates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from hydrovisor.runtime.bridge import Bridge
from hydrovisor.runtime.timers import TimerService
from hydrovisor.supervisors.cell import Cell, CellState
from hydrovisor.supervisors.context import ActorContext
from hydrovisor.supervisors.errors import StartFailed
from hydrovisor.supervisors.exit import ExitKind, ExitReason
from hydrovisor.supervisors.incarnations import Incarnations
from hydrovisor.supervisors.messaging import Messenger
from hydrovisor.supervisors.metrics import ActorCounters
from hydrovisor.supervisors.path_registry import ROOT, PathRegistry
from hydrovisor.supervisors.pool import PoolSettings, WorkerPool
from hydrovisor.supervisors.reports import Reports
from hydrovisor.supervisors.spec import ChildSpec, SupervisorFlags


class ActorSystem:
    """Owns the supervision tree. Create one per process (tests may create several)."""

    def __init__(
        self,
        *,
        bridge: Bridge,
        timers: TimerService,
        registry: CollectorRegistry | None = None,
        on_root_exit: Callable[[ExitReason], None] | None = None,
        pool: PoolSettings | None = None,
    ) -> None:
        self.bridge = bridge
        self.timers = timers
        self._pool = WorkerPool(pool)
        self._on_root_exit = on_root_exit
        self._paths = PathRegistry()
        self._counters = ActorCounters(self._paths, registry)
        self._incarnations = Incarnations(self, self._paths, self._counters)
        self._messenger = Messenger(self._paths, bridge)
        self._reports = Reports()
        bridge.attach(self)

    @property
    def pool(self) -> WorkerPool:
        """The worker pool of pooled actors (its threads start with the first pooled actor)."""
        if not self._pool.started:
            self._pool.start()
        return self._pool

    def running_pooled_paths(self) -> list[str]:
        """Paths of the pooled actors in a turn right now (without starting the pool)."""
        return self._pool.running_paths()

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
        cell = self._paths.get(ROOT)
        if cell is None or cell.ctx is None:
            self._pool.stop()  # a start that failed may have started the pool already
            return True
        ctx = cell.ctx
        cell.state = CellState.STOPPING
        self.request_stop(cell, ctx)
        done = ctx.exited.wait(timeout)
        cell.state = CellState.STOPPED
        self.close_mailbox(cell, "system stopped")
        self.unregister(ROOT)
        self._pool.stop()
        return done

    def _root_exited(self, _generation: int, reason: ExitReason) -> None:
        cell = self._paths.get(ROOT)
        if cell is None or cell.state in (CellState.STOPPING, CellState.STOPPED):
            return  # stop() asked for it (and may already have unregistered the root)
        if reason.kind is ExitKind.START_FAILED:
            return  # start() raises StartFailed to its caller; this is not a running tree failing
        if reason.abnormal:
            cell.record_failure(reason)
            self.report("root_exited", ROOT, reason=str(reason))
        if self._on_root_exit is not None:
            self._on_root_exit(reason)

    # the registry (path_registry.py) ---------------------------------------------------------

    def register(self, path: str, spec: ChildSpec, *, owner: ActorContext | None = None) -> Cell:
        """Create the cell of a new path for the supervisor incarnation ``owner`` (none if abandoned)."""
        return self._paths.register(path, spec, owner=owner)

    def unregister(self, path: str, cell: Cell | None = None) -> bool:
        """Forget a path that stopped for good (with ``cell``: only while it is still that cell)."""
        return self._paths.unregister(path, cell)

    def cell(self, path: str) -> Cell:
        """The cell at ``path``; raises :class:`NoSuchActor`."""
        return self._paths.cell(path)

    def paths(self) -> list[str]:
        """Every registered path, sorted."""
        return self._paths.paths()

    # the one factory (incarnations.py) -------------------------------------------------------

    def new_context(self, cell: Cell, report_exit: Callable[[int, ExitReason], None]) -> ActorContext:
        """Context for the next incarnation of ``cell``; takes over its mailbox."""
        return self._incarnations.new_context(cell, report_exit)

    def request_stop(self, cell: Cell, ctx: ActorContext, *, drain: bool = True) -> None:
        """Ask one incarnation to stop: behind its backlog (``drain``) or after its current message."""
        self._incarnations.request_stop(cell, ctx, drain=drain)

    def close_mailbox(self, cell: Cell, reason: str) -> None:
        """Close a path's mailbox for good; what is left unhandled is counted and reported."""
        self._incarnations.close_mailbox(cell, reason)

    def abandon(self, cell: Cell, ctx: ActorContext) -> None:
        """Give up on an incarnation (hung, too slow to start or stop), and on what it started."""
        self._incarnations.abandon(cell, ctx)

    @property
    def abandoned_threads(self) -> int:
        """Incarnations given up on (their threads may still be running: Python cannot kill one)."""
        return self._incarnations.abandoned_threads

    # messaging (messaging.py) ----------------------------------------------------------------

    def send(self, path: str, message: Any, *, reply_to: Any = None) -> None:
        """Queue ``message`` for the actor at ``path`` (resolved now)."""
        self._messenger.send(path, message, reply_to=reply_to)

    def tell(self, path: str, message: Any) -> None:
        """Fire-and-forget to a path; raises NoSuchActor / ActorStopped when undeliverable."""
        self._messenger.tell(path, message)

    def ask(self, path: str, message: Any, *, timeout: float | None = 5.0) -> Any:
        """Blocking ask from an actor thread (never from the loop: use ``bridge.ask``)."""
        return self._messenger.ask(path, message, timeout=timeout)

    def kill(self, path: str, reason: str) -> None:
        """Fail the actor at ``path`` on purpose; its supervisor restarts it by policy."""
        self._messenger.kill(path, reason)

    # reports (reports.py) --------------------------------------------------------------------

    def on_failure(self, listener: Callable[[str, ExitReason], None]) -> None:
        """Call ``listener(path, reason)`` (on the supervisor's thread) whenever an actor exits abnormally."""
        self._reports.on_failure(listener)

    def child_exited(self, path: str, reason: ExitReason, *, restarts: int) -> None:
        """Report a child's exit; abnormal exits reach the failure listeners."""
        self._reports.child_exited(path, reason, restarts=restarts)

    def report(self, event: str, path: str, *, level: int | None = None, **fields: Any) -> None:
        """One structured supervisor report line."""
        self._reports.report(event, path, level=level, **fields)

    # metrics (metrics.py) --------------------------------------------------------------------

    @property
    def restarts(self) -> Counter:
        """``hydrovisor_actor_restarts_total{path,reason}``."""
        return self._counters.restarts

    @property
    def dropped_messages(self) -> Counter:
        """``hydrovisor_actor_dropped_messages_total{path}``."""
        return self._counters.dropped_messages

    @property
    def stale_messages(self) -> Counter:
        """``hydrovisor_actor_stale_messages_total{path}``."""
        return self._counters.stale_messages

    def count_restart(self, path: str, reason: ExitReason) -> None:
        """Bump ``hydrovisor_actor_restarts_total{path,reason}``."""
        self._counters.count_restart(path, reason)

    def count_stale(self, path: str) -> None:
        """Bump ``hydrovisor_actor_stale_messages_total{path}``."""
        self._counters.count_stale(path)

    def series(self, path: str) -> str:
        """Metric label of ``path`` (children of a dynamic supervisor share ``<supervisor>/*``)."""
        return self._counters.series(path)
