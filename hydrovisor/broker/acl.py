"""Topic ACL of an authenticated device (PROTOCOL §2, §9): pure functions, no broker state.

A device owns two namespaces: its bound one ``hydro/{gh}/{zone}/{node_uid}`` (once bound) and
its temp one ``hydro/gh-temp/zn-temp/{hardware_id}`` (always - the firmware keeps listening
there). It may

- publish node-level (5 segments) and channel-level (6 segments) topics in either namespace,
  except the server->node types ``config`` and ``command`` (only the backend publishes those),
  plus ``hydro/node_hello`` and ``hydro/time/request``;
- subscribe to its own ``config`` and ``+/command`` filters in either namespace (or a narrower
  filter such as one channel's ``command``) and to ``hydro/time/response``.

Everything else is denied. The rules are the protocol package's (``protocol.topics``,
``device_publish_allowed`` / ``device_subscribe_allowed``): one ACL, applied here to the identity
the broker admitted.
"""

from __future__ import annotations

from hydrovisor.broker.directory import DeviceIdentity
from hydrovisor.protocol.topics import device_publish_allowed, device_subscribe_allowed


def is_topic_name(topic: str) -> bool:
    """True for a topic one may publish to: non-empty, no wildcards, no NUL, not ``$``-prefixed."""
    return bool(topic) and not any(c in topic for c in "+#\x00") and not topic.startswith("$")


def may_publish(identity: DeviceIdentity, topic: str) -> bool:
    """True when ``identity`` may publish to ``topic``."""
    gh, zone, node = identity.bound_namespace or (None, None, None)
    return device_publish_allowed(topic, node_uid=node, hardware_id=identity.hardware_id, gh=gh, zone=zone)


def may_subscribe(identity: DeviceIdentity, topic_filter: str) -> bool:
    """True when every topic ``topic_filter`` can match is one ``identity`` may receive."""
    gh, zone, node = identity.bound_namespace or (None, None, None)
    return device_subscribe_allowed(topic_filter, node_uid=node, hardware_id=identity.hardware_id, gh=gh, zone=zone)
