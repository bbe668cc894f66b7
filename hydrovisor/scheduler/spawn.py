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
    StartChildren,
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

    async def start_tasks(claimed: list[TaskRecord]) -> None:
        """One actor per claimed task, the batch in one ask (a burst of due tasks is hundreds at a time);
        a batch refused as a whole (an id already running here) is started one by one."""
        try:
            reply = await system.bridge.ask(TASKS, StartChildren(tuple(task_spec(task, plane) for task in claimed)),
                                            within=START_WAIT_S)
        except DuplicateChild:
            for task in claimed:
                await start_one(task)
            return
        except Exception as exc:
            for task in claimed:
                not_started(task, exc)
            return
        failed = dict(reply.failed)
        for task in claimed:
            if task_path(task.id) in failed:
                not_started(task, failed[task_path(task.id)])

    async def start_one(task: TaskRecord) -> None:
        try:
            await system.bridge.ask(TASKS, StartChild(task_spec(task, plane)), within=START_WAIT_S)
        except DuplicateChild:
            pass  # already running here (a resumed task this process still runs)
        except Exception as exc:
            not_started(task, exc)

    def not_started(task: TaskRecord, why: object) -> None:
        # the cap, a slow supervisor: the task stays running with no owner and is resumed by a later sweep
        plane.owned.discard(task.id)
        log.warning("task %s could not start its actor: %s", task.id, why,
                    extra={"event": "task_actor_start_failed", "task_id": task.id, "zone_id": task.zone_uid})

    dispatcher = ChildSpec("dispatcher", lambda ctx: DispatcherActor.start(
        ctx, plane=plane, cadence=cadence, start_tasks=start_tasks), hang_timeout=hang_timeout,
        execution=Execution.POOL)
    tasks = supervisor_spec("tasks", SupervisorFlags(dynamic=True, max_children=cadence.max_running,
                                                     max_restarts=20, period=10.0,
                                                     liveness_interval=liveness_interval))
    static = SupervisorFlags(max_restarts=5, period=30.0, liveness_interval=liveness_interval)
    return supervisor_spec("scheduler", static, (dispatcher, tasks))
