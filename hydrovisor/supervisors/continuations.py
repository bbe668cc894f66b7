"""``ContinuingActor``: a :class:`SupervisedActor` that waits for the loop without blocking.

A pooled actor must never block (:mod:`hydrovisor.runtime.blocking`), yet some of its work needs a
result from the loop before it can go on: an ask answered only once a database write committed, a
command rebuilt from its row. :meth:`ContinuingActor.then` runs the coroutine on the loop and hands
its :class:`Outcome` to a continuation, in this incarnation, as a message. Until that message lands
every other message is *stashed*, then handled in the order it came (Akka's ``stash`` /
``unstashAll``): nothing sees the state half-way, exactly as when the handler waited for the result —
but no thread is held meanwhile.

- ``then(..., reply=True)`` takes the reply slot of the ask being handled away from the runtime
  (:meth:`ContinuingActor.defer_reply`): the continuation's return value answers the ask, and what it
  raises fails it, as if the handler had returned or raised it (a :class:`Rejection` is a refusal,
  anything else also crashes the actor).
- A continuation has a deadline (``within``): past it, it gets ``OutcomeUnknown`` (it may still take
  effect), as a blocking bridge call would have raised.
- An incarnation that stops or crashes with a continuation pending fails its deferred replies with
  ``OutcomeUnknown`` and puts what it stashed back at the head of the path's mailbox: the next
  incarnation handles it, or the path's closing counts it (asks fail with ``ActorStopped``) — the
  runtime's rule for whatever a stopping incarnation did not handle.

Call :meth:`ContinuingActor.continuing` first in ``on_receive``, and ``super().on_stop()`` from
``on_stop`` (``on_failure`` calls ``on_stop`` in every actor here).

The runtime side: ``SupervisedActor.current_envelope`` is the envelope being handled; a reply slot
taken out of it is not answered when the handler returns.
"""

from __future__ import annotations

import collections
import contextlib
import queue
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from hydrovisor.runtime.bridge import Outcome, OutcomeUnknown
from hydrovisor.runtime.timers import Timer
from hydrovisor.supervisors.actor import SupervisedActor
from hydrovisor.supervisors.errors import ActorStopped, Rejection
from hydrovisor.supervisors.mailbox import Envelope, fail_envelope


class Continued(msgspec.Struct, frozen=True):
    """The outcome of a continuation's coroutine (``None``: its deadline passed first)."""

    seq: int
    outcome: Outcome | None


class ContinuingActor(SupervisedActor):
    """See the module docstring."""

    # Class-level defaults: an actor that never waits (most of the time, most of thousands) carries
    # nothing more than a plain SupervisedActor; instance attributes appear on first use.
    _stash: collections.deque[Envelope] | None = None
    _then: Callable[[Outcome], Any] | None = None
    _then_reply: Any = None
    _then_what = ""
    _then_within = 0.0
    _then_seq = 0
    _overdue: Timer | None = None
    _deferred: list[Any] | None = None  # reply slots taken from the runtime, not answered yet

    # continuations ---------------------------------------------------------------------------

    def then(self, what: str, coro: Coroutine[Any, Any, Any], continuation: Callable[[Outcome], Any], *,
             within: float, reply: bool = False) -> None:
        """Run ``coro`` on the loop, then ``continuation(outcome)`` here; every other message is stashed
        until then. ``within`` s later the continuation runs with ``OutcomeUnknown`` if it has not yet.

        ``reply``: the ask being handled is answered by the continuation (call last in the handler:
        whatever it raises before this answers the ask at once, as usual)."""
        if self._then is not None:
            coro.close()
            raise RuntimeError(f"{self.path}: {what} while {self._then_what} is pending")
        self._then_seq += 1
        seq = self._then_seq
        self._then, self._then_what, self._then_within = continuation, what, within
        self._then_reply = self.defer_reply() if reply else None
        self.pipe_to_self(coro, lambda outcome: Continued(seq, outcome))
        self._overdue = self.tell_self_after(within, Continued(seq, None))

    def continuing(self, message: Any) -> bool:
        """Call first in ``on_receive``: True when ``message`` was dealt with here (a continuation run,
        or a message stashed behind a pending one)."""
        if isinstance(message, Continued):
            if message.seq == self._then_seq and self._then is not None:
                self._resume(message.outcome)
            return True  # else a late one: its deadline passed, the continuation ran already
        if self._then is None:
            return False
        envelope = self.current_envelope
        if envelope is not None:  # the reply slot goes with it: answered when it is handled again
            if self._stash is None:
                self._stash = collections.deque()
            self._stash.append(Envelope(envelope.message, envelope.reply_to, incarnation=envelope.incarnation))
            envelope.reply_to = None
        return True

    def _resume(self, outcome: Outcome | None) -> None:
        continuation, self._then = self._then, None
        slot, self._then_reply = self._then_reply, None
        assert continuation is not None
        if self._overdue is not None:
            self._overdue.cancel()
            self._overdue = None
        if outcome is None:
            outcome = Outcome(error=OutcomeUnknown(
                f"{self.path}: {self._then_what} not finished within {self._then_within} s; it may still take effect"))
        # first back in the mailbox, in order: should the continuation raise (a crash), the next
        # incarnation finds them; should it start another one, they are stashed again, in order
        self._unstash_all()
        try:
            value = continuation(outcome)
        except Rejection as exc:
            if slot is None:
                raise  # a tell's: logged by the runtime
            self.fail(slot, exc)  # an expected refusal: the actor goes on
            return
        except BaseException as exc:
            self.fail(slot, exc)
            raise  # a crash, as in any handler
        self.answer(slot, value)

    def _unstash_all(self) -> None:
        if not self._stash:
            return
        stashed = list(self._stash)
        self._stash.clear()
        try:
            self.ctx.mailbox.prepend(stashed)
        except ActorStopped as exc:  # the path stopped for good meanwhile: fail as its closing failed the rest
            for envelope in stashed:
                fail_envelope(envelope, exc)

    # deferred replies ------------------------------------------------------------------------

    def defer_reply(self) -> Any:
        """The reply slot of the ask being handled (``None`` for a tell); the runtime leaves it
        unanswered when the handler returns: answer it with :meth:`answer` or :meth:`fail`."""
        envelope = self.current_envelope
        if envelope is None or envelope.reply_to is None:
            return None
        slot, envelope.reply_to = envelope.reply_to, None
        if self._deferred is None:
            self._deferred = []
        self._deferred.append(slot)
        return slot

    def answer(self, slot: Any, value: Any) -> None:
        """Answer a deferred reply."""
        if slot is None:
            return
        self._forget(slot)
        with contextlib.suppress(queue.Full):  # already failed (this incarnation was given up on)
            slot.set(value)

    def fail(self, slot: Any, error: BaseException) -> None:
        """Fail a deferred reply with ``error`` (the asker raises it)."""
        if slot is None:
            return
        self._forget(slot)
        with contextlib.suppress(queue.Full):
            slot.set_exception(exc_info=(type(error), error, error.__traceback__))

    def _forget(self, slot: Any) -> None:
        if self._deferred is not None:
            with contextlib.suppress(ValueError):
                self._deferred.remove(slot)

    # stopping --------------------------------------------------------------------------------

    def on_stop(self) -> None:
        what = self._then_what if self._then is not None else "work"
        self._then = None
        if self._overdue is not None:
            self._overdue.cancel()
            self._overdue = None
        for slot in list(self._deferred or ()):
            self.fail(slot, OutcomeUnknown(
                f"{self.path} stopped before the outcome of its {what} arrived; it may still take effect"))
        self._unstash_all()
