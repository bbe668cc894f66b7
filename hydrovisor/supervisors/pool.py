"""The pooled dispatcher: many actors, a few worker threads (Akka's dispatcher, Orleans' turns).

A pooled actor has no thread. A message that makes its idle mailbox non-empty puts it on the run
queue (:mod:`mailbox`); a worker takes it, runs one *turn* — at most ``turn_messages`` messages,
strictly one after the other — and puts it back at the end of the queue if more are waiting, so
one busy actor cannot starve the others. An actor is on the queue at most once, hence runs on at
most one worker at a time, and its messages are handled in mailbox order.

Workers must not block (:mod:`hydrovisor.runtime.blocking`). What they cannot be stopped from doing:

- a blocking call the runtime sees (an ask, a bridge call) raises in strict mode, otherwise the pool
  starts a *spare* worker for its duration (up to ``max_spare_workers``);
- a turn that runs past ``stuck_after`` (``time.sleep``, socket I/O, a loop in a handler) is seen
  by the watchdog: a spare worker takes over the queue, the turn is reported (with the worker's
  stack) to the stuck-turn listeners, and the supervisor's hang detection (``busy_for_s`` per
  message) abandons and replaces the actor as it would a thread actor.

Spare workers retire once nothing is blocked or stuck any more.

:meth:`WorkerPool.stop` does not wait for a turn of an abandoned incarnation (its supervisor gave
up on a handler that does not return): Python cannot interrupt it, and the worker is a daemon
thread that ends when the handler returns.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Protocol

import msgspec

from hydrovisor.runtime.blocking import running

log = logging.getLogger("hydrovisor.pool")

# turn latency buckets (seconds); the last bucket is +Inf
TURN_BUCKETS = (0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0)
_SPARE_IDLE_S = 1.0


class PoolSettings(msgspec.Struct, frozen=True):
    """Size and limits of one worker pool (``[actors]`` in the settings)."""

    workers: int = 4
    turn_messages: int = 32
    max_spare_workers: int = 16
    stuck_after: float = 2.0
    strict: bool = False

    def __post_init__(self) -> None:
        if self.workers < 1 or self.turn_messages < 1 or self.max_spare_workers < 0:
            raise ValueError("workers and turn_messages must be >= 1, max_spare_workers >= 0")
        if self.stuck_after <= 0:
            raise ValueError("stuck_after must be > 0")


class PooledActor(Protocol):
    """What a worker needs of an actor: its path, one turn, and whether it was given up on."""

    scheduled: bool

    @property
    def path(self) -> str:
        """The actor's stable path."""

    @property
    def incarnation_abandoned(self) -> bool:
        """True once its supervisor gave up on it: a turn still running is not waited for."""

    def run_turn(self, budget: int) -> tuple[int, bool]:
        """Handle up to ``budget`` messages: (messages handled, whether it must be queued again)."""


class StuckTurn(msgspec.Struct, frozen=True):
    """A turn that ran past ``stuck_after``: which actor, on which worker, doing what."""

    path: str
    worker: str
    running_for_s: float
    stack: str


class Worker:
    """One pool thread and what it is running now (read by the watchdog and task dumps)."""

    __slots__ = ("actor", "ident", "latency", "lock", "messages", "name", "spare", "stuck", "thread",
                 "turn_started", "turns")

    def __init__(self, name: str, *, spare: bool) -> None:
        self.name = name
        self.spare = spare
        self.ident: int | None = None
        self.thread: threading.Thread | None = None
        self.actor: PooledActor | None = None
        self.turn_started: float | None = None
        # the end of a turn and the watchdog's verdict on it are taken under this lock, so that a
        # turn ending as it is found stuck, or the next turn on this worker, is never marked stuck
        self.lock = threading.Lock()
        self.stuck = False
        # written by this worker only, summed at scrape time: no lock on the hot path
        self.turns = 0
        self.messages = 0
        self.latency = [0] * (len(TURN_BUCKETS) + 1)


