"""Loop-side waiters for command status changes (HTTP ``?wait=`` and the submit path); waiting only.

A stored status is delivered on the loop by whoever stored it (the write coroutine, see
``CommandPlane.store``), so a waiter wakes without a thread hop; an actor thread with news (a
failed SENT write, a row it re-read) uses ``announce``, which hops onto the loop with
``call_soon_threadsafe``. The loop never blocks on an actor: a waiter is a plain asyncio future.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator

import msgspec

from hydrovisor.protocol import TERMINAL, CommandStatus
from hydrovisor.store.repos.commands import CommandRecord


class StatusNews(msgspec.Struct, frozen=True):
    """What a command actor reports: a stored status, or ``sync_failed`` when SENT could not be stored.

    ``row`` is the row as that write returned it, so a waiter can answer without reading it again.
    """

    cmd_id: str
    status: str
    sync_failed: bool = False
    error_code: str | None = None
    row: CommandRecord | None = None

    @classmethod
    def stored(cls, row: CommandRecord) -> StatusNews:
        """The news of ``row``, just stored."""
        return cls(row.cmd_id, row.status, error_code=row.error_code, row=row)

    @property
    def settled_submit(self) -> bool:
        """The submit request can answer: SENT (or later) stored, a send failure, or a sync failure."""
        return self.sync_failed or self.status != CommandStatus.QUEUED

    @property
    def terminal(self) -> bool:
        """The stored status is terminal."""
        return CommandStatus(self.status) in TERMINAL


class CommandWaiters:
    """Futures per cmd_id, resolved on the loop by ``announce`` (safe from any thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._waiting: defaultdict[str, list[tuple[Callable[[StatusNews], bool], asyncio.Future[StatusNews]]]] = (
            defaultdict(list))

    def __len__(self) -> int:
        """How many waits are registered (each must end with the request that registered it)."""
        return sum(len(waiting) for waiting in self._waiting.values())

    def announce(self, news: StatusNews) -> None:
        """Report a status change (any thread)."""
        self._loop.call_soon_threadsafe(self.deliver, news)

    def deliver(self, news: StatusNews) -> None:
        """Report a status change (on the loop): wakes the waiters it satisfies at once."""
        waiting = self._waiting.get(news.cmd_id)
        if not waiting:
            return
        keep = []
        for wants, future in waiting:
            if future.done():
                continue
            if wants(news):
                future.set_result(news)
            else:
                keep.append((wants, future))
        if keep:
            self._waiting[news.cmd_id] = keep
        else:
            del self._waiting[news.cmd_id]

    @contextlib.contextmanager
    def watching(self, cmd_id: str, wants: Callable[[StatusNews], bool]) -> Iterator[asyncio.Future[StatusNews]]:
        """Register interest *before* acting or reading the row, so no news can slip past (on the loop).

        The registration ends with the block, however it is left (an early answer, an error, the
        client gone): nothing registered outlives the request that registered it.
        """
        entry = (wants, self._loop.create_future())
        self._waiting[cmd_id].append(entry)
        try:
            yield entry[1]
        finally:
            entry[1].cancel()
            waiting = self._waiting.get(cmd_id, [])
            if entry in waiting:
                waiting.remove(entry)
            if not waiting:
                self._waiting.pop(cmd_id, None)

    @staticmethod
    async def wait(future: asyncio.Future[StatusNews], within: float) -> StatusNews | None:
        """The news ``future`` (from :meth:`watching`) was waiting for, or ``None`` after ``within`` s."""
        try:
            return await asyncio.wait_for(asyncio.shield(future), within)
        except TimeoutError:
            return None
