"""Stops that reach a node while PostgreSQL is unreachable.

DOMAIN §1 stores a command (``QUEUED``) before it is published, so during a database outage nothing can
be sent at all, stops included: a pump the automation wants off keeps running for the whole outage and
can run its tank dry. That is the one case where publishing first is safer than storing first.

:class:`OutageStops` keeps what signing a stop needs (the node's secret, zone and greenhouse) for every node a
command was submitted to, and, when a *plain stop* (``set_relay`` off, not timed) cannot be stored (or not
quickly: a write to a database going down can take seconds to fail), publishes it directly under its own
``cmd_id`` (``os-...``). It is never the confirmation: the caller still sends the stop through the durable
path until it is stored and answered DONE (sending a stop again is always safe; the node answers the second
``NO_EFFECT``). The direct publish is recorded: a structured warning and ``hydrovisor_outage_stops_total`` at
once, and the node's reply, which cannot be stored during the outage either, is redelivered by the node (QoS
1, not acknowledged) and stored as a row of its own once PostgreSQL is back (``commands.apply_orphan_reply``).
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Counter

from hydrovisor.commands.plane import CommandPlane, NodeNotConnected
from hydrovisor.protocol import channel_topic, encode_command
from hydrovisor.store.repos.nodes import NodeRecord
from hydrovisor.zones.safety import switch_state

log = logging.getLogger(__name__)

CMD_ID_PREFIX = "os-"
REPUBLISH_AFTER_S = 10.0


def is_plain_stop(cmd: str, params: dict[str, Any]) -> bool:
    """``set_relay`` off with no timer: the only command worth sending without its row (it can only stop)."""
    return cmd == "set_relay" and switch_state(params.get("state")) is False and not (
        "duration_ms" in params or "timeout_ms" in params)


class OutageStops:
    """See the module docstring. Loop-side; one per process."""

    def __init__(self, plane: CommandPlane, registry: CollectorRegistry) -> None:
        self._plane = plane
        self._nodes: dict[str, NodeRecord] = {}
        self._last: dict[tuple[str, str], float] = {}  # (node, channel) -> monotonic time of the last publish
        self._counter = Counter("hydrovisor_outage_stops_total",
                                "Stops published without their durable row because PostgreSQL was unreachable.",
                                ["outcome"], registry=registry)

    def learn(self, node: NodeRecord, channel: str, cmd: str, params: dict[str, Any]) -> None:
        """Remember ``node`` (called with every submitted command's target, so any node the process has
        started something on can be stopped later). Anything but a stop may start ``channel`` again: the
        next stop of it goes out however recent the last one was."""
        self._nodes[node.uid] = node
        if not is_plain_stop(cmd, params):
            self._last.pop((node.uid, channel), None)

    async def publish(self, cmd: str, params: dict[str, Any], *, node_uid: str, channel: str,
                      reason: str) -> str | None:
        """Publish the stop now, without a row; returns its ``cmd_id``, or None when it could not go out
        (not a plain stop, a node never submitted to, no greenhouse known, no live session, the broker)."""
        if not is_plain_stop(cmd, params):
            return None
        now = time.monotonic()
        last = self._last.get((node_uid, channel))
        if last is not None and now - last < REPUBLISH_AFTER_S:
            return None  # the caller resends every few seconds; the node needs one stop, not one per resend
        node = self._nodes.get(node_uid)
        view = self._plane.registry.get(node_uid)
        if node is None or node.zone_uid is None or view is None or view.gh_uid is None:
            self._counter.labels(outcome="unknown_node").inc()
            return None
        cmd_id = f"{CMD_ID_PREFIX}{uuid.uuid4().hex}"
        payload = encode_command(cmd, cmd_id, params, int(self._plane.clock.now()), node.node_secret)
        topic = channel_topic(view.gh_uid, node.zone_uid, node_uid, channel, "command")
        fields = {"event": "outage_stop_published", "cmd_id": cmd_id, "node_uid": node_uid, "channel": channel,
                  "zone_id": node.zone_uid}
        try:
            await self._plane.publish(topic, payload)
        except NodeNotConnected:
            self._counter.labels(outcome="node_not_connected").inc()
            return None
        except Exception as exc:  # the broker: nothing more can be done from here, the caller resends
            self._counter.labels(outcome="publish_failed").inc()
            log.warning("stop %s on %s/%s could not be published either: %s", cmd_id, node_uid, channel, exc,
                        extra={**fields, "event": "outage_stop_failed"})
            return None
        self._last[(node_uid, channel)] = now
        self._counter.labels(outcome="published").inc()
        log.warning("stop %s published to %s/%s without its row (%s)", cmd_id, node_uid, channel, reason,
                    extra=fields)
        return cmd_id
