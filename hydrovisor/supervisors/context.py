"""What a supervised actor is given: its stable path, mailbox, incarnation and parent link."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from hydrovisor.supervisors.exit import ExitReason

if TYPE_CHECKING:
    from hydrovisor.supervisors.actor import SupervisedActor
    from hydrovisor.supervisors.actor_system import ActorSystem
    from hydrovisor.supervisors.cell import Cell
    from hydrovisor.supervisors.mailbox import Mailbox
    from hydrovisor.supervisors.pool import WorkerPool

# Guards the flag and the waiting Event of every LazyEvent: held only for a few bytecodes (never
# while waiting), so one lock for all of them costs less than one lock each.
_LAZY_EVENT_LOCK = threading.Lock()


class LazyEvent(threading.Event):
    """A :class:`threading.Event` that allocates its waiting machinery only when a thread waits.

    A ``threading.Event`` is a Condition, a Lock and a deque: ~1.1 KiB and 7 objects the cyclic GC
    walks. An actor has five of them (``started``, ``stopping``, ``exited``, ``abandoned`` and
    pykka's ``actor_stopped``) and most are only ever ``set()`` and ``is_set()``; a pooled actor is
    never waited on except by its supervisor at start and stop. This one is a flag (two slots, one
    object) until the first :meth:`wait` that would block creates the real Event. Same semantics
    (``set``/``is_set``/``clear``/``wait`` from any thread); a subclass so it fits where pykka and
    type annotations expect a ``threading.Event``.
    """

    __slots__ = ("_flag_", "_waiter")

    def __init__(self) -> None:  # no super().__init__(): the Condition is what this avoids
        self._flag_ = False
        self._waiter: threading.Event | None = None

    def __repr__(self) -> str:
        return f"<LazyEvent {'set' if self._flag_ else 'unset'}>"

    def is_set(self) -> bool:
        """True once :meth:`set` was called (and not cleared since)."""
        return self._flag_

    isSet = is_set  # threading.Event's deprecated alias

    def set(self) -> None:
        """Set the flag and wake every waiting thread."""
        with _LAZY_EVENT_LOCK:
            self._flag_ = True
            if self._waiter is not None:
                self._waiter.set()

    def clear(self) -> None:
        """Reset the flag: later :meth:`wait` calls block until the next :meth:`set`."""
        with _LAZY_EVENT_LOCK:
            self._flag_ = False
            if self._waiter is not None:
                self._waiter.clear()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the flag is set or ``timeout`` s passed; returns the flag, like ``Event.wait``."""
        if self._flag_ or (timeout is not None and timeout <= 0):
            return self._flag_
        with _LAZY_EVENT_LOCK:
            if self._flag_:
                return True
            waiter = self._waiter
            if waiter is None:
                # created unset under the lock that set() takes: a set() from now on sets it too
                waiter = self._waiter = threading.Event()
        return waiter.wait(timeout)

    def _at_fork_reinit(self) -> None:
        self._waiter = None


class ActorContext:
    """Handed to an actor's constructor by its supervisor; one per incarnation.

    Slotted and with :class:`LazyEvent` flags: one of these per live actor (100,000 pooled actors
    in a process), so every byte and every object the cyclic GC has to walk counts.
    """

    __slots__ = (
        "abandoned",
        "actor",
        "exited",
        "generation",
        "links",
        "mailbox",
        "path",
        "pool",
        "report_exit",
        "start_error",
        "started",
        "stop_deadline",
        "stopping",
        "system",
    )

    def __init__(
        self,
        *,
        system: ActorSystem,
        path: str,
        mailbox: Mailbox,
        generation: int,
        report_exit: Callable[[int, ExitReason], None],
        pool: WorkerPool | None = None,
    ) -> None:
        self.system = system
        self.path = path
        self.mailbox = mailbox
        self.generation = generation
        self.report_exit = report_exit
        self.pool = pool  # the worker pool a pooled incarnation runs on; None: its own thread
        self.started: threading.Event = LazyEvent()
        # set when the incarnation leaves its receive loop to stop (its backlog worked through, or
        # the drain deadline passed); on_stop and the exit follow
        self.stopping: threading.Event = LazyEvent()
        # monotonic time after which a graceful stop handles no more queued messages
        self.stop_deadline: float | None = None
        self.exited: threading.Event = LazyEvent()
        self.start_error: ExitReason | None = None
        self.actor: SupervisedActor | None = None
        # set once its supervisor gave up on this incarnation (hung, too slow to start or stop) or
        # on the incarnation that started it: it may take no message and register no child
        self.abandoned: threading.Event = LazyEvent()
        # what this (supervisor) incarnation started, by path: cut off with it, like OTP links
        # (an empty dict is 64 bytes and not tracked by the GC until it holds something)
        self.links: dict[str, tuple[Cell, ActorContext]] = {}

    @property
    def name(self) -> str:
        """The last path segment (the child id)."""
        return self.path.rsplit("/", 1)[-1]

    def release(self) -> None:
        """Drop this context's reference to its actor; for the incarnation's last act, after its
        exit was reported.

        The actor and its context point at each other (``actor.ctx``, ``ctx.actor``, the inbox),
        so an exited incarnation is garbage only the cyclic GC can free: ~20 objects per restart,
        which *leak* while the heap is frozen (:mod:`hydrovisor.runtime.gc_tuning`). Without the
        back reference reference counting frees it at once (measured: 5,000 restarts of frozen
        incarnations, 100,000 objects left for a thaw vs none).
        """
        self.actor = None
