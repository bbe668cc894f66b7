"""The scheduler's subtree: ``/scheduler`` with its ``dispatcher`` and the ``tasks`` it runs."""

from __future__ import annotations

import logging
from typing import Any

import pykka

from hydrovisor.scheduler.actors import Cadence, DispatcherActor, TaskActor
from hydrovisor.scheduler.plane import SchedulerPlane
from hydrovisor.store.repos.tasks import TaskRecord
from hydrovisor.supervisors import (
    ActorContext,
    ActorSystem,
    ChildSpec,
    DuplicateChild,
    Execution,
    Restart,
    StartChild,
    SupervisorFlags,
    supervisor_spec,
)

log = logging.getLogger(__name__)

SCHEDULER = "/scheduler"
TASKS = f"{SCHEDULER}/tasks"
START_WAIT_S = 15.0


def task_path(task_id: str) -> str:
    """``/scheduler/tasks/<task id>``."""
    return f"{TASKS}/{task_id}"


def task_spec(task: TaskRecord, plane: SchedulerPlane) -> ChildSpec:
    """Transient and pooled: restarted after a crash (the task runs again, idempotently), gone once stored.
    No hang probe: a task waits, on the loop, for as long as its workflow runs."""
    def start(ctx: ActorContext) -> pykka.ActorRef[Any]:
        return TaskActor.start(ctx, task=task, plane=plane)

    return ChildSpec(task.id, start, restart=Restart.TRANSIENT, hang_timeout=None, execution=Execution.POOL)


def scheduler_spec(system: ActorSystem, plane: SchedulerPlane, cadence: Cadence, *, liveness_interval: float,
                   hang_timeout: float | None) -> ChildSpec:
    """``/scheduler``: the dispatcher first, then the dynamic ``tasks`` supervisor (capped at
    ``cadence.max_running``). one_for_one: a crashed dispatcher never takes running tasks with it."""

    async def start_task(task: TaskRecord) -> None:
        try:
            await system.bridge.ask(TASKS, StartChild(task_spec(task, plane)), within=START_WAIT_S)
        except DuplicateChild:
            pass  # already running here (a resumed task this process still runs)
        except Exception as exc:  # the cap, a slow supervisor: the task stays running and is recovered later
            plane.owned.discard(task.id)
            log.warning("task %s could not start its actor: %s", task.id, exc,
                        extra={"event": "task_actor_start_failed", "task_id": task.id, "zone_id": task.zone_uid})

    dispatcher = ChildSpec("dispatcher", lambda ctx: DispatcherActor.start(
        ctx, plane=plane, cadence=cadence, start_task=start_task), hang_timeout=hang_timeout,
        execution=Execution.POOL)
    tasks = supervisor_spec("tasks", SupervisorFlags(dynamic=True, max_children=cadence.max_running,
                                                     max_restarts=20, period=10.0,
                                                     liveness_interval=liveness_interval))
    static = SupervisorFlags(max_restarts=5, period=30.0, liveness_interval=liveness_interval)
    return supervisor_spec("scheduler", static, (dispatcher, tasks))
