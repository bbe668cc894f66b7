"""``RollupWorker``: advances the 1m / 1h / 1d telemetry rollups from their stored watermarks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

import msgspec

from hydrovisor.runtime.bridge import Outcome
from hydrovisor.runtime.timers import Timer
from hydrovisor.supervisors import ActorContext, SupervisedActor

log = logging.getLogger(__name__)

Advance = Callable[[str], Coroutine[Any, Any, int]]
BUCKETS = ("1m", "1h", "1d")


class _Tick(msgspec.Struct, frozen=True):
    pass


class _Advanced(msgspec.Struct, frozen=True):
    bucket: str
    outcome: Outcome


class RollupWorker(SupervisedActor):
    """Every ``interval`` s folds new samples into each bucket level, one level at a time.

    A failed advance (database down) is logged and simply tried again next tick: the watermark
    only moves in the same transaction as the fold, so nothing is skipped or counted twice.
    """

    def __init__(self, ctx: ActorContext, *, advance: Advance, interval: float = 60.0) -> None:
        super().__init__(ctx)
        self._advance = advance
        self._interval = interval
        self._queue: list[str] = []
        self._timer: Timer | None = None

    def on_start(self) -> None:
        self._timer = self.tell_self_every(self._interval, _Tick())

    def on_stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()

    def on_failure(self, *_: Any) -> None:
        self.on_stop()

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Tick):
            if not self._queue:
                self._queue = list(BUCKETS)
                self._next()
        elif isinstance(message, _Advanced):
            if not message.outcome.ok:
                log.warning("rollup %s not advanced: %s", message.bucket, message.outcome.error,
                            extra={"event": "rollup_failed", "bucket": message.bucket})
                self._queue.clear()
                return None
            self._next()
        else:
            return super().on_receive(message)
        return None

    def _next(self) -> None:
        if self._queue:
            bucket = self._queue.pop(0)
            self.pipe_to_self(self._advance(bucket), lambda outcome: _Advanced(bucket, outcome))
