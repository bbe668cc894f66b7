"""Component checks shared by ``/health/ready`` and the state machine's evaluation cycle.

Every check reads state that probes and cells already hold, never the loop: the cycle runs on an
actor thread and must give a verdict while the loop is stalled (a stale probe result *is* the
verdict then).
"""

from __future__ import annotations

import time

import msgspec

from hydrovisor.actors.health_probe import HealthBoard
from hydrovisor.supervisors import ROOT, ActorSystem, NoSuchActor


class CheckResult(msgspec.Struct, frozen=True, omit_defaults=True):
    """One component's verdict; the optional numbers only appear in the readiness body when set."""

    ok: bool
    reason: str
    checked_s_ago: float | None = None
    subtrees: int | None = None


def component(health: HealthBoard, name: str, max_age: float) -> CheckResult:
    """The latest probe result for ``name``; older than ``max_age`` counts as failing."""
    state = health.get(name)
    if state is None:
        return CheckResult(False, "not checked yet")
    age = time.monotonic() - state.checked_at
    if age > max_age:
        return CheckResult(False, f"last check {age:.1f}s ago (stale)")
    return CheckResult(state.ok, state.reason, checked_s_ago=round(age, 3))


def tree(system: ActorSystem) -> CheckResult:
    """The root and each of its subtrees are running."""
    try:
        root = system.cell(ROOT)
    except NoSuchActor:
        return CheckResult(False, "actor tree not running")
    bad = []
    for path in root.children:
        try:
            state = system.cell(path).state.value
        except NoSuchActor:
            state = "missing"
        if state != "running":
            bad.append(f"{path} {state}")
    if root.state.value != "running" or bad:
        return CheckResult(False, "; ".join(bad) or f"root {root.state.value}")
    return CheckResult(True, "ok", subtrees=len(root.children))
