"""A child's mailbox, owned by its stable path and shared by its successive incarnations.

Messages queued for a child that crashes stay here and are handled by the next incarnation;
only a child that stops for good closes its mailbox, and then every queued message fails with
:class:`ActorStopped` (asks get the exception; the supervisor counts and reports what was left).

Two ways to take messages: a thread incarnation blocks in :meth:`Mailbox.get`; a pooled one
:meth:`Mailbox.attach` registers itself and is *woken* (put on the pool's run queue) by the put that makes
its idle mailbox non-empty, then takes messages with :meth:`Mailbox.take` during its turn and
ends the turn with :meth:`Mailbox.end_turn`. Its ``scheduled`` flag is only changed under this
mailbox's lock, so an incarnation is on the run queue at most once and never misses a message.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
from typing import Any, Protocol, runtime_checkable

from hydrovisor.supervisors.errors import ActorStopped


class Envelope:
    """A message and, for asks, where to put the reply (anything with ``set``/``set_exception``).

    ``incarnation`` is set on messages sent through one incarnation's ``ActorRef`` (its piped
    results, timers, its own tells): they are meant for that incarnation only, never for the
    successor that inherits the path's mailbox. ``None`` means addressed by path.
    """

    __slots__ = ("incarnation", "message", "reply_to")

    def __init__(self, message: Any, reply_to: Any = None, *, incarnation: int | None = None) -> None:
        self.message = message
        self.reply_to = reply_to
        self.incarnation = incarnation


class StopRequest:
    """Supervisor-initiated stop of one incarnation; other incarnations ignore it."""

    __slots__ = ("generation",)

    def __init__(self, generation: int) -> None:
        self.generation = generation


EMPTY: Any = object()
"""What :meth:`Mailbox.take` returns when nothing is queued (``None`` means: you are stale, exit)."""


class Runnable(Protocol):
    """A pooled incarnation as its mailbox sees it."""

    scheduled: bool

    def wake(self) -> None:
        """Put this incarnation on its pool's run queue (called outside the mailbox lock)."""


