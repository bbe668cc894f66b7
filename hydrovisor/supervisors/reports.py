"""Supervisor reports: one structured log line per event, and the listeners of abnormal exits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from hydrovisor.supervisors.exit import ExitReason

log = logging.getLogger("hydrovisor.supervisor")

_ERROR_EVENTS = ("escalation", "root_exited", "brutal_kill")


class Reports:
    """Writes the report lines and calls the failure listeners (on the reporting supervisor's thread)."""

    def __init__(self) -> None:
        self._failure_listeners: list[Callable[[str, ExitReason], None]] = []

    def on_failure(self, listener: Callable[[str, ExitReason], None]) -> None:
        """Call ``listener(path, reason)`` (on the supervisor's thread) whenever an actor exits abnormally;
        the typed reason lets the listener tell a handled crash from an escalation or a kill."""
        self._failure_listeners.append(listener)

    def child_exited(self, path: str, reason: ExitReason, *, restarts: int) -> None:
        """Report a child's exit (its supervisor decides what follows); abnormal exits reach the listeners."""
        self.report("child_exited", path, level=logging.WARNING if reason.abnormal else logging.INFO,
                    reason=str(reason), kind=reason.kind.value, restarts=restarts)
        if reason.abnormal:
            for listener in self._failure_listeners:
                listener(path, reason)

    def report(self, event: str, path: str, *, level: int | None = None, **fields: Any) -> None:
        """One structured supervisor report line."""
        if level is None:
            level = logging.ERROR if event in _ERROR_EVENTS else logging.INFO
        detail = " ".join(f"{k}={v}" for k, v in fields.items())
        log.log(
            level, "supervisor %s %s %s", event, path, detail, extra={"event": event, "path": path, **fields}
        )
