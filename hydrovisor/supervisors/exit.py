"""Why an incarnation ended."""

from __future__ import annotations

import enum

import msgspec


class ExitKind(enum.StrEnum):
    """Exit classes; only ``normal`` and ``shutdown`` are not failures."""

    NORMAL = "normal"
    SHUTDOWN = "shutdown"
    CRASH = "crash"
    START_FAILED = "start_failed"
    HUNG = "hung"
    BASE_EXCEPTION = "base_exception"
    ESCALATED = "reached_max_restart_intensity"
    KILLED = "killed"


class ExitReason(msgspec.Struct, frozen=True):
    """Kind plus a short human detail (exception type and message)."""

    kind: ExitKind
    detail: str = ""

    @property
    def abnormal(self) -> bool:
        """True for every exit that is a failure (recorded, reported, restarted if permanent)."""
        return self.kind not in (ExitKind.NORMAL, ExitKind.SHUTDOWN)

    @property
    def restarts_transient(self) -> bool:
        """Whether a transient child is restarted after this exit.

        OTP: a supervisor that reached its restart intensity exits with reason ``shutdown``, so a
        transient supervisor is then left down (a permanent one is restarted, and that restart
        counts toward its parent's intensity). We keep the kind ``reached_max_restart_intensity``
        rather than a literal ``shutdown`` so that the escalation stays visible as a failure (last
        failure, restart metrics, a root exit is FATAL), and decide restarts as OTP does.
        """
        return self.abnormal and self.kind is not ExitKind.ESCALATED

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}" if self.detail else self.kind.value

    @classmethod
    def from_exception(cls, kind: ExitKind, exc: BaseException) -> ExitReason:
        """Reason naming the exception type and its message, truncated for logs and labels."""
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return cls(kind, text[:300])


NORMAL = ExitReason(ExitKind.NORMAL)
SHUTDOWN = ExitReason(ExitKind.SHUTDOWN)