class Mailbox:
    """FIFO with an owner generation: only the current incarnation may take messages.

    Built for 100,000 of them: a plain lock, and the queue and the condition a thread incarnation
    waits on are created on first use (an idle pooled actor's mailbox is ~0.3 KiB, not ~1.5).
    """

    __slots__ = ("_closed", "_cond", "_generation", "_items", "_lock", "_runner", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._cond: threading.Condition | None = None  # only once a thread incarnation waits
        self._items: collections.deque[Any] | None = None
        self._generation = 0
        self._closed: str | None = None
        self._runner: Runnable | None = None  # the pooled incarnation taking messages, if any

    def __len__(self) -> int:
        items = self._items
        return len(items) if items is not None else 0

    @property
    def closed_reason(self) -> str | None:
        """Why the mailbox was closed, or ``None`` while it accepts messages."""
        return self._closed

    def _queue(self) -> collections.deque[Any]:
        """Under the lock: the queue, created by the first message."""
        if self._items is None:
            self._items = collections.deque()
        return self._items

    def put(self, envelope: Any) -> None:
        """Queue a message; raises :class:`ActorStopped` once the child stopped for good."""
        with self._lock:
            if self._closed is not None:
                raise ActorStopped(self.path, self._closed)
            self._queue().append(envelope)
            runner = self._to_wake()
        if runner is not None:
            runner.wake()

    def _to_wake(self) -> Runnable | None:
        """After an append, under the lock: the idle pooled runner to wake, or notify a thread."""
        runner = self._runner
        if runner is None:
            if self._cond is not None:
                self._cond.notify()
            return None
        if runner.scheduled:
            return None
        runner.scheduled = True
        return runner

    def _notify_all(self) -> None:
        if self._cond is not None:
            self._cond.notify_all()

    def put_control(self, envelope: Any, *, first: bool) -> None:
        """Queue a supervisor stop: behind the backlog (graceful) or ahead of it (a kill)."""
        with self._lock:
            if first:
                self._queue().appendleft(envelope)
            else:
                self._queue().append(envelope)
            runner = self._to_wake()
        if runner is not None:
            runner.wake()

    def get(self, generation: int) -> Any | None:
        """Block for the next message; ``None`` tells a stale incarnation to exit at once."""
        with self._lock:
            if self._cond is None:
                self._cond = threading.Condition(self._lock)
            while not self._items and generation == self._generation:
                self._cond.wait()
            if generation != self._generation:
                return None
            return self._queue().popleft()

    def prepend(self, envelopes: list[Any]) -> None:
        """Put ``envelopes`` back at the head, in their order (a stash handed back); raises
        :class:`ActorStopped` once the child stopped for good."""
        with self._lock:
            if self._closed is not None:
                raise ActorStopped(self.path, self._closed)
            self._queue().extendleft(reversed(envelopes))
            runner = self._to_wake()
        if runner is not None:
            runner.wake()

    def attach(self, runner: Runnable, generation: int) -> bool:
        """A pooled incarnation starts taking messages: puts wake it from now on.

        Returns False (and attaches nothing) when ``generation`` is no longer the owner.
        """
        with self._lock:
            if generation != self._generation:
                return False
            self._runner = runner
            return True

    def take(self, generation: int, runner: Runnable) -> Any:
        """Next message of a pooled turn: an envelope, ``None`` when stale, or :data:`EMPTY` — and then
        the turn is over (``runner`` is no longer scheduled: the next put wakes it), in the same lock
        section as the check, so no put can slip between the two."""
        with self._lock:
            if generation != self._generation:
                return None
            items = self._items
            if items:
                return items.popleft()
            runner.scheduled = False
            return EMPTY

    def end_turn(self, runner: Runnable) -> bool:
        """End a pooled turn that used its whole budget: True when the runner must run again (it
        stays scheduled).

        That is when messages are waiting, or when the runner is no longer attached: a new
        generation took the mailbox during this turn (which used its whole budget and so did not
        see it), and only one more turn, whose first :meth:`take` returns ``None``, makes it exit.
        """
        with self._lock:
            if runner is not self._runner or self._items:
                return True
            runner.scheduled = False
            return False

    def detach(self, runner: Runnable) -> None:
        """The pooled incarnation exited: nothing wakes it any more."""
        with self._lock:
            if self._runner is runner:
                self._runner = None

    def new_generation(self) -> int:
        """Hand the mailbox to a new incarnation; the previous one can take nothing more."""
        with self._lock:
            self._generation += 1
            stale = self._release_runner()
            self._notify_all()
            generation = self._generation
        if stale is not None:
            stale.wake()
        return generation

    def _release_runner(self) -> Runnable | None:
        """Under the lock: detach the pooled runner; if idle, it must run once more to see it is stale."""
        runner, self._runner = self._runner, None
        if runner is None or runner.scheduled:
            return None
        runner.scheduled = True
        return runner

    def close(self, reason: str) -> list[Any]:
        """Refuse further messages and fail every queued ask; returns what was left queued."""
        with self._lock:
            self._closed = reason
            self._generation += 1
            drained = list(self._items or ())
            self._items = None
            stale = self._release_runner()
            self._notify_all()
        if stale is not None:
            stale.wake()
        for envelope in drained:
            fail_envelope(envelope, ActorStopped(self.path, reason))
        return drained


def is_control(envelope: Any) -> bool:
    """Runtime control traffic (stops, ticks, exit reports): never a lost message."""
    return isinstance(envelope.message, StopRequest) or getattr(envelope.message, "internal", False) is True


@runtime_checkable
class CarriesReply(Protocol):
    """A told message with its own reply slot (a waiter on the loop): told when it cannot be delivered, so its
    waiter fails at once instead of waiting out its timeout."""

    def undeliverable(self, error: BaseException) -> None:
        """Fail the slot with ``error``."""


def fail_envelope(envelope: Any, error: BaseException) -> None:
    """Fail one undeliverable ask, or a tell that :class:`CarriesReply`: its waiter gets ``error`` (the closer
    counts and reports tells)."""
    if is_control(envelope):
        return
    reply_to = getattr(envelope, "reply_to", None)
    if reply_to is not None:
        with contextlib.suppress(queue.Full):  # already answered (an abandoned hung handler's ask)
            reply_to.set_exception(exc_info=(type(error), error, None))
    elif isinstance(envelope.message, CarriesReply):
        envelope.message.undeliverable(error)