class WorkerPool:
    """A run queue and the worker threads that run pooled actors' turns."""

    def __init__(self, settings: PoolSettings | None = None, *, name: str = "actors") -> None:
        self.settings = settings or PoolSettings()
        self.strict = self.settings.strict
        self.name = name
        self._queue: queue.SimpleQueue[PooledActor | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._workers: list[Worker] = []
        self._retired_latency = [0] * (len(TURN_BUCKETS) + 1)
        self._retired_turns = 0
        self._retired_messages = 0
        self._spares = 0
        self._compensating = 0  # workers blocked in a compensated call or stuck in a turn
        self._serial = 0
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None
        self._stuck_listeners: list[Callable[[StuckTurn], None]] = []
        self.blocking_compensated = 0
        self.spare_cap_reached = 0
        self.stuck_turns = 0
        self.started = False

    # lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the core workers and the watchdog (idempotent; a stopped pool stays stopped:
        its workers would wait for ever on a run queue nobody feeds)."""
        with self._lock:
            if self.started or self._stopping.is_set():
                return
            self.started = True
        for _ in range(self.settings.workers):
            self._start_worker(spare=False)
        self._watchdog = threading.Thread(target=self._watch, name=f"{self.name}-watchdog", daemon=True)
        self._watchdog.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every worker after its current turn; queued actors are not run any more.

        Waits up to ``timeout`` s for the workers, except one in a turn of an abandoned
        incarnation: that handler does not return (its supervisor gave up on it), and the
        worker, a daemon thread, ends when it does.
        """
        self._stopping.set()
        with self._lock:
            workers = list(self._workers)
        for _ in workers:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for worker in workers:
            thread = worker.thread
            while thread is not None and thread.is_alive():
                actor = worker.actor
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (actor is not None and actor.incarnation_abandoned):
                    break
                thread.join(min(remaining, 0.05))
        if self._watchdog is not None:
            self._watchdog.join(max(0.0, deadline - time.monotonic()))

    def submit(self, actor: PooledActor) -> None:
        """Queue one turn of ``actor`` (its mailbox guarantees it is queued at most once)."""
        self._queue.put(actor)

    def on_stuck(self, listener: Callable[[StuckTurn], None]) -> None:
        """Call ``listener`` (on the watchdog thread) for every turn that gets stuck."""
        self._stuck_listeners.append(listener)

    # introspection ---------------------------------------------------------------------------

    def workers(self) -> list[Worker]:
        """A copy of the current workers (core and spare)."""
        with self._lock:
            return list(self._workers)

    def queue_depth(self) -> int:
        """Actors waiting for a worker."""
        return self._queue.qsize()

    def spare_workers(self) -> int:
        """Spare workers running now."""
        return self._spares

    def running_paths(self) -> list[str]:
        """Paths of the actors whose turn a worker runs right now (at most one per worker)."""
        return [actor.path for w in self.workers() if (actor := w.actor) is not None]

    def running_on(self) -> dict[int, str]:
        """Thread ident -> path of the actor whose turn that worker runs (for task dumps)."""
        return {w.ident: w.actor.path for w in self.workers() if w.ident is not None and w.actor is not None}

    def totals(self) -> tuple[int, int, list[int]]:
        """(turns, messages, turn latency bucket counts) since the pool started."""
        with self._lock:
            workers = list(self._workers)
            turns, messages = self._retired_turns, self._retired_messages
            latency = list(self._retired_latency)
        for worker in workers:
            turns += worker.turns
            messages += worker.messages
            for i, n in enumerate(worker.latency):
                latency[i] += n
        return turns, messages, latency

    # compensation ----------------------------------------------------------------------------

    @contextlib.contextmanager
    def compensate(self, what: str, path: str) -> Iterator[None]:
        """A worker waits in a blocking call: keep the pool's capacity with a spare worker."""
        log.warning("blocking %s by %s on a pool worker; a spare worker covers it", what, path,
                    extra={"event": "pool_blocking_call", "path": path, "call": what})
        with self._lock:
            self.blocking_compensated += 1  # under the lock: several workers may block at once
            spawn = self._compensation_started()
        if spawn:
            self._start_worker(spare=True)
        try:
            yield
        finally:
            with self._lock:
                self._compensating -= 1

    def _compensation_started(self) -> bool:
        """Under the pool lock: one more worker blocked or stuck; True: start a spare (reserved)."""
        self._compensating += 1
        spawn = self._spares < min(self._compensating, self.settings.max_spare_workers)
        if spawn and not self._stopping.is_set():
            self._spares += 1
            return True
        if self._spares < self._compensating and not self._stopping.is_set():
            self.spare_cap_reached += 1
        return False

    # workers ---------------------------------------------------------------------------------

    def _start_worker(self, *, spare: bool) -> None:
        with self._lock:
            self._serial += 1
            worker = Worker(f"{self.name}-{'spare' if spare else 'worker'}-{self._serial}", spare=spare)
            self._workers.append(worker)
        worker.thread = threading.Thread(target=self._run, args=(worker,), name=worker.name, daemon=True)
        worker.thread.start()

    def _run(self, worker: Worker) -> None:
        worker.ident = threading.get_ident()
        running.pool = self
        budget = self.settings.turn_messages
        try:
            while True:
                try:
                    actor = self._queue.get(timeout=_SPARE_IDLE_S) if worker.spare else self._queue.get()
                except queue.Empty:
                    if self._retire_if_spare(worker):
                        return
                    continue
                if actor is None or self._stopping.is_set():
                    return
                self._turn(worker, actor, budget)
                if worker.spare and self._retire_if_spare(worker):
                    return
        finally:
            self._forget(worker)

    def _turn(self, worker: Worker, actor: PooledActor, budget: int) -> None:
        worker.actor = actor
        running.path = actor.path
        started = worker.turn_started = time.monotonic()
        again = False
        handled = 0
        try:
            handled, again = actor.run_turn(budget)
        except BaseException:  # run_turn contains handler failures; this is a runtime bug
            log.exception("turn of %s failed in the runtime", actor.path,
                          extra={"event": "pool_turn_failed", "path": actor.path})
        finally:
            elapsed = time.monotonic() - started
            with worker.lock:
                worker.turn_started = None
                worker.actor = None
                was_stuck, worker.stuck = worker.stuck, False
                if was_stuck:
                    with self._lock:
                        self._compensating -= 1
            running.path = None
            worker.turns += 1
            worker.messages += handled
            worker.latency[bisect.bisect_left(TURN_BUCKETS, elapsed)] += 1
            if was_stuck:
                log.warning("stuck turn of %s ended after %.1f s", actor.path, elapsed,
                            extra={"event": "pool_turn_unstuck", "path": actor.path, "worker": worker.name})
        if again:
            self._queue.put(actor)

    def _retire_if_spare(self, worker: Worker) -> bool:
        with self._lock:
            if not worker.spare or (self._spares <= self._compensating and not self._stopping.is_set()):
                return False
            self._spares -= 1
            worker.spare = False  # counted out already; _forget must not count it again
            return True

    def _forget(self, worker: Worker) -> None:
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
            if worker.spare:  # a spare that ended without retiring (the pool stopped)
                self._spares -= 1
                worker.spare = False
            self._retired_turns += worker.turns
            self._retired_messages += worker.messages
            for i, n in enumerate(worker.latency):
                self._retired_latency[i] += n

    # watchdog --------------------------------------------------------------------------------

    def _watch(self) -> None:
        interval = min(1.0, self.settings.stuck_after / 2)
        while not self._stopping.wait(interval):
            now = time.monotonic()
            for worker in self.workers():
                with worker.lock:
                    started, actor = worker.turn_started, worker.actor
                    if worker.stuck or started is None or actor is None or now - started < self.settings.stuck_after:
                        continue
                    worker.stuck = True  # undone, with the compensation, by the end of this very turn
                    stack = _stack_of(worker.ident)  # taken while that turn surely still runs
                    with self._lock:
                        self.stuck_turns += 1
                        spawn = self._compensation_started()
                if spawn:
                    self._start_worker(spare=True)
                stuck = StuckTurn(path=actor.path, worker=worker.name, running_for_s=round(now - started, 3),
                                  stack=stack)
                log.error("turn of %s stuck on %s for %.1f s; a spare worker takes over", stuck.path,
                          stuck.worker, stuck.running_for_s,
                          extra={"event": "pool_turn_stuck", "path": stuck.path, "worker": stuck.worker,
                                 "stack": stuck.stack})
                for listener in self._stuck_listeners:
                    try:
                        listener(stuck)
                    except Exception:
                        log.exception("stuck-turn listener failed")


def _stack_of(ident: int | None) -> str:
    frame = sys._current_frames().get(ident) if ident is not None else None
    return "".join(traceback.format_stack(frame)) if frame is not None else ""
