"""Topic ACL of an authenticated device (PROTOCOL §2, §9): pure functions, no broker state.

A device owns two namespaces: its bound one ``hydro/{gh}/{zone}/{node_uid}`` (once bound) and
its temp one ``hydro/gh-temp/zn-temp/{hardware_id}`` (always - the firmware keeps listening
there). It may

- publish node-level (5 segments) and channel-level (6 segments) topics in either namespace,
  except the server->node types ``config`` and ``command`` (only the backend publishes those),
  plus ``hydro/node_hello`` and ``hydro/time/request``;
- subscribe to its own ``config`` and ``+/command`` filters in either namespace (or a narrower
  filter such as one channel's ``command``) and to ``hydro/time/response``.

Everything else is denied. The same rules are expected from the protocol package; these are
kept local to the broker on purpose and will be reconciled with it.
"""

from __future__ import annotations

from hydrovisor.broker.directory import DeviceIdentity

ROOT = "hydro"
TEMP_GH = "gh-temp"
TEMP_ZONE = "zn-temp"
GLOBAL_PUBLISH = frozenset({"hydro/node_hello", "hydro/time/request"})
GLOBAL_SUBSCRIBE = frozenset({"hydro/time/response"})
SERVER_ONLY_TYPES = frozenset({"config", "command"})
NODE_LEVEL, CHANNEL_LEVEL = 5, 6


def is_topic_name(topic: str) -> bool:
    """True for a topic one may publish to: non-empty, no wildcards, no NUL, not ``$``-prefixed."""
    return bool(topic) and not any(c in topic for c in "+#\x00") and not topic.startswith("$")


def namespaces(identity: DeviceIdentity) -> list[tuple[str, str, str]]:
    """The device's ``(gh, zone, node)`` namespaces: bound (if any) and temp."""
    candidates = [identity.bound_namespace, (TEMP_GH, TEMP_ZONE, identity.hardware_id)]
    return [ns for ns in candidates if ns is not None and all(map(_is_plain_segment, ns))]


def may_publish(identity: DeviceIdentity, topic: str) -> bool:
    """True when ``identity`` may publish to ``topic``."""
    if topic in GLOBAL_PUBLISH:
        return True
    if not is_topic_name(topic):
        return False
    levels = topic.split("/")
    if len(levels) not in (NODE_LEVEL, CHANNEL_LEVEL) or not all(levels):
        return False
    if levels[0] != ROOT or levels[-1] in SERVER_ONLY_TYPES:
        return False
    return (levels[1], levels[2], levels[3]) in namespaces(identity)


def may_subscribe(identity: DeviceIdentity, topic_filter: str) -> bool:
    """True when every topic ``topic_filter`` can match is one ``identity`` may receive."""
    if topic_filter in GLOBAL_SUBSCRIBE:
        return True
    for gh, zone, node in namespaces(identity):
        base = f"{ROOT}/{gh}/{zone}/{node}"
        if _covered(topic_filter, f"{base}/config") or _covered(topic_filter, f"{base}/+/command"):
            return True
    return False


def _covered(topic_filter: str, allowed: str) -> bool:
    """True when ``topic_filter`` matches nothing that ``allowed`` does not match."""
    filter_levels, allowed_levels = topic_filter.split("/"), allowed.split("/")
    if len(filter_levels) != len(allowed_levels):
        return False
    for mine, theirs in zip(filter_levels, allowed_levels, strict=True):
        if not mine or "#" in mine or ("+" in mine and mine != "+"):
            return False
        if theirs not in ("+", mine):
            return False
    return True


def _is_plain_segment(segment: str) -> bool:
    """A namespace segment usable in a topic: non-empty, no level separator, no wildcard."""
    return bool(segment) and not any(c in segment for c in "/+#\x00")
