"""Faults injected into an actor on purpose (chaos engineering), handled by every SupervisedActor.

They travel like any message, through the path's mailbox, so they reach whichever incarnation is
running when they are delivered: ``count`` crashes sent at once crash ``count`` successive
incarnations, which is how restart intensity and escalation get exercised for real.
"""

from __future__ import annotations

import threading

import msgspec


class InjectedFailure(Exception):
    """The exception an injected crash raises inside the actor's handler."""


class InjectedCrash(msgspec.Struct, frozen=True):
    """Make the handling actor fail as a bug would (an exception out of its handler)."""

    incident_id: str

    def inflict(self) -> None:
        """Raise in the actor's thread."""
        raise InjectedFailure(f"injected crash ({self.incident_id})")


class InjectedHang(msgspec.Struct, frozen=True):
    """Block the handling actor until ``release`` is set (or ``limit`` s): a hung handler."""

    incident_id: str
    release: threading.Event
    limit: float

    def inflict(self) -> None:
        """Wait in the actor's thread; the supervisor's liveness probe sees it busy."""
        self.release.wait(self.limit)
