"""Errors raised by the supervision runtime; each carries a machine ``code``."""

from __future__ import annotations


class SupervisionError(Exception):
    """Base class: ``code`` is the machine code, ``str(exc)`` the human message."""

    code = "supervision_error"


class Rejection(SupervisionError):
    """An expected, declared refusal raised by an actor handler.

    A ``Rejection`` raised while handling an ask travels back to the caller and the actor
    keeps running. Every other exception raised by a handler crashes the actor (after the
    caller got the exception), and its supervisor restarts it according to policy.
    """

    code = "rejected"


class NoSuchActor(Rejection):
    """No live child is registered at that stable path."""

    code = "actor_not_found"

    def __init__(self, path: str) -> None:
        super().__init__(f"no actor at path {path}")
        self.path = path


class ActorStopped(Rejection):
    """The addressed child stopped for good; the message was not (and will not be) handled."""

    code = "actor_stopped"

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"actor {path} stopped ({reason}); message not delivered")
        self.path = path
        self.reason = reason


class CapacityExceeded(Rejection):
    """A dynamic supervisor already runs its maximum number of children."""

    code = "capacity_exceeded"

    def __init__(self, path: str, limit: int) -> None:
        super().__init__(f"supervisor {path} is at its cap of {limit} children")
        self.path = path
        self.limit = limit


class DuplicateChild(Rejection):
    """A child with that id already exists under the supervisor."""

    code = "duplicate_child"

    def __init__(self, path: str) -> None:
        super().__init__(f"a child already exists at {path}")
        self.path = path


class StartFailed(Rejection):
    """A child could not be started (factory raised, ``on_start`` raised or timed out)."""

    code = "child_start_failed"

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"child {path} failed to start: {reason}")
        self.path = path
        self.reason = reason


class Escalated(SupervisionError):
    """A supervisor exceeded its restart intensity and gives up (its parent decides next)."""

    code = "reached_max_restart_intensity"


class ActorHung(SupervisionError):
    """The actor handling this ask ran past its hang timeout and was abandoned and replaced."""

    code = "actor_hung"

    def __init__(self, path: str) -> None:
        super().__init__(f"actor {path} hung while handling this message; it was replaced")
        self.path = path
