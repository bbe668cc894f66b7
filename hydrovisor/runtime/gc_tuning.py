"""Garbage collector pauses with 100,000 live actors: freeze the long-lived heap.

CPython's cyclic GC walks every tracked object of a generation when it collects it. With 100,000
pooled actors the oldest generation holds ~3 million objects (29 per actor plus the app's), and a
full collection stops every thread for 0.5-1 s (measured: ``benchmarks/actor_scale.py``, "gen2
collection"). Actors are long-lived, so walking them again and again finds nothing.

Tuning the thresholds cannot fix that: it changes how *often* a full collection runs (3.11 already
waits until the objects that survived since the last one are 25 % of the old generation), never how
long one takes. :func:`gc.freeze` does: it moves every tracked object to a permanent generation
that collections skip, so a later full collection walks only what was allocated since.

What to call, and when:

- :func:`freeze` after a bulk spawn (the fleet's node actors at boot, a ``StartChildren`` batch of
  thousands): the app, right after the supervisor answered the batch;
- :func:`install` once at process start: from then on a *slow* full collection (one that took at
  least ``slow_pause_s``) freezes what survived it. Right after a full collection is the best time
  to freeze — everything left is live — so the heap grown since (actors started one at a time) is
  frozen too, without anybody having to call :func:`freeze`;
- :func:`thaw_and_collect` rarely, when the process can afford one full pause (maintenance, after
  a bulk stop): frozen objects are never collected while frozen, so a frozen actor that dies *in a
  reference cycle* is only reclaimed here. (Frozen objects freed by reference counting are freed at
  once; ``gc.get_freeze_count()`` drops.)

:class:`PauseRecorder` measures the pauses (by generation) for benchmarks and metrics.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("hydrovisor.gc")

OLDEST = 2  # CPython's oldest generation


@dataclass(frozen=True)
class Frozen:
    """What one :func:`freeze` did."""

    collected: int  # unreachable objects the collection before the freeze found
    pause_s: float  # the collection plus the freeze
    frozen: int | None = None  # objects in the permanent generation afterwards, when counted


def freeze(*, full: bool = False, count: bool = False) -> Frozen:
    """Collect (the young generations, or everything with ``full``), then freeze every survivor.

    Call after a bulk spawn. The young collection (< 1 ms after 100,000 spawns) keeps the garbage
    of the spawn itself out of the permanent generation; ``full`` also collects the old generation
    first (one full pause, ~1 s with 100,000 actors) so that no garbage at all is frozen.
    ``gc.freeze()`` itself only splices lists. ``count`` also counts the frozen objects, which walks
    all of them (~0.3 s for 3 million): for benchmarks, not for the boot path.
    """
    began = time.perf_counter()
    collected = gc.collect(OLDEST if full else 1)
    gc.freeze()
    pause = time.perf_counter() - began
    frozen = gc.get_freeze_count() if count else None
    log.info("gc: froze the heap in %.1f ms", pause * 1000,
             extra={"event": "gc_frozen", "frozen": frozen, "pause_ms": round(pause * 1000, 1)})
    return Frozen(collected=collected, pause_s=pause, frozen=frozen)


def thaw_and_collect(*, count: bool = False) -> Frozen:
    """Unfreeze, run one full collection, freeze again: reclaims frozen garbage (cycles of actors
    that died since they were frozen). One full pause over the whole heap: call it rarely."""
    began = time.perf_counter()
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    pause = time.perf_counter() - began
    frozen = gc.get_freeze_count() if count else None
    log.info("gc: thawed, collected %d in %.1f ms", collected, pause * 1000,
             extra={"event": "gc_thawed", "collected": collected, "frozen": frozen,
                    "pause_ms": round(pause * 1000, 1)})
    return Frozen(collected=collected, pause_s=pause, frozen=frozen)


@dataclass(eq=False)
class PauseRecorder:
    """Collector pauses by generation, from :data:`gc.callbacks` (install with :meth:`start`)."""

    count: list[int] = field(default_factory=lambda: [0, 0, 0])
    total_s: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    max_s: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    _began: float = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
            return
        pause = time.perf_counter() - self._began
        generation = int(info["generation"])
        self.count[generation] += 1
        self.total_s[generation] += pause
        self.max_s[generation] = max(self.max_s[generation], pause)

    def start(self) -> PauseRecorder:
        """Start recording (idempotent)."""
        if self not in gc.callbacks:
            gc.callbacks.append(self)
        return self

    def stop(self) -> None:
        """Stop recording."""
        if self in gc.callbacks:
            gc.callbacks.remove(self)

    def reset(self) -> None:
        """Forget what was recorded so far."""
        self.count = [0, 0, 0]
        self.total_s = [0.0, 0.0, 0.0]
        self.max_s = [0.0, 0.0, 0.0]


class _AutoFreeze:
    """The :data:`gc.callbacks` hook of :func:`install`."""

    def __init__(self, slow_pause_s: float, on_freeze: Callable[[float], None] | None) -> None:
        self.slow_pause_s = slow_pause_s
        self.on_freeze = on_freeze
        self.freezes = 0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != OLDEST:
            return
        if phase == "start":
            self._began = time.perf_counter()
            return
        pause = time.perf_counter() - self._began
        if pause < self.slow_pause_s:
            return
        # The collection has finished (its lists are consistent) and every survivor is reachable:
        # move them out of the way of the next one. gc.freeze() only splices lists (O(1)).
        gc.freeze()
        self.freezes += 1
        if self.on_freeze is not None:
            self.on_freeze(pause)


_installed: _AutoFreeze | None = None
_install_lock = threading.Lock()


def install(*, slow_pause_s: float = 0.05, on_freeze: Callable[[float], None] | None = None) -> None:
    """Freeze the survivors of every full collection that took at least ``slow_pause_s`` (idempotent;
    a second call changes the threshold). Full pauses then stay around ``slow_pause_s`` to twice
    that (measured: 20-94 ms while spawning 100,000 actors, against 1.1-2.4 s unfrozen).
    ``on_freeze(pause_s)`` runs inside the collector's callback: keep it to a counter or a log line."""
    global _installed  # noqa: PLW0603 - one hook per process, like gc itself
    with _install_lock:
        if _installed is None:
            _installed = _AutoFreeze(slow_pause_s, on_freeze)
            gc.callbacks.append(_installed)
        else:
            _installed.slow_pause_s = slow_pause_s
            _installed.on_freeze = on_freeze


def uninstall() -> None:
    """Remove the hook of :func:`install` (tests); frozen objects stay frozen."""
    global _installed  # noqa: PLW0603
    with _install_lock:
        if _installed is not None and _installed in gc.callbacks:
            gc.callbacks.remove(_installed)
        _installed = None


def auto_freezes() -> int:
    """How many times the hook of :func:`install` froze the heap."""
    return 0 if _installed is None else _installed.freezes


def full_collection_s() -> float:
    """Time one full collection now (what the next automatic one would pause every thread for)."""
    began = time.perf_counter()
    gc.collect()
    return time.perf_counter() - began
