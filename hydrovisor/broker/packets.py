"""Checks of every MQTT 3.1.1 packet a device sends after CONNECT (pure; no I/O).

amqtt 0.12 tolerates much that MQTT 3.1.1 says must close the connection: it logs and goes on
after a QoS 3 PUBLISH, reads a topic whose length overruns its packet into the next packet, decodes
invalid UTF-8 topics as their ``repr``, and keeps a connection open after a malformed UNSUBSCRIBE
or PUBREL. Our framing reader hands amqtt only packets that pass :func:`problem_with`; anything
else closes the connection (§4.8: "the Server MUST close the Network Connection").
"""

from __future__ import annotations

import struct

CONNECT, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 3, 4, 5, 6, 7
SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT = 8, 10, 12, 14
_SERVER_TO_CLIENT = {2, 9, 11, 13}  # CONNACK, SUBACK, UNSUBACK, PINGRESP
_FLAGS_TWO = {PUBREL, SUBSCRIBE, UNSUBSCRIBE}  # §2.2.2: these carry the fixed flags 0b0010
_ID_ONLY = {PUBACK, PUBREC, PUBREL, PUBCOMP}
_EMPTY = {PINGREQ, DISCONNECT}


def publish_qos(first: int) -> int:
    """QoS bits of a PUBLISH fixed-header byte."""
    return (first >> 1) & 0x03


def problem_with(first: int, body: bytes) -> str | None:
    """Why the packet (fixed-header byte ``first``, bytes after the remaining length ``body``) must
    close the connection, as a machine code; None when it is well formed."""
    kind, flags = first >> 4, first & 0x0F
    if kind == PUBLISH:
        return _publish_problem(flags, body)
    if kind in (0, 15):
        return "reserved_packet_type"
    if kind == CONNECT:
        return "second_connect"  # §3.1.0-2
    if kind in _SERVER_TO_CLIENT:
        return "unexpected_packet"
    if flags != (0b0010 if kind in _FLAGS_TWO else 0):
        return "bad_fixed_header_flags"
    if kind in _ID_ONLY:
        return None if len(body) == 2 and _packet_id(body, 0) else "bad_packet_id"
    if kind in _EMPTY:
        return None if not body else "bad_remaining_length"
    if kind == SUBSCRIBE:
        return _filters_problem(body, with_qos=True)
    return _filters_problem(body, with_qos=False)  # UNSUBSCRIBE


def _publish_problem(flags: int, body: bytes) -> str | None:
    qos, dup = (flags >> 1) & 0x03, flags & 0x08
    if qos == 3:
        return "publish_qos3"  # §3.3.1-4
    if qos == 0 and dup:
        return "publish_dup_qos0"  # §3.3.1-2
    topic, at, problem = _text(body, 0)
    if topic is None:
        return f"topic_{problem}"
    if not topic:
        return "empty_topic"  # §4.7.3-1
    if "+" in topic or "#" in topic:
        return "wildcard_in_topic"  # §3.3.2-2
    if topic.startswith("$"):
        return "reserved_topic"  # §4.7.2-1: $ topics are the server's
    if qos and (len(body) < at + 2 or not _packet_id(body, at)):
        return "bad_packet_id"
    return None


def _filters_problem(body: bytes, *, with_qos: bool) -> str | None:
    if len(body) < 2 or not _packet_id(body, 0):
        return "bad_packet_id"
    at, count = 2, 0
    while at < len(body):
        topic_filter, at, problem = _text(body, at)
        if topic_filter is None:
            return f"topic_filter_{problem}"
        if not topic_filter:
            return "empty_topic_filter"  # §4.7.3-1: at least one character
        if with_qos:
            if at >= len(body) or body[at] > 2:
                return "bad_requested_qos"  # §3.8.3-4
            at += 1
        count += 1
    return None if count else "no_topic_filter"  # §3.8.3-3, §3.10.3-2


def _packet_id(data: bytes, at: int) -> int:
    value: int = struct.unpack_from("!H", data, at)[0]
    return value


def _text(data: bytes, at: int) -> tuple[str | None, int, str]:
    """A §1.5.3 UTF-8 string at ``at``: (text, offset after it, ""), or (None, at, what is wrong)."""
    if len(data) < at + 2:
        return None, at, "length_missing"
    length = _packet_id(data, at)
    end = at + 2 + length
    if end > len(data):
        return None, at, "overruns_packet"
    try:
        text = data[at + 2:end].decode("utf-8")
    except UnicodeDecodeError:
        return None, at, "not_utf8"  # §1.5.3-1
    if "\x00" in text:
        return None, at, "contains_nul"  # §1.5.3-2
    return text, end, ""
