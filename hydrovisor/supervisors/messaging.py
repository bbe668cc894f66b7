"""Messaging by stable path: ``send``, ``tell``, ``ask`` and ``kill``, resolved at send time.

A message sent while the child restarts waits in the path's mailbox and is handled by the new
incarnation; a message to a path that stopped for good fails with :class:`ActorStopped` /
:class:`NoSuchActor`.
"""

from __future__ import annotations

from typing import Any

from hydrovisor.runtime.blocking import GuardedFuture
from hydrovisor.runtime.bridge import Bridge
from hydrovisor.supervisors.errors import NoSuchActor
from hydrovisor.supervisors.mailbox import Envelope
from hydrovisor.supervisors.messages import KillChild
from hydrovisor.supervisors.path_registry import ROOT, PathRegistry


def kill_request(path: str, reason: str) -> tuple[str, KillChild]:
    """The supervisor path to ask, and the message, that kill the actor at ``path``."""
    if path == ROOT or "/" not in path:
        raise NoSuchActor(f"{path} (the root cannot be killed; stop the process)")
    parent, child_id = path.rsplit("/", 1)
    return parent or ROOT, KillChild(child_id, reason)


class Messenger:
    """Delivers to paths of one registry; blocking asks only from actor threads."""

    def __init__(self, paths: PathRegistry, bridge: Bridge) -> None:
        self._paths = paths
        self._bridge = bridge

    def send(self, path: str, message: Any, *, reply_to: Any = None) -> None:
        """Queue ``message`` for the actor at ``path`` (resolved now)."""
        self._paths.cell(path).mailbox.put(Envelope(message, reply_to))

    def tell(self, path: str, message: Any) -> None:
        """Fire-and-forget to a path; raises NoSuchActor / ActorStopped when undeliverable."""
        self.send(path, message)

    def ask(self, path: str, message: Any, *, timeout: float | None = 5.0) -> Any:
        """Blocking ask from an actor thread (never from the loop: use ``bridge.ask``)."""
        if self._bridge.affinity.on_loop():
            raise RuntimeError("ActorSystem.ask blocks; on the loop use bridge.ask")
        future = GuardedFuture(target=path)
        self.send(path, message, reply_to=future)
        return future.get(timeout=timeout)

    def kill(self, path: str, reason: str) -> None:
        """Fail the actor at ``path`` on purpose; its supervisor restarts it by policy."""
        parent, message = kill_request(path, reason)
        self.ask(parent, message, timeout=60.0)
