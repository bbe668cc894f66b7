"""Receipts: the promise behind an acknowledgement ("acknowledged means kept", ARCHITECTURE §6).

Every device message the server side takes in comes with a :class:`Receipt`. Whoever makes the
message durable (the telemetry writer's commit, a stored command reply, a tell to the node's actor)
settles it; only then does the broker send the device its PUBACK, and only then does the HTTP
ingest answer 2xx. A receipt that cannot be kept is failed: for an MQTT QoS 1 message that closes
the device's connection, the only "no" MQTT 3.1.1 has, so the device sends it again.

Receipts live on the event loop. Actors never hold one: :class:`ReceiptBook` hands them an ``int``
token instead and settles or fails tokens on the loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

OnDone = Callable[["Receipt"], None]


class Receipt:
    """Settled once (kept) or failed once (with a reason); later calls are ignored."""

    __slots__ = ("_on_done", "failure", "settled")

    def __init__(self, on_done: OnDone | None = None) -> None:
        self._on_done = on_done
        self.settled = False
        self.failure: str | None = None

    @property
    def done(self) -> bool:
        """Settled or failed."""
        return self.settled or self.failure is not None

    def settle(self) -> None:
        """The message is kept (stored, or handed to the actor that owns it, or dropped with a counted
        reason: a drop is an answer too, the device must not send it again)."""
        if self.done:
            return
        self.settled = True
        if self._on_done is not None:
            self._on_done(self)

    def fail(self, reason: str) -> None:
        """The message was not kept and the sender should send it again."""
        if self.done:
            return
        self.failure = reason or "failed"
        if self._on_done is not None:
            self._on_done(self)


def settled() -> Receipt:
    """A receipt nobody waits for (wills, QoS 2 messages amqtt already acknowledged)."""
    return Receipt()


class ReceiptBook:
    """Receipts handed across the actor boundary as tokens; use on the loop only."""

    def __init__(self) -> None:
        self._open: dict[int, Receipt] = {}
        self._next = 1

    def __len__(self) -> int:
        return len(self._open)

    def token(self, receipt: Receipt) -> int:
        """Register ``receipt``; the returned token stands for it in messages to actors."""
        token = self._next
        self._next += 1
        self._open[token] = receipt
        return token

    def settle(self, tokens: Iterable[int]) -> None:
        """Settle the receipts of ``tokens`` (unknown or already failed tokens are ignored)."""
        for token in tokens:
            receipt = self._open.pop(token, None)
            if receipt is not None:
                receipt.settle()

    def fail(self, tokens: Iterable[int], reason: str) -> None:
        """Fail the receipts of ``tokens``."""
        for token in tokens:
            receipt = self._open.pop(token, None)
            if receipt is not None:
                receipt.fail(reason)

    def fail_all(self, reason: str) -> int:
        """Fail every open receipt (their holder lost them); returns how many."""
        victims, self._open = self._open, {}
        for receipt in victims.values():
            receipt.fail(reason)
        return len(victims)


class RemoteReceipts:
    """A :class:`ReceiptBook` for other threads (actors): each call is carried out on the loop."""

    def __init__(self, book: ReceiptBook, loop: asyncio.AbstractEventLoop) -> None:
        self._book = book
        self._loop = loop

    def fail(self, tokens: Iterable[int], reason: str) -> None:
        """Fail the receipts of ``tokens`` (their messages were not kept)."""
        self._loop.call_soon_threadsafe(self._book.fail, tuple(tokens), reason)

    def fail_all(self, reason: str) -> None:
        """Fail every open receipt (their holder lost them)."""
        self._loop.call_soon_threadsafe(self._book.fail_all, reason)


class ReceiptGroup:
    """Receipts one caller waits for together (an HTTP ingest request). Loop only."""

    def __init__(self) -> None:
        self._open = 0
        self._failure: str | None = None
        self._all_done: asyncio.Future[None] | None = None

    def receipt(self) -> Receipt:
        """A new member receipt."""
        self._open += 1
        return Receipt(self._done)

    async def wait(self, within: float) -> str | None:
        """Until every member is done: None when all were settled, else why not (first failure, or timeout)."""
        if self._open:
            self._all_done = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._all_done), within)
            except TimeoutError:
                return "timeout"
        return self._failure

    def _done(self, receipt: Receipt) -> None:
        self._open -= 1
        if receipt.failure is not None and self._failure is None:
            self._failure = receipt.failure
        if not self._open and self._all_done is not None and not self._all_done.done():
            self._all_done.set_result(None)
