"""The task contract (DOMAIN §5), pure: statuses and their transitions, per-type payloads, the request and
its validation, the idempotency fingerprint, fail-fast terminals on receipt, retry ids and backoff.

No I/O and no wall clock: every time is passed in, so the rules are tested exhaustively and the store
(``hydrovisor.store.repos.tasks``) and the HTTP route apply exactly these.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from enum import StrEnum
from typing import Annotated, Any, Literal, Protocol

import msgspec

__all__ = [
    "BACKOFF_BASE_S",
    "BACKOFF_CAP_S",
    "CORRELATION_ID_PATTERN",
    "IDEMPOTENCY_WINDOW",
    "MAX_ATTEMPTS",
    "OUTCOME_DECISIONS",
    "PAYLOADS",
    "PREDECESSORS",
    "TERMINAL",
    "Attempted",
    "ContractError",
    "Decision",
    "TaskBody",
    "TaskRequest",
    "TaskStatus",
    "TaskType",
    "backoff_s",
    "check_request",
    "fingerprint",
    "initial_status",
    "next_retry",
    "parse_request",
    "retry_correlation_id",
]


class TaskStatus(StrEnum):
    """Lifecycle status of a task; the value is the database and wire spelling."""

    ACCEPTED = "accepted"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    REJECTED = "rejected"


class TaskType(StrEnum):
    """What a task does in its zone."""

    IRRIGATION = "irrigation"
    LIGHTING = "lighting"
    VENTILATION = "ventilation"
    SOLUTION_CHANGE = "solution_change"
    MIST = "mist"
    DIAGNOSTICS = "diagnostics"


class Decision(StrEnum):
    """What was decided about a task: ``skip`` is "nothing to do" (``completed``), ``retry`` a failed
    dispatch that gets a new task, ``fail`` a task that ends without running (or failing for good)."""

    RUN = "run"
    SKIP = "skip"
    RETRY = "retry"
    FAIL = "fail"


_T = TaskStatus
TERMINAL: frozenset[TaskStatus] = frozenset({_T.COMPLETED, _T.FAILED, _T.EXPIRED, _T.REJECTED})
"""Statuses that never change again (the store's updates are guarded by :data:`PREDECESSORS`)."""

PREDECESSORS: dict[TaskStatus, frozenset[TaskStatus]] = {
    _T.ACCEPTED: frozenset(),  # only ever the first status
    _T.RUNNING: frozenset({_T.ACCEPTED}),
    _T.COMPLETED: frozenset({_T.RUNNING}),
    # a running task's dispatch failed; or restart recovery finalises a task left accepted or running
    _T.FAILED: frozenset({_T.ACCEPTED, _T.RUNNING}),
    _T.EXPIRED: frozenset({_T.ACCEPTED}),  # on receipt, or never dispatched before expires_at
    _T.REJECTED: frozenset(),  # only on receipt
}
"""For each status, the statuses a task may move to it from: the transition rule as data."""

# Which outcome a finished task may carry: "nothing to do" is completed+skip; a retry is a failed dispatch.
OUTCOME_DECISIONS: dict[TaskStatus, frozenset[Decision]] = {
    _T.COMPLETED: frozenset({Decision.RUN, Decision.SKIP}),
    _T.FAILED: frozenset({Decision.RUN, Decision.RETRY, Decision.FAIL}),
}

IDEMPOTENCY_WINDOW = dt.timedelta(hours=24)
"""A correlation id names one task for this long after receipt (longer while that task has not expired)."""

MAX_ATTEMPTS = 3
"""The first dispatch and at most two retries."""
BACKOFF_BASE_S = 10
BACKOFF_CAP_S = 300

# Printable ASCII without spaces: ids end up in logs, URLs and MQTT payloads; NUL cannot be stored.
CORRELATION_ID_PATTERN = r"^[\x21-\x7e]{8,128}$"
_RETRY_SUFFIX = re.compile(r":retry\d+$")
# what PostgreSQL and Python datetimes both hold, with room for the UTC conversion of any offset
_EARLIEST = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_LATEST = dt.datetime(9999, 12, 30, tzinfo=dt.UTC)

Duration = Annotated[int, msgspec.Meta(ge=1, le=3600, description="seconds (1..3600)")]
OnOff = Literal["on", "off"]


class IrrigationPayload(msgspec.Struct, forbid_unknown_fields=True):
    """``irrigation``: water the zone for ``duration_s`` seconds."""

    duration_s: Duration


class LightingPayload(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """``lighting``: lights on or off; ``mode=pwm`` dims to ``pwm_level`` percent (required to turn on)."""

    state: OnOff
    mode: Literal["relay", "pwm"] | None = None
    pwm_level: Annotated[int, msgspec.Meta(ge=1, le=100)] | None = None


class VentilationPayload(msgspec.Struct, forbid_unknown_fields=True):
    """``ventilation``: fans on or off."""

    state: OnOff


class MistPayload(msgspec.Struct, forbid_unknown_fields=True):
    """``mist``: misting for ``duration_s`` seconds."""

    duration_s: Duration


class EmptyPayload(msgspec.Struct, forbid_unknown_fields=True):
    """``solution_change`` and ``diagnostics`` take no parameters (the zone's settings say how)."""


PAYLOADS: dict[TaskType, type[msgspec.Struct]] = {
    TaskType.IRRIGATION: IrrigationPayload,
    TaskType.LIGHTING: LightingPayload,
    TaskType.VENTILATION: VentilationPayload,
    TaskType.SOLUTION_CHANGE: EmptyPayload,
    TaskType.MIST: MistPayload,
    TaskType.DIAGNOSTICS: EmptyPayload,
}

AwareTime = Annotated[dt.datetime, msgspec.Meta(tz=True, description="RFC 3339 with an offset, e.g. "
                                                                     "2026-12-03T06:00:00+01:00")]


class TaskBody(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /api/v1/tasks``: what a client asks for. Times need an offset; nothing defaults to "now"."""

    zone_uid: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
    task_type: TaskType
    due_at: AwareTime
    expires_at: AwareTime
    correlation_id: Annotated[str, msgspec.Meta(pattern=CORRELATION_ID_PATTERN,
                                                description="8..128 printable ASCII characters, no spaces; "
                                                            "must not end in :retry<N> (retries get those)")]
    payload: dict[str, Any] = {}
    scheduled_for: AwareTime | None = None


class TaskRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A validated request (from HTTP or the scheduler): times in UTC, payload normalised per type."""

    zone_uid: str
    task_type: TaskType
    payload: dict[str, Any]
    due_at: dt.datetime
    expires_at: dt.datetime
    correlation_id: str
    scheduled_for: dt.datetime | None = None
    # set on retries only (see :func:`retry_correlation_id`)
    parent_correlation_id: str | None = None
    attempt: int = 1


class ContractError(ValueError):
    """A request breaks the contract: ``field`` is its path (``due_at``, ``payload.duration_s``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


_AT = re.compile(r" - at `\$\.?([^`]*)`$")
_NAMED = re.compile(r"field `([^`]+)`")


def _error(exc: msgspec.ValidationError, prefix: str = "") -> ContractError:
    """msgspec's message names the field either by path (``- at `$.due_at```) or, for a missing or unknown
    key, by name; both become one dotted field path."""
    text = str(exc)
    parts = [prefix] if prefix else []
    at = _AT.search(text)
    if at is not None and at.group(1):
        parts.append(at.group(1))
    named = _NAMED.search(text)
    if named is not None:
        parts.append(named.group(1))
    field = ".".join(parts) or "$"
    message = _AT.sub("", text)
    # say what to do about it, not only what msgspec expected
    if "timezone component" in message:
        message = "needs an RFC 3339 offset (e.g. Z or +01:00): naive times are refused"
    return ContractError(field, message)


def parse_request(raw: bytes) -> TaskRequest:
    """Decode and validate a JSON body; :class:`ContractError` naming the first bad field.

    A body that is not JSON raises ``msgspec.DecodeError`` (the caller's 400), not a ContractError.
    """
    try:
        body = msgspec.json.decode(raw, type=TaskBody)
    except msgspec.ValidationError as exc:
        raise _error(exc) from None
    request = TaskRequest(zone_uid=body.zone_uid, task_type=body.task_type, payload=body.payload,
                          due_at=body.due_at, expires_at=body.expires_at, correlation_id=body.correlation_id,
                          scheduled_for=body.scheduled_for)
    if _RETRY_SUFFIX.search(body.correlation_id):
        raise ContractError("correlation_id", "must not end in :retry<N>, which names retries of a task")
    return check_request(request)


def _utc(field: str, value: dt.datetime) -> dt.datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ContractError(field, "needs an RFC 3339 offset (e.g. Z or +01:00): naive times are refused")
    try:
        utc = value.astimezone(dt.UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ContractError(field, "is out of range (1970-01-01 .. 9999-12-29)") from None
    if not _EARLIEST <= utc < _LATEST:
        raise ContractError(field, "is out of range (1970-01-01 .. 9999-12-29)")
    return utc


def check_request(request: TaskRequest) -> TaskRequest:
    """The request with times in UTC and the payload validated and normalised for its type; or
    :class:`ContractError`: naive or out-of-range times, ``expires_at > due_at >= scheduled_for``, the payload."""
    due_at = _utc("due_at", request.due_at)
    expires_at = _utc("expires_at", request.expires_at)
    scheduled_for = None if request.scheduled_for is None else _utc("scheduled_for", request.scheduled_for)
    if not 8 <= len(request.correlation_id) <= 160 or not request.correlation_id.isprintable():
        raise ContractError("correlation_id", "must be 8..128 printable characters (retry ids may be longer)")
    if expires_at <= due_at:
        raise ContractError("expires_at", "must be later than due_at")
    if scheduled_for is not None and due_at < scheduled_for:
        raise ContractError("scheduled_for", "must not be later than due_at")
    if not 1 <= request.attempt <= MAX_ATTEMPTS:
        raise ContractError("attempt", f"must be 1..{MAX_ATTEMPTS}")
    payload = _payload(TaskType(request.task_type), request.payload)
    return msgspec.structs.replace(request, task_type=TaskType(request.task_type), payload=payload, due_at=due_at,
                                   expires_at=expires_at, scheduled_for=scheduled_for)


def _payload(task_type: TaskType, raw: Any) -> dict[str, Any]:
    try:
        value = msgspec.convert(raw, PAYLOADS[task_type])
    except msgspec.ValidationError as exc:
        raise _error(exc, "payload") from None
    if isinstance(value, LightingPayload):
        if value.pwm_level is not None and value.mode != "pwm":
            raise ContractError("payload.pwm_level", "is only allowed with mode=pwm")
        if value.mode == "pwm" and value.state == "on" and value.pwm_level is None:
            raise ContractError("payload.pwm_level", "is required to turn lights on with mode=pwm")
    normalised: dict[str, Any] = msgspec.to_builtins(value)
    return normalised


def fingerprint(request: TaskRequest) -> str:
    """SHA-256 over what makes two requests the same task: zone, type, normalised payload and the three
    times as UTC instants (``+01:00`` and ``Z`` spellings of one instant are equal). Not the correlation id
    (that is the key), nor the attempt (a retry is the same work under a new key)."""
    canonical = {
        "zone_uid": request.zone_uid,
        "task_type": str(request.task_type),
        "payload": request.payload,
        "scheduled_for": None if request.scheduled_for is None else _instant(request.scheduled_for),
        "due_at": _instant(request.due_at),
        "expires_at": _instant(request.expires_at),
    }
    return hashlib.sha256(msgspec.json.encode(canonical, order="sorted")).hexdigest()


def _instant(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="microseconds")


REASON_RECEIVED_AFTER_EXPIRY = "task_received_after_expiry"
REASON_RECEIVED_AFTER_DUE = "task_received_after_due"


def initial_status(request: TaskRequest, now: dt.datetime) -> tuple[TaskStatus, str | None]:
    """The status a request is stored with, and why when it is a fail-fast terminal: received at or after
    ``expires_at`` → ``expired``; after ``due_at`` → ``rejected``; never executed either way."""
    if now >= request.expires_at:
        return TaskStatus.EXPIRED, REASON_RECEIVED_AFTER_EXPIRY
    if now > request.due_at:
        return TaskStatus.REJECTED, REASON_RECEIVED_AFTER_DUE
    return TaskStatus.ACCEPTED, None


def retry_correlation_id(root: str, n: int) -> str:
    """The correlation id of the ``n``-th retry (1-based) of the task whose id is ``root``."""
    if n < 1:
        raise ValueError(f"retry number must be >= 1, got {n}")
    return f"{root}:retry{n}"


def backoff_s(n: int) -> int:
    """Seconds before the ``n``-th retry (1-based): ``min(300, 10 * 2**(n-1))``."""
    if n < 1:
        raise ValueError(f"retry number must be >= 1, got {n}")
    # beyond 2**5 the cap applies; not computing 2**(n-1) keeps a huge n cheap
    return BACKOFF_CAP_S if n > 6 else min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (n - 1))


class Attempted(Protocol):
    """What :func:`next_retry` needs of a task (a stored task record has both)."""

    @property
    def attempt(self) -> int: ...

    @property
    def expires_at(self) -> dt.datetime: ...


def next_retry(task: Attempted, now: dt.datetime) -> dt.datetime | None:
    """When the retry of failed ``task`` may run, or None: after :data:`MAX_ATTEMPTS` attempts, or when the
    backoff would reach ``expires_at`` (a retry that could not run before it would only expire)."""
    if task.attempt >= MAX_ATTEMPTS:
        return None
    at = now + dt.timedelta(seconds=backoff_s(task.attempt))
    return at if at < task.expires_at else None
