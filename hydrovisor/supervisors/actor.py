"""``SupervisedActor``: a pykka ``ThreadingActor`` whose every failure path reaches its supervisor.

pykka's own loop treats failures unevenly (seen in pykka 4.5): an exception in ``on_start`` stops
the actor without ``on_failure``; an exception in an ask goes to the caller and the actor keeps
running; a ``BaseException`` stops *every* actor in the process; queued tells are discarded when
an actor dies. This class replaces the loop (``_actor_loop``, the hook pykka gives actor
implementations) so that:

- ``on_start`` raising -> exit ``start_failed`` (``on_failure`` is called, the supervisor decides);
- a tell handler raising -> exit ``crash``;
- an ask handler raising -> the caller gets the exception **and** the actor exits ``crash``,
  unless the exception is a :class:`Rejection` (an expected refusal: the actor keeps running);
- ``BaseException`` (``SystemExit``, ``KeyboardInterrupt`` ...) -> contained, exit
  ``base_exception`` of this actor only;
- a handler running longer than the child's ``hang_timeout`` -> the supervisor abandons the
  incarnation (Python cannot kill a thread); when the thread wakes up it exits without touching
  the mailbox;
- a graceful stop (:meth:`ActorSystem.request_stop`) queues behind the backlog, which is handled
  until the child's shutdown timeout runs out; what is left is counted when the path closes;
- messages queued behind a crash stay in the path's mailbox for the next incarnation, except the
  ones an incarnation sent itself (through its ``ActorRef``: piped results, timers): those are
  stamped with the incarnation, and its successor drops them (counted, logged) instead of
  handling work it never started.

Subclasses implement ``on_receive`` and/or methods called through proxies, exactly as in pykka.

Two execution models, chosen per child spec (``ChildSpec.execution``), same semantics: a *thread*
incarnation runs this loop on its own thread; a *pooled* one has no thread and runs in turns on
the system's :class:`~hydrovisor.supervisors.pool.WorkerPool` (:meth:`SupervisedActor.run_turn`),
where its handlers must not block (:mod:`hydrovisor.runtime.blocking`). Both handle each message
with :meth:`SupervisedActor._handle`. Supervised actors are not put in pykka's ``ActorRegistry``
(a list: O(n) removal at every exit); their registry is the system's path registry.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import sys
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Self

import pykka
from pykka.messages import _ActorStop

from hydrovisor.runtime.blocking import GuardedFuture, running
from hydrovisor.supervisors.context import ActorContext, LazyEvent
from hydrovisor.supervisors.errors import ActorStopped, Escalated, Rejection
from hydrovisor.supervisors.exit import NORMAL, SHUTDOWN, ExitKind, ExitReason
from hydrovisor.supervisors.faults import InjectedCrash, InjectedHang
from hydrovisor.supervisors.mailbox import EMPTY, Envelope, StopRequest

if TYPE_CHECKING:
    from hydrovisor.runtime.bridge import Outcome
    from hydrovisor.runtime.timers import Timer

log = logging.getLogger("hydrovisor.supervisor")

_CONTINUE: Any = object()  # what _handle returns when the incarnation goes on


class _Inbox:
    """The pykka inbox interface of one incarnation, backed by the path's shared mailbox."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: ActorContext) -> None:
        self._ctx = ctx

    def put(self, envelope: Any, /) -> None:
        if isinstance(envelope.reply_to, GuardedFuture):
            envelope.reply_to.target = self._ctx.path
        # Whatever comes through an incarnation's ActorRef is addressed to that incarnation only.
        stamped = Envelope(envelope.message, envelope.reply_to, incarnation=self._ctx.generation)
        try:
            self._ctx.mailbox.put(stamped)
        except ActorStopped as exc:  # the path stopped for good: so did this incarnation
            raise pykka.ActorDeadError(f"{self._ctx.path} is stopped") from exc

    def get(self) -> Any:
        return self._ctx.mailbox.get(self._ctx.generation)

    def empty(self) -> bool:
        return len(self._ctx.mailbox) == 0


