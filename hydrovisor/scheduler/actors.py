"""The scheduler's actors (``/scheduler``): the dispatcher that plans and claims, and one actor per running task.

``/scheduler/dispatcher`` (permanent, pooled) ticks: every ``plan_s`` it plans the zones' schedules into
tasks, every ``dispatch_s`` it claims the due tasks and starts ``/scheduler/tasks/<task id>`` for each
(transient, pooled), which executes its task on the loop and stops once the outcome is stored. Neither
blocks: the work runs on the loop (:class:`~hydrovisor.scheduler.plane.SchedulerPlane`), one step of each
kind at a time, and comes back as a message. A crashed dispatcher is restarted and simply ticks again; a
crashed task actor is restarted and executes its task again (the executor finds what the first incarnation
started by the task's correlation id: nothing runs twice).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import msgspec

from hydrovisor.runtime.bridge import Outcome
from hydrovisor.scheduler.plane import SchedulerPlane
from hydrovisor.store.repos.tasks import TaskRecord
from hydrovisor.supervisors import ActorContext, SupervisedActor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cadence:
    """How often the dispatcher plans and claims, and how many tasks may run at once."""

    plan_s: float = 1.0
    dispatch_s: float = 0.2
    max_running: int = 1000  # a task actor is small and mostly waits on the loop; a burst of due tasks is not queued


class _Plan(msgspec.Struct, frozen=True):
    pass


class _Dispatch(msgspec.Struct, frozen=True):
    pass


class _Done(msgspec.Struct, frozen=True):
    what: str
    outcome: Outcome


class DispatcherActor(SupervisedActor):
    """See the module docstring."""

    def __init__(self, ctx: ActorContext, *, plane: SchedulerPlane, cadence: Cadence, start_tasks: Any) -> None:
        super().__init__(ctx)
        self._plane = plane
        self._cadence = cadence
        self._start_tasks = start_tasks  # coroutine function (claimed tasks) -> None, on the loop
        self._busy: set[str] = set()

    def on_start(self) -> None:
        self.tell_self_every(self._cadence.plan_s, _Plan())
        self.tell_self_every(self._cadence.dispatch_s, _Dispatch())

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Plan):
            self._step("plan", self._plane.plan())
        elif isinstance(message, _Dispatch):
            self._step("dispatch", self._dispatch())
        elif isinstance(message, _Done):
            self._busy.discard(message.what)
            if not message.outcome.ok:
                log.warning("scheduler %s step failed: %s", message.what, message.outcome.error,
                            extra={"event": "scheduler_step_failed", "step": message.what})
        else:
            return super().on_receive(message)
        return None

    def _step(self, what: str, coro: Any) -> None:
        if what in self._busy:
            coro.close()  # the previous step is still running: skip this tick rather than pile up
            return
        self._busy.add(what)
        self.pipe_to_self(coro, lambda outcome: _Done(what, outcome))

    async def _dispatch(self) -> int:
        plane = self._plane
        claimed = await plane.dispatch(self._cadence.max_running - len(plane.owned))
        if claimed:
            plane.owned.update(task.id for task in claimed)  # against the cap from now, not from a first turn
            await self._start_tasks(claimed)
        return len(claimed)


class TaskActor(SupervisedActor):
    """Runs one claimed task to its stored outcome, then stops."""

    def __init__(self, ctx: ActorContext, *, task: TaskRecord, plane: SchedulerPlane) -> None:
        super().__init__(ctx)
        self._task = task
        self._plane = plane

    def on_start(self) -> None:
        self.pipe_to_self(self._plane.run(self._task), lambda outcome: _Done("run", outcome))

    def on_receive(self, message: Any) -> Any:
        if isinstance(message, _Done):
            if message.outcome.error is not None:
                raise message.outcome.error  # restarted: the next incarnation runs the task again
            self.stop()
            return None
        return super().on_receive(message)
