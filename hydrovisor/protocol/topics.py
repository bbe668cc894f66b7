"""MQTT topic grammar of Protocol 2.0: parsing, building, server subscriptions and the device ACL.

Input is validated leniently (real nodes are the reference, PROTOCOL.md preamble): ``parse_topic``
only insists on what keeps a topic unambiguous — the ``hydro`` root, 5 or 6 non-empty segments, no
wildcards or control characters, the byte and channel-length limits. ``strict=True`` adds the
published charset (lowercase ``[a-z0-9_-]``). Builders refuse anything ``parse_topic`` would refuse,
so every built topic parses back to the same parts.
"""

from __future__ import annotations

import re
from enum import StrEnum

import msgspec

__all__ = [
    "MAX_CHANNEL_LEN",
    "MAX_TOPIC_BYTES",
    "NODE_HELLO",
    "ROOT",
    "SERVER_SUBSCRIPTIONS",
    "TEMP_GH",
    "TEMP_ZONE",
    "TIME_REQUEST",
    "TIME_RESPONSE",
    "ParsedTopic",
    "TopicError",
    "TopicInvalid",
    "TopicKind",
    "TopicType",
    "channel_topic",
    "device_publish_allowed",
    "device_subscribe_allowed",
    "node_topic",
    "parse_topic",
    "temp_topic",
    "validate_segment",
]

ROOT = "hydro"
TEMP_GH = "gh-temp"
TEMP_ZONE = "zn-temp"

NODE_HELLO = "hydro/node_hello"
TIME_REQUEST = "hydro/time/request"
TIME_RESPONSE = "hydro/time/response"

MAX_TOPIC_BYTES = 191
MAX_CHANNEL_LEN = 63


class TopicKind(StrEnum):
    """Shape of a topic: node level (5 segments), channel level (6 segments) or one of the globals."""

    NODE = "node"
    CHANNEL = "channel"
    GLOBAL = "global"


class TopicType(StrEnum):
    """Known values of the last segment (and the pseudo-types of the global topics).

    ``ParsedTopic.type`` is a plain ``str`` (unknown types still parse); compare it with these members.
    """

    TELEMETRY = "telemetry"
    STATUS = "status"
    LWT = "lwt"
    HEARTBEAT = "heartbeat"
    CONFIG_REPORT = "config_report"
    DIAGNOSTICS = "diagnostics"
    ERROR = "error"
    NODE_HELLO = "node_hello"
    COMMAND_RESPONSE = "command_response"
    EVENT = "event"
    COMMAND = "command"
    CONFIG = "config"
    TIME_REQUEST = "time_request"
    TIME_RESPONSE = "time_response"


_GLOBALS: dict[str, TopicType] = {
    NODE_HELLO: TopicType.NODE_HELLO,
    TIME_REQUEST: TopicType.TIME_REQUEST,
    TIME_RESPONSE: TopicType.TIME_RESPONSE,
}

# Types only the server publishes: a device publishing them would be impersonating the backend.
_SERVER_ONLY_TYPES = frozenset({TopicType.COMMAND, TopicType.CONFIG})

SERVER_SUBSCRIPTIONS: tuple[str, ...] = (
    "hydro/+/+/+/+/telemetry",
    "hydro/+/+/+/heartbeat",
    "hydro/+/+/+/status",
    "hydro/+/+/+/lwt",
    "hydro/+/+/+/diagnostics",
    "hydro/+/+/+/error",
    NODE_HELLO,
    "hydro/+/+/+/node_hello",
    "hydro/+/+/+/config_report",
    "hydro/+/+/+/+/command_response",
    "hydro/+/+/+/+/event",
    TIME_REQUEST,
)
"""The filters the server subscribes to (PROTOCOL.md §2), QoS 1 each."""

_STRICT_SEGMENT = re.compile(r"[a-z0-9_-]+")
# Wildcards, the separator, whitespace and control characters (MQTT forbids U+0000; the rest are never
# legitimate in an identifier and would make logs and ACL decisions ambiguous).
_FORBIDDEN_CHAR = re.compile(r"[+#/\s\x00-\x1f\x7f]")


