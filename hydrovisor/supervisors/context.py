"""What a supervised actor is given: its stable path, mailbox, incarnation and parent link."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from hydrovisor.supervisors.exit import ExitReason

if TYPE_CHECKING:
    from hydrovisor.supervisors.actor import SupervisedActor
    from hydrovisor.supervisors.actor_system import ActorSystem
    from hydrovisor.supervisors.cell import Cell
    from hydrovisor.supervisors.mailbox import Mailbox
    from hydrovisor.supervisors.pool import WorkerPool


class ActorContext:
    """Handed to an actor's constructor by its supervisor; one per incarnation."""

    def __init__(
        self,
        *,
        system: ActorSystem,
        path: str,
        mailbox: Mailbox,
        generation: int,
        report_exit: Callable[[int, ExitReason], None],
        pool: WorkerPool | None = None,
    ) -> None:
        self.system = system
        self.path = path
        self.mailbox = mailbox
        self.generation = generation
        self.report_exit = report_exit
        self.pool = pool  # the worker pool a pooled incarnation runs on; None: its own thread
        self.started = threading.Event()
        # set when the incarnation leaves its receive loop to stop (its backlog worked through, or
        # the drain deadline passed); on_stop and the exit follow
        self.stopping = threading.Event()
        # monotonic time after which a graceful stop handles no more queued messages
        self.stop_deadline: float | None = None
        self.exited = threading.Event()
        self.start_error: ExitReason | None = None
        self.actor: SupervisedActor | None = None
        # set once its supervisor gave up on this incarnation (hung, too slow to start or stop) or
        # on the incarnation that started it: it may take no message and register no child
        self.abandoned = threading.Event()
        # what this (supervisor) incarnation started, by path: cut off with it, like OTP links
        self.links: dict[str, tuple[Cell, ActorContext]] = {}

    @property
    def name(self) -> str:
        """The last path segment (the child id)."""
        return self.path.rsplit("/", 1)[-1]
