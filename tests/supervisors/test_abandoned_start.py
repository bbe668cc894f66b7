"""A child supervisor given up on for starting too slowly takes its whole subtree with it.

Python cannot kill the abandoned thread, so its start goes on in the background; like an OTP link,
everything it started is cut off at once, it may register nothing more, and whatever it was still
starting stops as soon as it finishes. No path ever has two live incarnations.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

import pytest
from sup_support import Journal, MakeSystem, running_incarnations, worker

from hydrovisor.supervisors import ChildSpec, StartChild, StartFailed, Supervisor, SupervisorFlags
from tests.helpers import wait_until


def live_incarnations(journal: Journal, name: str) -> list[int]:
    """Generations of ``name`` still running (on their thread, or in a turn on the pool)."""
    return [generation for _, generation in running_incarnations(journal, name)]


def test_an_abandoned_supervisor_start_leaves_no_orphaned_subtree(
    make_system: MakeSystem, journal: Journal
) -> None:
    gate = threading.Event()
    attempts = itertools.count(1)

    def children() -> Sequence[ChildSpec]:
        # the first /mid gets stuck starting "slow"; the next one starts it at once
        blocked = {"block_start": gate} if next(attempts) == 1 else {}
        return [worker("a", journal), worker("slow", journal, blocked), worker("z", journal)]

    mid = ChildSpec("mid", lambda ctx: Supervisor.start(ctx, SupervisorFlags(), children),
                    start_timeout=0.3, hang_timeout=None, kind="supervisor")
    system = make_system(SupervisorFlags(dynamic=True))
    with pytest.raises(StartFailed, match="did not finish"):
        system.ask("/", StartChild(mid))
    assert system.ask("/", StartChild(mid)) == "/mid"
    try:
        # the first /mid's "a" was cut off when /mid was given up on: one live "a", the new one
        wait_until(lambda: len(live_incarnations(journal, "a")) == 1, timeout=5, what="old /mid/a gone")
        assert system.ask("/mid/a", "ping") == ("a", 1)
        assert system.cell("/mid").children == ("/mid/a", "/mid/slow", "/mid/z")
    finally:
        gate.set()
    # the stuck start finishes: that incarnation stops at once, the old /mid registers nothing more
    wait_until(lambda: len(live_incarnations(journal, "slow")) == 1, timeout=5, what="old /mid/slow gone")
    assert len([e for e in journal.of("start") if e[1] == "z"]) == 1  # never started by the old /mid
    assert system.paths() == ["/", "/mid", "/mid/a", "/mid/slow", "/mid/z"]
    assert system.cell("/mid").children == ("/mid/a", "/mid/slow", "/mid/z")
    for name in ("a", "slow", "z"):
        assert system.ask(f"/mid/{name}", "ping") == (name, 1)
        assert live_incarnations(journal, name) == [1]
