"""``Refused``: a request the system declines on purpose, carrying what the HTTP API answers with.

The command path, the workflow runtime and the chaos engine raise their own subclasses; the HTTP error
middleware turns any of them into the JSON error body, so a route needs no conversion of its own.
"""

from __future__ import annotations

from typing import Any


class Refused(Exception):
    """HTTP ``status``, machine ``code``, human ``message``, response ``headers`` (``Retry-After``) and
    ``extra`` fields of the error body (the gate's ``reason_code``, a running workflow's id, ...)."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra
