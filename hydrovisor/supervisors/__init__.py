"""OTP-style supervision on pykka.

- :class:`ChildSpec` / :class:`SupervisorFlags`: what to start and how to restart it
  (``permanent | transient | temporary``; ``one_for_one | one_for_all | rest_for_one``;
  intensity ``max_restarts`` per ``period``; optional restart :class:`Backoff`).
- :class:`Supervisor`: starts children in order, stops them in reverse, restarts by strategy,
  escalates to its parent when intensity is exceeded; dynamic children with a cap.
- :class:`SupervisedActor`: base class of every actor; every pykka failure path (tell, ask,
  ``on_start``, ``BaseException``, hang) reaches the supervisor.
- :class:`ActorSystem`: the root, stable path addressing (``/zones/zn-7``) and the one factory.

Ask policy: a handler exception reaches the asker *and* crashes the actor (it is restarted),
except a :class:`Rejection`, which is an expected refusal and leaves the actor running.
"""

from hydrovisor.supervisors.actor import SupervisedActor
from hydrovisor.supervisors.actor_system import ActorSystem
from hydrovisor.supervisors.context import ActorContext
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
from hydrovisor.supervisors.messages import StartChild, TerminateChild
from hydrovisor.supervisors.path_registry import ROOT
from hydrovisor.supervisors.spec import (
    Backoff,
    ChildSpec,
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
    "ActorStopped",
    "ActorSystem",
    "Backoff",
    "CapacityExceeded",
    "ChildSpec",
    "DuplicateChild",
    "Escalated",
    "ExitKind",
    "ExitReason",
    "NoSuchActor",
    "Rejection",
    "Restart",
    "StartChild",
    "StartFailed",
    "Strategy",
    "SupervisedActor",
    "SupervisionError",
    "Supervisor",
    "SupervisorFlags",
    "TerminateChild",
    "supervisor_spec",
]