class SupervisedActor(pykka.ThreadingActor):
    """Base class of every hydrovisor actor. Construct only through a :class:`ChildSpec`."""

    # An abandoned (hung) thread must not keep the process alive at exit.
    use_daemon_thread = True

    @staticmethod
    def _create_actor_inbox() -> Any:
        # pykka would allocate a queue per actor; ours is the path's mailbox, set in __init__
        return None

    @staticmethod
    def _create_future() -> GuardedFuture:
        return GuardedFuture()

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> pykka.ActorRef[Self]:
        """Create the incarnation and start its loop (thread) or its first turn (pooled)."""
        obj = cls(*args, **kwargs)
        obj._start_actor_loop()
        return obj.actor_ref

    def __init__(self, ctx: ActorContext) -> None:
        # Not pykka.Actor.__init__: it costs a uuid4 (os.urandom), a threading.Event and a second
        # ActorRef per actor (21 % of a spawn); these are the same attributes, cheaper.
        self.actor_urn = f"urn:hydrovisor:{ctx.path}#{ctx.generation}"
        self.actor_stopped = LazyEvent()
        self.ctx = ctx
        ctx.actor = self
        self._inbox = _Inbox(ctx)
        self.actor_inbox = self._inbox
        self._actor_ref = pykka.ActorRef(self)
        self.busy_since: float | None = None
        # the reply slot of the message being handled: failed at once if the handler hangs
        self.current_reply: Any = None
        # the envelope being handled: a handler may take its reply slot (``reply_to``) to answer
        # later (see continuations.py); what is left in it when the handler returns is answered then
        self.current_envelope: Envelope | None = None
        # pooled only: on the run queue or running (changed under the mailbox lock); started
        self.scheduled = False
        self._turned = False

    @property
    def path(self) -> str:
        """This actor's stable path, e.g. ``/zones/zn-7``."""
        return self.ctx.path

    def tell_self_after(self, delay: float, message: Any) -> Timer:
        """Deliver ``message`` to this incarnation after ``delay`` s (dropped if it is gone)."""
        ref = self.actor_ref
        return self.ctx.system.timers.after(delay, lambda: _tell_quietly(ref, message))

    def tell_self_every(self, interval: float, message: Any) -> Timer:
        """Deliver ``message`` to this incarnation every ``interval`` s; ends with the incarnation."""
        ref = self.actor_ref
        return self.ctx.system.timers.every(interval, lambda: ref.tell(message))

    def pipe_to_self(self, coro: Coroutine[Any, Any, Any], wrap: Callable[[Outcome], Any]) -> None:
        """Run ``coro`` on the loop; its outcome comes back as the message ``wrap(outcome)``."""
        ref = self.actor_ref
        self.ctx.system.bridge.pipe(coro, lambda outcome: _tell_quietly(ref, wrap(outcome)))

    @property
    def execution(self) -> str:
        """``thread`` or ``pool``: how this incarnation runs."""
        return "pool" if self.ctx.pool is not None else "thread"

    def _start_actor_loop(self) -> None:
        pool = self.ctx.pool
        if pool is None:
            super()._start_actor_loop()
            return
        self.scheduled = True  # the first turn (on_start) is queued now; puts meanwhile just queue
        self.ctx.mailbox.attach(self, self.ctx.generation)
        pool.submit(self)

    @property
    def incarnation_abandoned(self) -> bool:
        """True once the supervisor gave up on this incarnation (hung, too slow to start or stop)."""
        return self.ctx.abandoned.is_set()

    def wake(self) -> None:
        """Queue a turn on the pool (the mailbox calls this when a message arrives while idle)."""
        pool = self.ctx.pool
        assert pool is not None, "only pooled incarnations are woken"
        pool.submit(self)

    def run_turn(self, budget: int) -> tuple[int, bool]:
        """One pooled turn: ``on_start`` first, then up to ``budget`` messages in mailbox order.

        Returns (messages handled, whether more are waiting: the pool queues the actor again).
        """
        if not self._turned:
            self._turned = True
            reason = self._start_phase()
            if reason is not None:
                self.ctx.start_error = reason
                self.ctx.started.set()
                self._pooled_exit(reason)
                return 0, False
            self.ctx.started.set()
        mailbox, generation = self.ctx.mailbox, self.ctx.generation
        handled = 0
        while handled < budget:
            envelope = mailbox.take(generation, self)
            if envelope is EMPTY:
                return handled, False  # take ended the turn: the next put wakes us
            if envelope is None:
                self._pooled_exit(None)
                return handled, False
            handled += 1
            outcome = self._handle(envelope)
            if outcome is not _CONTINUE:
                self._pooled_exit(outcome)
                return handled, False
        return handled, mailbox.end_turn(self)

    def _pooled_exit(self, reason: ExitReason | None) -> None:
        self.ctx.mailbox.detach(self)
        self._exit_phase(reason)

    def _actor_loop(self) -> None:
        running.path = self.path
        reason = self._start_phase()
        if reason is None:
            self.ctx.started.set()
            reason = self._receive_phase()
        else:
            self.ctx.start_error = reason
            self.ctx.started.set()
        self._exit_phase(reason)

    def _start_phase(self) -> ExitReason | None:
        try:
            self.on_start()
        except BaseException as exc:
            self._failed(exc)
            return ExitReason.from_exception(ExitKind.START_FAILED, exc)
        return None

    def _receive_phase(self) -> ExitReason | None:
        """Handle messages until stopped; ``None`` means this incarnation was abandoned."""
        while True:
            envelope: Envelope | None = self._inbox.get()
            if envelope is None:
                return None
            outcome = self._handle(envelope)
            if outcome is not _CONTINUE:
                return outcome  # type: ignore[no-any-return]

    def _handle(self, envelope: Envelope) -> Any:
        """Handle one envelope: ``_CONTINUE``, or the :class:`ExitReason` this incarnation exits with."""
        if envelope.incarnation not in (None, self.ctx.generation):
            self._drop_stale(envelope)
            return _CONTINUE
        message = envelope.message
        if isinstance(message, StopRequest | _ActorStop):
            if isinstance(message, StopRequest) and message.generation != self.ctx.generation:
                return _CONTINUE
            self.ctx.stopping.set()
            reason = self._stop_phase(SHUTDOWN if isinstance(message, StopRequest) else NORMAL)
            if envelope.reply_to is not None:
                envelope.reply_to.set(None)
            return reason
        deadline = self.ctx.stop_deadline
        if deadline is not None and time.monotonic() > deadline:
            # out of drain time: this message and the rest stay queued for whoever takes the
            # path next, or are counted as dropped when it is closed
            self.ctx.mailbox.put_control(envelope, first=True)
            self.ctx.stopping.set()
            return self._stop_phase(SHUTDOWN)
        self.busy_since = time.monotonic()
        self.current_reply = envelope.reply_to
        self.current_envelope = envelope
        try:
            if isinstance(message, InjectedCrash | InjectedHang):
                response = message.inflict()
            else:
                response = self._handle_receive(message)
        except Rejection:
            if envelope.reply_to is None:
                log.warning("rejected tell in %s", self.path, exc_info=True,
                            extra={"event": "tell_rejected", "path": self.path})
            _reply_error(envelope.reply_to, sys.exc_info())
            return _CONTINUE
        except BaseException as exc:
            _reply_error(envelope.reply_to, sys.exc_info())
            self._failed(exc)
            return ExitReason.from_exception(_exit_kind(exc), exc)
        finally:
            self.busy_since = None
            self.current_reply = None
            self.current_envelope = None
        if envelope.reply_to is not None:
            with contextlib.suppress(queue.Full):  # already failed by an abandonment
                envelope.reply_to.set(response)
        return _CONTINUE

    def _drop_stale(self, envelope: Envelope) -> None:
        """A predecessor's private message: its work died with it (this incarnation rebuilt its state)."""
        message_type = type(envelope.message).__name__
        if getattr(envelope.message, "internal", False):  # runtime traffic (ticks, exit reports), not work
            log.debug("dropped %s of a previous incarnation of %s", message_type, self.path)
            return
        self.ctx.system.count_stale(self.path)
        log.info("dropped %s sent by incarnation %s of %s to itself", message_type, envelope.incarnation,
                 self.path, extra={"event": "stale_message_dropped", "path": self.path,
                                   "message_type": message_type, "incarnation": envelope.incarnation})
        if envelope.reply_to is not None:
            error = pykka.ActorDeadError(f"incarnation {envelope.incarnation} of {self.path} is gone")
            _reply_error(envelope.reply_to, (type(error), error, None))

    def _stop_phase(self, reason: ExitReason) -> ExitReason:
        try:
            self.on_stop()
        except BaseException as exc:
            self._failed(exc)
            return ExitReason.from_exception(ExitKind.CRASH, exc)
        return reason

    def _failed(self, exc: BaseException) -> None:
        log.error(
            "actor %s failed", self.path, exc_info=exc, extra={"event": "actor_failed", "path": self.path}
        )
        try:
            self.on_failure(type(exc), exc, exc.__traceback__)
        except BaseException:  # contained like any other failure: the exit must still be reported
            log.exception("on_failure of %s raised", self.path, extra={"path": self.path})

    def _exit_phase(self, reason: ExitReason | None) -> None:
        abandoned = reason is None or self.actor_stopped.is_set()
        self.actor_stopped.set()
        self.ctx.exited.set()
        if not abandoned and reason is not None:
            self.ctx.report_exit(self.ctx.generation, reason)
        self.ctx.release()


def _exit_kind(exc: BaseException) -> ExitKind:
    if isinstance(exc, Escalated):
        return ExitKind.ESCALATED
    return ExitKind.CRASH if isinstance(exc, Exception) else ExitKind.BASE_EXCEPTION


def _reply_error(reply_to: Any, exc_info: Any) -> None:
    if reply_to is not None:
        with contextlib.suppress(queue.Full):  # already failed by an abandonment
            reply_to.set_exception(exc_info=exc_info)


def _tell_quietly(ref: pykka.ActorRef[Any], message: Any) -> None:
    # the incarnation that asked is gone (restarted or stopped): its successor rebuilds its state
    with contextlib.suppress(pykka.ActorDeadError):
        ref.tell(message)
