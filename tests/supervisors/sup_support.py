"""Helpers shared by the supervision tests: polling with deadlines, a thread-safe journal, test actors.

Everything here runs on real threads and a real loop; nothing is mocked. Tests observe the tree
through the journal (``on_start`` / ``on_stop`` / handled messages, appended from actor threads),
through ``system.cell(path)`` and through the supervisor reports logged by the library.

Every test runs against both execution models (``conftest.py`` parametrizes it): the child specs
built here (:func:`worker`, :func:`child`) run their incarnations on their own thread or on the
system's worker pool, as :func:`use_execution` last chose.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from hydrovisor.supervisors import (
    ActorContext,
    ActorSystem,
    ChildSpec,
    SupervisedActor,
)
from hydrovisor.supervisors.messages import CheckLiveness
from hydrovisor.supervisors.pool import PoolSettings
from hydrovisor.supervisors.spec import Execution

MakeSystem = Callable[..., ActorSystem]
"""Type of the ``make_system`` fixture: ``make_system(flags, children, start=True, pool=None)``."""

TEST_POOL = PoolSettings(workers=4, stuck_after=0.3, strict=True)
"""The pool of test systems: strict (a blocking call in a pooled handler is a bug), and a short
``stuck_after`` so that tests blocking a handler on purpose get a spare worker quickly."""

_execution = [Execution.THREAD]


def use_execution(execution: Execution) -> None:
    """Execution model of the test specs built from now on (set per test by ``conftest.py``)."""
    _execution[0] = execution


def current_execution() -> Execution:
    """Execution model the current test runs its (non-supervisor) children with."""
    return _execution[0]


def pooled() -> bool:
    """True when this test's children run on the worker pool."""
    return _execution[0] is Execution.POOL


class Journal:
    """Append-only event list written from many threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[Any, ...]] = []

    def add(self, *event: Any) -> None:
        with self._lock:
            self._items.append(event)

    def items(self) -> list[tuple[Any, ...]]:
        with self._lock:
            return list(self._items)

    def mark(self) -> int:
        """Position to read new events from with :meth:`since`."""
        with self._lock:
            return len(self._items)

    def since(self, mark: int) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._items[mark:]

    def of(self, kind: str, since: int = 0) -> list[tuple[Any, ...]]:
        return [e for e in self.since(since) if e[0] == kind]


class Crash(RuntimeError):
    """The exception test actors raise on command."""


class Worker(SupervisedActor):
    """A test actor whose lifecycle and handled messages go to a :class:`Journal`.

    Messages: ``"ping"`` -> ``(name, generation)``; ``"crash"`` raises :class:`Crash`;
    ``"stop-self"`` asks pykka to stop this actor cleanly (exit kind ``normal``);
    ``("raise", exc)`` raises ``exc``; ``("block", event)`` blocks until ``event`` is set;
    ``("seq", n)`` journals ``("seq", name, generation, n)`` and returns ``n``.
    """

    def __init__(
        self,
        ctx: ActorContext,
        journal: Journal,
        *,
        fail_start: Callable[[ActorContext], BaseException | None] | None = None,
        block_start: threading.Event | None = None,
        block_stop: threading.Event | None = None,
    ) -> None:
        super().__init__(ctx)
        self.journal = journal
        self.fail_start = fail_start
        self.block_start = block_start
        self.block_stop = block_stop

    @property
    def tag(self) -> tuple[str, int]:
        return self.ctx.name, self.ctx.generation

    def on_start(self) -> None:
        # the thread (its own, or the pool worker running this turn) and the incarnation's context
        self.journal.add("start", *self.tag, threading.current_thread(), self.ctx)
        if self.block_start is not None:
            self.block_start.wait()
        if self.fail_start is not None:
            error = self.fail_start(self.ctx)
            if error is not None:
                raise error

    def on_stop(self) -> None:
        self.journal.add("stop", *self.tag)
        if self.block_stop is not None:
            self.block_stop.wait()

    def on_failure(self, *_: Any) -> None:
        self.journal.add("failure", *self.tag)

    def on_receive(self, message: Any) -> Any:
        if message == "ping":
            return self.tag
        if message == "crash":
            raise Crash(f"{self.ctx.path} crashed on command")
        if message == "stop-self":
            self.stop()
            return None
        kind, arg = message
        if kind == "raise":
            raise arg
        if kind == "block":
            self.journal.add("blocked", *self.tag)
            arg.wait()
            self.journal.add("unblocked", *self.tag)
            return "released"
        if kind == "seq":
            self.journal.add("seq", *self.tag, arg)
            return arg
        raise AssertionError(f"unexpected test message {message!r}")


def worker(
    child_id: str, journal: Journal, actor_kwargs: dict[str, Any] | None = None, **spec: Any
) -> ChildSpec:
    """Child spec of a :class:`Worker`; ``spec`` are ChildSpec fields (restart, backoff ...)."""
    kwargs = actor_kwargs or {}
    return child(child_id, lambda ctx: Worker.start(ctx, journal, **kwargs), **spec)


def child(child_id: str, start: Callable[[ActorContext], Any], **spec: Any) -> ChildSpec:
    """A test child spec running with the current test's execution model (unless ``execution=``)."""
    spec.setdefault("execution", current_execution())
    return ChildSpec(child_id, start, **spec)