class ParsedTopic(msgspec.Struct, frozen=True):
    """A topic split into its parts.

    For ``kind == GLOBAL`` the ``gh``/``zone``/``node`` fields are empty strings (parsed segments are
    never empty, so ``""`` cannot be confused with a real value) and ``type`` is ``node_hello``,
    ``time_request`` or ``time_response``. ``channel`` is set only for ``kind == CHANNEL``.
    """

    kind: TopicKind
    type: str
    gh: str = ""
    zone: str = ""
    node: str = ""
    channel: str | None = None

    @property
    def is_temp(self) -> bool:
        """True for the temp namespace of unbound nodes (``node`` is then a hardware id)."""
        return self.gh == TEMP_GH and self.zone == TEMP_ZONE

    @property
    def namespace(self) -> tuple[str, str, str] | None:
        """``(gh, zone, node)`` of a node or channel topic; None for globals."""
        if self.kind is TopicKind.GLOBAL:
            return None
        return (self.gh, self.zone, self.node)


class TopicError(msgspec.Struct, frozen=True):
    """Why a topic was refused: a machine ``reason`` and a human ``detail``. A value, not an exception."""

    reason: str
    detail: str


class TopicInvalid(ValueError):
    """Raised by the topic builders when a part cannot form a valid topic."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _segment_problem(value: str, what: str, *, strict: bool) -> TopicError | None:
    if not value:
        return TopicError("empty_segment", f"{what} is empty")
    if _FORBIDDEN_CHAR.search(value):
        return TopicError("invalid_char", f"{what} {value!r} contains a wildcard, '/', space or control char")
    if strict and not _STRICT_SEGMENT.fullmatch(value):
        return TopicError("invalid_segment", f"{what} {value!r} is not lowercase [a-z0-9_-]")
    return None


def validate_segment(value: object, what: str = "segment", *, strict: bool = True) -> TopicError | None:
    """None when ``value`` can be one topic segment (``strict``: lowercase ``[a-z0-9_-]``), else why not.
    Does not check the channel length limit (``MAX_CHANNEL_LEN``)."""
    if not isinstance(value, str):
        return TopicError("invalid_segment", f"{what} is not a string")
    return _segment_problem(value, what, strict=strict)


def _byte_length(topic: str) -> int | None:
    try:
        return len(topic.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates: not representable on the wire
        return None


_SEGMENT_NAMES = ("gh", "zone", "node", "channel")


def parse_topic(topic: str, *, strict: bool = False) -> ParsedTopic | TopicError:
    """Split ``topic`` into a ``ParsedTopic``, or say why it is not a Protocol 2.0 topic. Never raises.

    Lenient by default (see the module docstring); ``strict=True`` also requires every segment to be
    lowercase ``[a-z0-9_-]`` as published.
    """
    if not isinstance(topic, str) or not topic:
        return TopicError("empty", "topic is empty or not a string")
    size = _byte_length(topic)
    if size is None:
        return TopicError("invalid_char", "topic is not valid UTF-8")
    if size > MAX_TOPIC_BYTES:
        return TopicError("too_long", f"topic is {size} bytes, limit {MAX_TOPIC_BYTES}")
    if "+" in topic or "#" in topic:
        return TopicError("wildcard", "a topic name may not contain '+' or '#'")
    global_type = _GLOBALS.get(topic)
    if global_type is not None:
        return ParsedTopic(kind=TopicKind.GLOBAL, type=global_type.value)
    parts = topic.split("/")
    if parts[0] != ROOT:
        return TopicError("not_hydro", f"topic does not start with '{ROOT}/'")
    if len(parts) not in (5, 6):
        return TopicError("bad_segment_count", f"{len(parts)} segments, expected 5 or 6 or a global topic")
    *ids, type_ = parts[1:]
    for name, value in zip(_SEGMENT_NAMES, ids, strict=False):
        problem = _segment_problem(value, name, strict=strict)
        if problem is not None:
            return problem
    problem = _segment_problem(type_, "type", strict=strict)
    if problem is not None:
        return problem
    if len(ids) == 3:
        return ParsedTopic(kind=TopicKind.NODE, type=type_, gh=ids[0], zone=ids[1], node=ids[2])
    if len(ids[3]) > MAX_CHANNEL_LEN:
        return TopicError("channel_too_long", f"channel is {len(ids[3])} chars, limit {MAX_CHANNEL_LEN}")
    return ParsedTopic(
        kind=TopicKind.CHANNEL, type=type_, gh=ids[0], zone=ids[1], node=ids[2], channel=ids[3]
    )


def _build(parts: list[str]) -> str:
    # Check parts one by one first: a part containing '/' would otherwise yield a well-formed topic
    # of a different shape (node_topic("g", "z/x", ...) parsing as a channel topic).
    for name, value in zip((*_SEGMENT_NAMES[: len(parts) - 1], "type"), parts, strict=True):
        problem = validate_segment(value, name, strict=False)
        if problem is not None:
            raise TopicInvalid(problem.reason, problem.detail)
    topic = "/".join([ROOT, *parts])
    parsed = parse_topic(topic)
    if isinstance(parsed, TopicError):
        raise TopicInvalid(parsed.reason, parsed.detail)
    return topic


def node_topic(gh: str, zone: str, node: str, type: str) -> str:
    """``hydro/{gh}/{zone}/{node}/{type}``; raises ``TopicInvalid`` for a part ``parse_topic`` refuses."""
    return _build([gh, zone, node, type])


def channel_topic(gh: str, zone: str, node: str, channel: str, type: str) -> str:
    """``hydro/{gh}/{zone}/{node}/{channel}/{type}``; raises ``TopicInvalid`` like ``node_topic``."""
    return _build([gh, zone, node, channel, type])


def temp_topic(hardware_id: str, type: str, channel: str | None = None) -> str:
    """A topic in the temp namespace of an unbound node: ``hydro/gh-temp/zn-temp/{hardware_id}/...``."""
    if channel is None:
        return node_topic(TEMP_GH, TEMP_ZONE, hardware_id, type)
    return channel_topic(TEMP_GH, TEMP_ZONE, hardware_id, channel, type)


# --- device ACL (PROTOCOL.md §9) ------------------------------------------------------------------


def _own_namespaces(
    node_uid: str | None, hardware_id: str, gh: str | None, zone: str | None
) -> set[tuple[str, str, str]]:
    namespaces: set[tuple[str, str, str]] = set()
    if hardware_id:
        namespaces.add((TEMP_GH, TEMP_ZONE, hardware_id))
    if node_uid and gh and zone:
        namespaces.add((gh, zone, node_uid))
    return namespaces


def device_publish_allowed(
    topic: str, *, node_uid: str | None, hardware_id: str, gh: str | None, zone: str | None
) -> bool:
    """May the device identified by ``hardware_id`` (and, once bound, ``node_uid`` in ``gh``/``zone``)
    publish on ``topic``?

    Allowed: ``hydro/node_hello``, ``hydro/time/request`` and any node/channel topic under its temp
    namespace ``hydro/gh-temp/zn-temp/{hardware_id}`` or its bound namespace ``hydro/{gh}/{zone}/{node_uid}``
    (only when all three are given). ``command`` and ``config`` are refused even there: only the backend
    publishes them. During a pending bind pass the *target* gh/zone — the node reports from there.
    Never raises; anything unparseable is refused.
    """
    parsed = parse_topic(topic)
    if isinstance(parsed, TopicError):
        return False
    if parsed.kind is TopicKind.GLOBAL:
        return topic in (NODE_HELLO, TIME_REQUEST)
    if parsed.type in _SERVER_ONLY_TYPES:
        return False
    return parsed.namespace in _own_namespaces(node_uid, hardware_id, gh, zone)


def device_subscribe_allowed(
    topic_filter: str, *, node_uid: str | None, hardware_id: str, gh: str | None, zone: str | None
) -> bool:
    """May the device subscribe to ``topic_filter``?

    Allowed, for its temp and (when bound) its bound namespace ``ns``: ``{ns}/config``,
    ``{ns}/+/command`` and ``{ns}/{channel}/command`` for a concrete channel; plus
    ``hydro/time/response``. ``#`` anywhere, or ``+`` in any other position, is refused. Never raises.
    """
    if not isinstance(topic_filter, str) or "#" in topic_filter:
        return False
    if topic_filter == TIME_RESPONSE:
        return True
    size = _byte_length(topic_filter)
    if size is None or size > MAX_TOPIC_BYTES:
        return False
    parts = topic_filter.split("/")
    if parts[0] != ROOT or len(parts) not in (5, 6):
        return False
    namespace = (parts[1], parts[2], parts[3])
    if any(_segment_problem(value, "id", strict=False) for value in namespace):
        return False  # also refuses '+' in the gh/zone/node positions
    if namespace not in _own_namespaces(node_uid, hardware_id, gh, zone):
        return False
    if len(parts) == 5:
        return parts[4] == TopicType.CONFIG
    if parts[5] == TopicType.COMMAND:
        channel = parts[4]
        return channel == "+" or (
            _segment_problem(channel, "channel", strict=False) is None and len(channel) <= MAX_CHANNEL_LEN
        )
    return False
