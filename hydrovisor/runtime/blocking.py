"""Blocking calls from actor handlers: detected, refused or compensated, and never a deadlock.

A pooled actor shares a few worker threads with thousands of others, so a handler that blocks
(waits for a reply, a bridge call, ``stop(block=True)``) holds a worker that every other actor
needs (ARCHITECTURE §1). Every blocking wait the runtime offers goes through :func:`blocking_call`:

- on a pool worker in **strict** mode (tests, development) it raises :class:`BlockingCallInPool`;
- on a pool worker otherwise (production) the pool starts a spare worker for the time of the wait
  (up to a cap), counted and logged;
- anywhere (pooled or thread actors), an ask of an actor to itself, or one that closes a cycle of
  actors waiting for each other, raises :class:`AskCycle` at once instead of waiting for ever.

Blocking that no future sees (``time.sleep``, socket I/O) is caught by the pool's watchdog.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, Protocol

from pykka import ThreadingFuture


class BlockingCallInPool(RuntimeError):
    """A pooled actor's handler made a blocking call (strict mode)."""

    code = "blocking_call_in_pool"


class AskCycle(RuntimeError):
    """An ask would wait for itself: the asked actor is (transitively) waiting for the asker."""

    code = "ask_cycle"


class Compensator(Protocol):
    """The pool side of a blocking call on one of its workers."""

    strict: bool

    def compensate(self, what: str, path: str) -> contextlib.AbstractContextManager[None]:
        """Keep the pool's capacity while the calling worker waits."""


class _Running(threading.local):
    # the actor whose handler runs on this thread (its path), and the pool if this is a pool worker
    path: str | None = None
    pool: Compensator | None = None


running = _Running()

_waits: dict[str, str] = {}  # asker path -> asked path, while the asker waits
_waits_lock = threading.Lock()


def _closes_cycle(asker: str, target: str) -> bool:
    seen = {asker}
    node: str | None = target
    while node is not None:
        if node in seen:
            return True
        seen.add(node)
        node = _waits.get(node)
    return False


@contextlib.contextmanager
def blocking_call(what: str, target: str | None = None) -> Iterator[None]:
    """Wrap one blocking wait of the calling thread (``target``: the actor path it waits for)."""
    path = running.path
    if path is None:
        yield  # the loop's own helpers, plain threads, tests: not an actor
        return
    if target is not None:
        with _waits_lock:
            if _closes_cycle(path, target):
                chain = " -> ".join([path, target])
                raise AskCycle(f"{chain}: {target} is waiting for {path}; this ask would never be answered")
            _waits[path] = target
    try:
        pool = running.pool
        if pool is None:
            yield  # a thread actor may block: it only holds its own thread
        elif pool.strict:
            raise BlockingCallInPool(
                f"{path} made a blocking {what} on a pool worker; use pipe_to_self / tell, or run this "
                "kind on its own thread")
        else:
            with pool.compensate(what, path):
                yield
    finally:
        if target is not None:
            with _waits_lock:
                _waits.pop(path, None)


class GuardedFuture(ThreadingFuture[Any]):
    """The reply slot of an ask to a supervised actor: its ``get`` is a :func:`blocking_call`."""

    def __init__(self, target: str | None = None) -> None:
        super().__init__()
        self.target = target

    def get(self, *, timeout: float | None = None) -> Any:
        """The reply; waiting for it is refused / compensated on pool workers (see the module)."""
        if self._result is not None or self._get_hook is not None:
            return super().get(timeout=timeout)
        with blocking_call("ask", self.target):
            return super().get(timeout=timeout)