def starts(journal: Journal, since: int = 0) -> list[tuple[str, int]]:
    """``(name, generation)`` of every ``on_start`` since ``since``, in order."""
    return [(e[1], e[2]) for e in journal.of("start", since)]


def stops(journal: Journal, since: int = 0) -> list[tuple[str, int]]:
    return [(e[1], e[2]) for e in journal.of("stop", since)]


def generation(system: ActorSystem, path: str) -> int | None:
    """Generation of the running incarnation at ``path`` (None while none runs)."""
    ctx = system.cell(path).ctx
    return None if ctx is None else ctx.generation


def barrier(system: ActorSystem, supervisor_path: str = "/") -> None:
    """Return once the supervisor handled everything queued before this call."""
    system.ask(supervisor_path, CheckLiveness(), timeout=5)


def restart_count(system: ActorSystem, path: str, reason: str | None = None) -> float:
    """Value of ``hydrovisor_actor_restarts_total{path, reason}`` (summed over reasons if None)."""
    total = 0.0
    for metric in system.restarts.collect():
        for sample in metric.samples:
            if not sample.name.endswith("_total"):
                continue
            if sample.labels["path"] == path and reason in (None, sample.labels["reason"]):
                total += sample.value
    return total


def incarnation_running(thread: threading.Thread, ctx: ActorContext) -> bool:
    """Is this incarnation still running code (a handler, ``on_start``, its loop)?

    A thread incarnation runs until its own thread ends. A pooled one has no thread: it is done
    once it exited (``ctx.exited``) *and* no pool worker is still in a turn of it, i.e. the worker
    it held is free again.
    """
    pool = ctx.pool
    if pool is None:
        return thread.is_alive()
    if not ctx.exited.is_set():
        return True
    # by context: an exited incarnation's context no longer points at its actor (ctx.release)
    return any(getattr(w.actor, "ctx", None) is ctx for w in pool.workers())


def running_incarnations(journal: Journal, name: str | None = None) -> list[tuple[str, int]]:
    """``(name, generation)`` of every incarnation that ran ``on_start`` and is still running."""
    return [
        (e[1], e[2]) for e in journal.of("start")
        if (name is None or e[1] == name) and incarnation_running(e[3], e[4])
    ]


class Reports(logging.Handler):
    """Collects the structured supervisor reports (``extra={"event": ..., "path": ...}``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def events(self, event: str, path: str | None = None) -> list[dict[str, Any]]:
        return [
            r.__dict__
            for r in list(self.records)
            if getattr(r, "event", None) == event and (path is None or getattr(r, "path", None) == path)
        ]
