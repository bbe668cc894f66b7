"""gc_tuning: freezing moves survivors out of the collector's way; the auto-freeze hook fires only
after a slow full collection; the pause recorder counts pauses by generation."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from hydrovisor.runtime import gc_tuning


@pytest.fixture(autouse=True)
def _thawed() -> Iterator[None]:
    yield
    gc_tuning.uninstall()
    gc.unfreeze()


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_freeze_moves_survivors_to_the_permanent_generation() -> None:
    keep = [_Node() for _ in range(1000)]
    result = gc_tuning.freeze(count=True)
    assert result.frozen is not None and result.frozen >= 1000
    assert gc.get_freeze_count() == result.frozen
    assert gc.is_tracked(keep[0]) and keep[0] not in gc.get_objects()  # frozen objects are not walked


def test_thaw_and_collect_reclaims_frozen_cycles() -> None:
    garbage = [_Node() for _ in range(1000)]
    gc_tuning.freeze()
    del garbage  # the cycles are garbage now, but frozen: no collection sees them
    assert gc.collect() < 1000
    result = gc_tuning.thaw_and_collect(count=True)
    assert result.collected >= 1000
    assert gc.get_freeze_count() == result.frozen


def test_auto_freeze_after_a_slow_full_collection_only() -> None:
    frozen: list[float] = []
    gc_tuning.install(slow_pause_s=3600.0, on_freeze=frozen.append)
    gc.collect()
    assert gc_tuning.auto_freezes() == 0 and gc.get_freeze_count() == 0
    gc_tuning.install(slow_pause_s=0.0, on_freeze=frozen.append)  # re-install: new threshold
    gc.collect()
    assert gc_tuning.auto_freezes() == 1 and len(frozen) == 1 and gc.get_freeze_count() > 0
    gc.collect(0)  # young collections never freeze
    assert gc_tuning.auto_freezes() == 1


def test_pause_recorder_counts_by_generation() -> None:
    recorder = gc_tuning.PauseRecorder().start()
    try:
        gc.collect(0)
        gc.collect()
    finally:
        recorder.stop()
    assert recorder.count[0] >= 1 and recorder.count[2] >= 1
    assert recorder.max_s[2] >= 0.0 and recorder.total_s[2] >= recorder.max_s[2]
    gc.collect()
    assert recorder.count[2] == 1  # stopped: no longer recorded
