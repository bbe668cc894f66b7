"""Routes every device message that passed the broker's ACL (runs on the loop).

The broker hook only enqueues; one task drains the queue so the broker's path stays cheap.
Telemetry is validated here and told to the telemetry writer (the hot path never visits a node
actor); time requests are answered at once; a ``node_hello`` registers the node (and starts its
actor); every other message goes to ``/nodes/<uid>``. What cannot be routed is counted with a
reason in ``hydrovisor_device_messages_total``.

Each message comes with its receipt (``broker.receipts``), settled when the message is kept: a
telemetry sample by the writer's commit, a command reply once stored, a ``node_hello`` once
registered, anything else once told to its node actor, a refused message once its drop is counted.
A message whose handling raised is failed (the device sends it again), as is everything still
queued when the router stops. The queue needs no bound of its own: every message in it holds a
place in the broker's in-flight limits until settled.

A command refused for the node's clock (``timestamp_expired``, ``time_not_synced``: the node synced once at
connect and drifted, or took a late answer) makes the router broadcast the time before the refusal is stored:
the retry that follows it (a stop is always retried) reaches the node after its resync, not into the same
refusal. At most one such broadcast per ``CLOCK_RESYNC_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

import asyncpg
import msgspec
from prometheus_client import CollectorRegistry, Counter

from hydrovisor.actors.node import FromDevice
from hydrovisor.actors.telemetry_writer import StoreSample
from hydrovisor.broker import DeviceMessage as BrokerMessage
from hydrovisor.broker.receipts import Receipt, ReceiptBook
from hydrovisor.commands.plane import CommandPlane
from hydrovisor.commands.replies import ReplyLanes, route_reply
from hydrovisor.devices.ingest import DropReason, TelemetryCounters, validate_sample
from hydrovisor.devices.plane import DevicePlane
from hydrovisor.devices.registry import NodeView
from hydrovisor.devices.spawn import ensure_node_actor, node_path
from hydrovisor.protocol import (
    CLOCK_ERRORS,
    TIME_RESPONSE,
    CommandResponse,
    DecodeError,
    ErrorReport,
    Event,
    Lwt,
    NodeHello,
    ParsedTopic,
    Telemetry,
    TimeRequest,
    TopicError,
    decode_device_message,
    encode_time_response,
    node_uid_from_hello,
    parse_topic,
)
from hydrovisor.store.repos import nodes
from hydrovisor.supervisors import ActorSystem, NoSuchActor, SupervisionError
from hydrovisor.zoneplane.runtime import ZoneRuntime

log = logging.getLogger(__name__)

WRITER_PATH = "/store/telemetry_writer"
TIME_COALESCE_S = 0.1
CLOCK_RESYNC_S = 0.25
STOP_GRACE_S = 5.0


class DeviceRouter:
    """Queue + dispatcher of device messages; ``on_message`` is the broker hook."""

    def __init__(self, plane: DevicePlane, system: ActorSystem, registry: CollectorRegistry, *,
                 telemetry: TelemetryCounters, commands: CommandPlane, receipts: ReceiptBook,
                 zones: ZoneRuntime) -> None:
        self._plane = plane
        self._zones = zones
        self._commands = commands
        self._replies = ReplyLanes(system, commands)
        self._system = system
        self._telemetry = telemetry
        self._receipts = receipts
        self._queue: asyncio.Queue[tuple[BrokerMessage, Receipt]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._time_answer_pending = False
        self._clock_resynced_at = -CLOCK_RESYNC_S  # monotonic time of the last resync after a clock refusal
        self._background: set[asyncio.Task[None]] = set()
        self._silenced: dict[str, float] = {}  # node uid -> monotonic time the silence ends
        self._messages = Counter("hydrovisor_device_messages_total", "Device messages by type and outcome.",
                                 ["type", "outcome"], registry=registry)

    def on_message(self, message: BrokerMessage, receipt: Receipt) -> None:
        """Broker hook (on the loop): enqueue only."""
        self._queue.put_nowait((message, receipt))

    def silence(self, uid: str, seconds: float) -> None:
        """Discard everything node ``uid`` sends for ``seconds`` (0 ends it): to us it went quiet while
        still connected, the case only the liveness timeout can catch (fault injection)."""
        if seconds > 0:
            self._silenced[uid] = time.monotonic() + seconds
        else:
            self._silenced.pop(uid, None)

    def _is_silenced(self, topic: ParsedTopic) -> bool:
        uid = self._resolve(topic.node, topic.is_temp)
        until = self._silenced.get(uid) if uid is not None else None
        return until is not None and time.monotonic() < until

    def start(self) -> None:
        """Start draining the queue (call on the loop)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="device-router")

    async def stop(self) -> None:
        """Stop draining; queued messages were not acknowledged: devices send them again."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            self._queue.get_nowait()[1].fail("router_stopped")
        if self._background:  # replies being stored: their commands' state should not be left behind
            await asyncio.wait(self._background, timeout=STOP_GRACE_S)


    async def _run(self) -> None:
        while True:
            message, receipt = await self._queue.get()
            try:
                await self.route(message, receipt)
            except Exception:
                log.exception("device message on %s could not be routed", message.topic,
                              extra={"event": "route_failed", "topic": message.topic})
                self._messages.labels(type="any", outcome="route_failed").inc()
                receipt.fail("route_failed")

    async def route(self, message: BrokerMessage, receipt: Receipt) -> None:
        """Handle one device message; ``receipt`` is settled once it is kept (see the module docstring)."""
        # device timestamps are judged by the process clock, which the devices are given (time responses):
        # a scaled clock (development, tests) would otherwise look hours ahead of the broker's wall time
        message = msgspec.structs.replace(message, received_at=self._plane.clock.now())
        topic = parse_topic(message.topic)
        if isinstance(topic, TopicError):
            self._messages.labels(type="unknown", outcome="bad_topic").inc()
            receipt.settle()
            return
        if self._silenced and self._is_silenced(topic):
            self._messages.labels(type=topic.type, outcome="silenced").inc()
            receipt.settle()
            return
        decoded = decode_device_message(topic, message.payload, now=message.received_at)
        kind = topic.type
        if isinstance(decoded, DecodeError):
            self._messages.labels(type=kind, outcome=decoded.reason).inc()
            if kind == "telemetry":
                reason = DropReason.INVALID_TEXT if decoded.reason == "unstorable_text" else DropReason.MALFORMED
                self._telemetry.dropped.labels(reason=reason, source="mqtt").inc()
            receipt.settle()
            return
        body = decoded.message
        if isinstance(body, Telemetry):
            self._telemetry_sample(body, topic, message.received_at, receipt)
            return
        if isinstance(body, TimeRequest):
            await self._answer_time()
        elif isinstance(body, NodeHello):
            await self._hello(body, message.received_at)
        elif isinstance(body, CommandResponse):
            # stored concurrently, so one slow reply does not hold up the fleet's messages; the
            # lanes keep each command's replies in arrival order, the AckWindow the PUBACKs
            self._background_task(self._command_reply(body, topic, message.received_at, receipt))
            return
        else:
            uid = self._resolve(topic.node, topic.is_temp)
            if uid is None:
                self._messages.labels(type=kind, outcome="unknown_node").inc()
            elif isinstance(body, Lwt) and self._plane.client_connected(message.client_id):
                # the will of a session the device has already replaced: it is back, not gone
                self._messages.labels(type=kind, outcome="stale_lwt").inc()
            else:
                self._plane.registry.touch(uid, message.received_at)
                await self._deliver(uid, FromDevice(body, topic, message.received_at), kind)
                view = self._plane.registry.get(uid)
                if isinstance(body, Event | ErrorReport) and view is not None and view.zone_uid is not None:
                    self._zones.device_report(view.zone_uid, uid, topic.channel, body, message.received_at)
        receipt.settle()

    async def _command_reply(self, body: CommandResponse, topic: ParsedTopic, received_at: float,
                             receipt: Receipt) -> None:
        """Settle ``receipt`` once the reply is stored; fail it (no PUBACK: the node resends) if not."""
        uid = self._resolve(topic.node, topic.is_temp)
        if uid is None:
            self._messages.labels(type="command_response", outcome="unknown_node").inc()
            receipt.settle()
            return
        self._plane.registry.touch(uid, received_at)
        view = self._plane.registry.get(uid)
        if body.status == "ERROR" and body.error_code in CLOCK_ERRORS:
            await self._resync_clocks(uid, body)
        try:
            outcome = await route_reply(self._system, self._commands, self._replies, body, node_uid=uid,
                                        zone_uid=view.zone_uid if view else None,
                                        channel=topic.channel or "default")
        except Exception as exc:
            log.warning("command reply %s of %s not stored: %s", body.status, body.cmd_id, exc, extra={
                "event": "command_reply_not_stored", "cmd_id": body.cmd_id, "node_uid": uid})
            self._messages.labels(type="command_response", outcome="not_stored").inc()
            receipt.fail("reply_not_stored")
            return
        self._messages.labels(type="command_response", outcome=outcome).inc()
        receipt.settle()

    async def _resync_clocks(self, uid: str, body: CommandResponse) -> None:
        now = time.monotonic()
        if now - self._clock_resynced_at < CLOCK_RESYNC_S:
            return
        self._clock_resynced_at = now
        log.warning("node %s refused %s for its clock (%s): time broadcast", uid, body.cmd_id, body.error_code,
                    extra={"event": "clock_resync", "node_uid": uid, "cmd_id": body.cmd_id})
        self._messages.labels(type="command_response", outcome="clock_resync").inc()
        await self._publish_time()

    async def _publish_time(self) -> None:
        try:
            await self._plane.publish(TIME_RESPONSE, encode_time_response(self._plane.clock.now()))
        except Exception:  # the broker is stopping; nodes ask again on their next connect
            log.warning("time response not published", exc_info=True, extra={"event": "time_response_failed"})

    def _resolve(self, segment: str, is_temp: bool) -> str | None:
        registry = self._plane.registry
        node = registry.by_hardware_id(segment) if is_temp else registry.get(segment)
        return node.uid if node is not None else None

    async def _deliver(self, uid: str, message: FromDevice, kind: str) -> None:
        try:
            try:
                self._system.tell(node_path(uid), message)
            except NoSuchActor:
                # a registered node whose actor is missing (e.g. /nodes restarted): start it now
                await ensure_node_actor(self._system, self._plane, uid)
                self._system.tell(node_path(uid), message)
        except SupervisionError as exc:
            self._messages.labels(type=kind, outcome=exc.code).inc()
            return
        self._messages.labels(type=kind, outcome="routed").inc()

    def _telemetry_sample(self, body: Telemetry, topic: ParsedTopic, received_at: float, receipt: Receipt) -> None:
        """Hand the sample to the writer, whose commit settles ``receipt``; a drop settles it at once."""
        if topic.is_temp:
            self._telemetry.dropped.labels(reason=DropReason.TEMP_NAMESPACE, source="mqtt").inc()
            receipt.settle()
            return
        self._plane.registry.touch(topic.node, received_at)
        flags = {k: v for k, v in (("stable", body.stable), ("flow_active", body.flow_active),
                                   ("corrections_allowed", body.corrections_allowed), ("stub", body.stub or None),
                                   ("ts_replaced", body.ts_replaced or None)) if v is not None}
        result = validate_sample(self._plane.registry, node_uid=topic.node, zone_uid=topic.zone,
                                 channel=topic.channel or "default", metric_type=body.metric_type,
                                 value=body.value, ts=body.ts, source="mqtt", flags=flags, now=received_at)
        if isinstance(result, DropReason):
            self._telemetry.dropped.labels(reason=result, source="mqtt").inc()
            receipt.settle()
            return
        token = self._receipts.token(receipt)
        try:
            self._system.tell(WRITER_PATH, StoreSample(result, token))
        except SupervisionError as exc:
            self._receipts.fail((token,), exc.code)  # not acknowledged: the device sends it again
            self._messages.labels(type="telemetry", outcome=exc.code).inc()
            return
        self._telemetry.accepted.labels(source="mqtt").inc()
        self._zones.reading(result.zone_uid, node_uid=result.node_uid, channel=result.channel, value=result.value,
                            ts=result.ts, flags=result.flags, received_at=received_at)

    async def _answer_time(self) -> None:
        # the answer is a broadcast to every node: requests arriving together (a reconnect storm)
        # share one broadcast sent shortly after the first of them, instead of N broadcasts to N nodes
        self._messages.labels(type="time_request", outcome="answered").inc()
        if self._time_answer_pending:
            return
        self._time_answer_pending = True
        asyncio.get_running_loop().call_later(TIME_COALESCE_S, self._broadcast_time)

    def _broadcast_time(self) -> None:
        self._time_answer_pending = False
        self._background_task(self._publish_time())

    def _background_task(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _hello(self, hello: NodeHello, received_at: float) -> None:
        uid = node_uid_from_hello(hello)
        try:
            node, created = await nodes.register_from_hello(
                self._plane.db.pool, uid=uid, hardware_id=hello.hardware_id, node_type=hello.node_type,
                fw_version=hello.fw_version, hardware_revision=hello.hardware_revision)
        except asyncpg.UniqueViolationError:
            log.warning("node_hello from %s claims uid %s of another node; ignored", hello.hardware_id, uid,
                        extra={"event": "hello_uid_conflict", "node_uid": uid})
            self._messages.labels(type="node_hello", outcome="uid_conflict").inc()
            return
        if created:
            log.info("node %s registered (hardware id %s)", node.uid, node.hardware_id,
                     extra={"event": "node_registered", "node_uid": node.uid})
        if self._plane.registry.get(node.uid) is None:
            self._plane.registry.put(NodeView(uid=node.uid, hardware_id=node.hardware_id, zone_uid=node.zone_uid,
                                              gh_uid=None, validated=node.validated))
        self._plane.registry.touch(node.uid, received_at)
        await ensure_node_actor(self._system, self._plane, node.uid)
        self._messages.labels(type="node_hello", outcome="registered" if created else "known").inc()
