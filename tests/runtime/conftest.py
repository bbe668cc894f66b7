"""Fixtures of the runtime tests: one real event loop in a background thread per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hydrovisor.runtime.loop_thread import LoopThread


@pytest.fixture
def lt() -> Iterator[LoopThread]:
    with LoopThread() as loop_thread:
        yield loop_thread
