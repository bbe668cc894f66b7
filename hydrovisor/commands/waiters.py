"""Loop-side waiters for command status changes (HTTP ``?wait=`` and the submit path).

Command actors announce every stored status (and a failed SENT write) from their threads with
``announce``; it hops onto the loop with ``call_soon_threadsafe`` and wakes whoever waits. The
loop never blocks on an actor: a waiter is a plain asyncio future.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable

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

    def announce(self, news: StatusNews) -> None:
        """Report a status change (any thread)."""
        self._loop.call_soon_threadsafe(self._deliver, news)

    def _deliver(self, news: StatusNews) -> None:
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

    def watch(self, cmd_id: str, wants: Callable[[StatusNews], bool]) -> asyncio.Future[StatusNews]:
        """Register interest *before* acting or reading the row, so no news can slip past (on the loop)."""
        future: asyncio.Future[StatusNews] = self._loop.create_future()
        self._waiting[cmd_id].append((wants, future))
        return future

    async def wait(self, cmd_id: str, future: asyncio.Future[StatusNews], within: float) -> StatusNews | None:
        """The news ``future`` was watching for, or ``None`` after ``within`` seconds (then forgotten)."""
        try:
            return await asyncio.wait_for(asyncio.shield(future), within)
        except TimeoutError:
            future.cancel()
            remaining = [(w, f) for w, f in self._waiting.get(cmd_id, []) if not f.done()]
            if remaining:
                self._waiting[cmd_id] = remaining
            else:
                self._waiting.pop(cmd_id, None)
            return None
