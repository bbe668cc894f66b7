"""A point-in-time description of the tree (OTP ``which_children``/``count_children``), read from
the cells so that it works even while a supervisor is busy or a child is hung."""

from __future__ import annotations

import time

import msgspec

from hydrovisor.supervisors.actor_system import ActorSystem
from hydrovisor.supervisors.cell import Cell, Failure
from hydrovisor.supervisors.errors import NoSuchActor
from hydrovisor.supervisors.path_registry import ROOT


class ActorInfo(msgspec.Struct, frozen=True):
    """One path of the tree, as shown by ``GET /api/v1/actors``."""

    path: str
    id: str
    kind: str
    execution: str  # "thread" (its own OS thread) or "pool" (turns on the system's worker pool)
    actor_class: str
    state: str
    restart: str
    restarts_in_window: int
    restarts_total: int
    last_failure: Failure | None
    mailbox_depth: int
    uptime_s: float | None
    busy_for_s: float | None
    strategy: str | None = None
    max_restarts: int | None = None
    period_s: float | None = None
    max_children: int | None = None
    children: tuple[ActorInfo, ...] = ()


def describe(system: ActorSystem, path: str = ROOT, *, depth: int | None = None) -> ActorInfo:
    """Describe ``path`` and (down to ``depth`` levels) its subtree; raises NoSuchActor."""
    return _info(system, system.cell(path), depth, time.monotonic())


def _info(system: ActorSystem, cell: Cell, depth: int | None, now: float) -> ActorInfo:
    parent = cell.path.rsplit("/", 1)[0] or ROOT
    window = 0
    if cell.path != ROOT:
        try:
            parent_flags = system.cell(parent).flags
        except NoSuchActor:
            parent_flags = None
        if parent_flags is not None:
            window = cell.restarts_within(parent_flags.period)
    children: list[ActorInfo] = []
    if depth is None or depth > 0:
        for child_path in cell.children:
            try:
                child = system.cell(child_path)
            except NoSuchActor:
                continue  # stopped between the two reads
            children.append(_info(system, child, None if depth is None else depth - 1, now))
    ctx = cell.ctx
    busy_since = ctx.actor.busy_since if ctx is not None and ctx.actor is not None else None
    flags = cell.flags
    running = cell.state.value == "running"
    return ActorInfo(
        path=cell.path,
        id=cell.spec.id,
        kind=cell.spec.kind,
        execution=cell.spec.execution.value,  # from the spec: a restarting path has no incarnation
        actor_class=cell.actor_class,
        state=cell.state.value,
        restart=cell.spec.restart.value,
        restarts_in_window=window,
        restarts_total=cell.restarts_total,
        last_failure=cell.last_failure,
        mailbox_depth=len(cell.mailbox),
        uptime_s=round(now - cell.started_at, 3) if running else None,
        busy_for_s=round(now - busy_since, 3) if busy_since is not None else None,
        strategy=flags.strategy.value if flags else None,
        max_restarts=flags.max_restarts if flags else None,
        period_s=flags.period if flags else None,
        max_children=flags.max_children if flags else None,
        children=tuple(children),
    )
