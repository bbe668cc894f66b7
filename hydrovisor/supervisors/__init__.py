"""OTP-style supervision on pykka.

- :class:`ChildSpec` / :class:`SupervisorFlags`: what to start and how to restart it
  (``permanent | transient | temporary``; ``one_for_one | one_for_all | rest_for_one``;
  intensity ``max_restarts`` per ``period``; optional restart :class:`Backoff`).
- :class:`Supervisor`: starts children in order, stops them in reverse, restarts by strategy,
  escalates to its parent when intensity is exceeded; dynamic children with a cap.
- :class:`SupervisedActor`: base class of every actor; every pykka failure path (tell, ask,
  ``on_start``, ``BaseException``, hang) reaches the supervisor.
- :class:`ActorSystem`: the root, stable path addressing (``/zones/zn-7``) and the one factory.
- :class:`Execution` / :class:`WorkerPool`: a child runs on its own thread or in turns on the
  system's worker pool (``ChildSpec.execution``), with the same supervision either way.
- :class:`ActorInfo` / :func:`describe`: the tree as ``which_children`` shows it; :class:`TreeCollector`
  its Prometheus gauges, :class:`PoolCollector` the worker pool's; :class:`InjectedCrash` /
  :class:`InjectedHang`: faults injected on purpose.

Ask policy: a handler exception reaches the asker *and* crashes the actor (it is restarted),
except a :class:`Rejection`, which is an expected refusal and leaves the actor running.

Like pykka, the modules are private and the names are public: import from ``hydrovisor.supervisors``,
never from a submodule (the submodules may move; what is listed in ``__all__`` stays).
"""

from hydrovisor.supervisors.actor import SupervisedActor
from hydrovisor.supervisors.actor_system import ActorSystem
from hydrovisor.supervisors.cell import Cell, CellState, Failure
from hydrovisor.supervisors.context import ActorContext
from hydrovisor.supervisors.continuations import Continued, ContinuingActor
from hydrovisor.supervisors.errors import (
    ActorHung,
    ActorStopped,
    CapacityExceeded,
    DuplicateChild,
    Escalated,
    NoSuchActor,
    Rejection,
    StartFailed,
    SupervisionError,
)
from hydrovisor.supervisors.exit import ExitKind, ExitReason
from hydrovisor.supervisors.faults import InjectedCrash, InjectedFailure, InjectedHang
from hydrovisor.supervisors.messages import KillChild, StartChild, StartChildren, StartedChildren, TerminateChild
from hydrovisor.supervisors.messaging import kill_request
from hydrovisor.supervisors.metrics import TreeCollector
from hydrovisor.supervisors.path_registry import ROOT
from hydrovisor.supervisors.pool import PoolSettings, StuckTurn, WorkerPool
from hydrovisor.supervisors.pool_metrics import PoolCollector
from hydrovisor.supervisors.snapshot import ActorInfo, describe
from hydrovisor.supervisors.spec import (
    Backoff,
    ChildSpec,
    Execution,
    Restart,
    Strategy,
    SupervisorFlags,
    supervisor_spec,
)
from hydrovisor.supervisors.supervisor import Supervisor

__all__ = [
    "ROOT",
    "ActorContext",
    "ActorHung",
    "ActorInfo",
    "ActorStopped",
    "ActorSystem",
    "Backoff",
    "CapacityExceeded",
    "Cell",
    "CellState",
    "ChildSpec",
    "Continued",
    "ContinuingActor",
    "DuplicateChild",
    "Escalated",
    "Execution",
    "ExitKind",
    "ExitReason",
    "Failure",
    "InjectedCrash",
    "InjectedFailure",
    "InjectedHang",
    "KillChild",
    "NoSuchActor",
    "PoolCollector",
    "PoolSettings",
    "Rejection",
    "Restart",
    "StartChild",
    "StartChildren",
    "StartFailed",
    "StartedChildren",
    "Strategy",
    "StuckTurn",
    "SupervisedActor",
    "SupervisionError",
    "Supervisor",
    "SupervisorFlags",
    "TerminateChild",
    "TreeCollector",
    "WorkerPool",
    "describe",
    "kill_request",
    "supervisor_spec",
]
