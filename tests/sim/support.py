"""Helpers for the simulator tests: an embedded broker that records device messages, fast node options."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from hydrovisor.broker.embedded import EmbeddedBroker
from hydrovisor.broker.messages import DeviceMessage
from hydrovisor.broker.receipts import Receipt
from hydrovisor.protocol import (
    TIME_REQUEST,
    TIME_RESPONSE,
    DecodeOk,
    TopicError,
    decode_device_message,
    encode_command,
    encode_time_response,
    parse_topic,
)
from hydrovisor.protocol import DeviceMessage as ProtocolMessage
from hydrovisor.sim import Faults, FieldConfig, NodeOptions, SimNode

logging.getLogger("amqtt.client").setLevel(logging.INFO)

SECRET = "sim-test-secret-0123456789abcdef"
HW_PH = "esp32-a1b2c3d4e5f6"
HW_IRRIG = "esp32-0badc0ffee01"

FAST = NodeOptions(
    heartbeat_interval_s=0.3, status_interval_s=5.0, telemetry_interval_s=0.15, time_request_retry_s=0.5,
    reconnect_delay_s=0.1, restart_delay_s=0.1, time_scale=0.01, sensor_stabilize_s=0.2, keep_alive_s=10,
)


def bound(node_uid: str = "nd-ph-a1b2c3d4e5f6", gh: str = "gh-1", zone: str = "zn-1") -> FieldConfig:
    """A field config for a node that boots already bound."""
    return FieldConfig(gh_uid=gh, zone_uid=zone, node_uid=node_uid, node_secret=SECRET)


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 20) -> None:
    """Run one async scenario on a fresh loop with a hard deadline."""
    asyncio.run(asyncio.wait_for(scenario(), timeout=timeout))


class Collector:
    """``on_message`` sink recording every device publish; optionally answers time requests like a server."""

    def __init__(self) -> None:
        self.messages: list[DeviceMessage] = []
        self.broker: EmbeddedBroker | None = None
        self.answer_time = False
        self._pending: set[asyncio.Task[None]] = set()

    def __call__(self, message: DeviceMessage, receipt: Receipt) -> None:
        self.messages.append(message)
        receipt.settle()
        if self.answer_time and message.topic == TIME_REQUEST and self.broker is not None:
            task = asyncio.get_running_loop().create_task(self.broker.publish(TIME_RESPONSE, time_response()))
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def on(self, topic: str) -> list[DeviceMessage]:
        """Messages published on exactly ``topic``."""
        return [m for m in self.messages if m.topic == topic]

    def bodies(self, topic: str) -> list[Any]:
        """Decoded JSON payloads on ``topic``."""
        return [json.loads(m.payload) for m in self.on(topic)]

    def responses(self, cmd_id: str) -> list[dict[str, Any]]:
        """Every command_response for ``cmd_id`` (any topic), in arrival order."""
        found = []
        for message in self.messages:
            if message.topic.endswith("/command_response"):
                body = json.loads(message.payload)
                if body.get("cmd_id") == cmd_id:
                    found.append(body)
        return found

    def statuses(self, cmd_id: str) -> list[str]:
        """The statuses answered for ``cmd_id``."""
        return [body["status"] for body in self.responses(cmd_id)]

    async def wait(self, condition: Callable[[], Any], within: float = 5.0) -> Any:
        """Poll until ``condition()`` is truthy; fail after ``within`` s."""
        deadline = time.monotonic() + within
        while True:
            value = condition()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not reached within {within} s")
            await asyncio.sleep(0.01)

    async def wait_topic(self, topic: str, count: int = 1, within: float = 5.0) -> list[DeviceMessage]:
        """Wait until ``count`` messages arrived on ``topic``; returns them."""
        await self.wait(lambda: len(self.on(topic)) >= count, within)
        return self.on(topic)

    async def wait_statuses(self, cmd_id: str, expected: list[str], within: float = 5.0) -> None:
        """Wait until the answers to ``cmd_id`` are exactly ``expected`` (extra answers fail)."""
        await self.wait(lambda: len(self.statuses(cmd_id)) >= len(expected), within)
        await asyncio.sleep(0.05)
        assert self.statuses(cmd_id) == expected, self.responses(cmd_id)


def time_response() -> bytes:
    """A time response for now."""
    return encode_time_response(time.time())


def command(cmd: str, cmd_id: str, params: dict[str, Any] | None = None, *, secret: str = SECRET,
            ts: int | None = None) -> bytes:
    """A signed command payload."""
    return encode_command(cmd, cmd_id, params or {}, int(time.time()) if ts is None else ts, secret)


def decoded(message: DeviceMessage) -> ProtocolMessage:
    """What the server-side decoder makes of a device message (asserting it decodes)."""
    parsed = parse_topic(message.topic)
    assert not isinstance(parsed, TopicError), parsed
    result = decode_device_message(parsed, message.payload, now=time.time())
    assert isinstance(result, DecodeOk), result
    return result.message


@asynccontextmanager
async def broker(*, answer_time: bool = False) -> AsyncIterator[tuple[EmbeddedBroker, Collector]]:
    """A development-mode embedded broker on an ephemeral port with a recording ``on_message``."""
    collector = Collector()
    collector.answer_time = answer_time
    embedded = EmbeddedBroker("127.0.0.1", 0, dev_mode=True, on_message=collector)
    collector.broker = embedded
    await embedded.start()
    try:
        yield embedded, collector
    finally:
        await embedded.stop()


def url(embedded: EmbeddedBroker) -> str:
    """The broker URL nodes connect to."""
    return f"mqtt://127.0.0.1:{embedded.port}"


@asynccontextmanager
async def started(node: SimNode, *, synced_by: EmbeddedBroker | None = None) -> AsyncIterator[SimNode]:
    """Start ``node``, wait for its session (and sync its clock through ``synced_by``), stop it afterwards."""
    await node.start()
    try:
        await node.wait_connected(5)
        if synced_by is not None:
            while not node.time_synced:  # the subscription is up once connected; retry in case of a race
                await synced_by.publish(TIME_RESPONSE, time_response())
                await asyncio.sleep(0.02)
        yield node
    finally:
        await node.stop()


@asynccontextmanager
async def one_node(
    hardware_id: str = HW_PH, node_type: str = "ph", *, field_config: FieldConfig | None = None,
    options: NodeOptions = FAST, faults: Faults | None = None, sync: bool = False, answer_time: bool = False,
) -> AsyncIterator[tuple[EmbeddedBroker, Collector, SimNode]]:
    """A broker plus one started node (clock synced first when ``sync``)."""
    async with broker(answer_time=answer_time) as (embedded, inbox):
        node = SimNode(url(embedded), hardware_id, node_type, field_config=field_config, options=options,
                       faults=faults)
        async with started(node, synced_by=embedded if sync else None):
            yield embedded, inbox, node
