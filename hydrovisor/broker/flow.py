"""Acknowledgements after the fact, and backpressure instead of loss.

A device's QoS 0/1 PUBLISH opens a :class:`Receipt` in its connection's :class:`AckWindow`. The
PUBACKs go out in the order the PUBLISH packets came (MQTT §4.6), each once its receipt and every
one before it are settled, several in one TCP write. A failed QoS 1 receipt closes the connection:
the device sends the unacknowledged messages again when it reconnects.

Memory is bounded by not reading: before the framing reader takes the next packet off a socket it
waits until that connection has fewer than ``per_connection`` unsettled messages and the whole
broker has fewer than ``total`` messages and ``total_bytes`` payload bytes unsettled
(:class:`InflightGate`). So at most ``total_bytes`` of payload (plus one packet per connection,
each at most the broker's packet size limit) wait for storage, whatever the devices send; a device
that sends faster is slowed by TCP flow control, never dropped.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from hydrovisor.broker.receipts import Receipt

_PUBACK = b"\x40\x02"


class FlowMetrics:
    """Prometheus instruments of the inbound flow."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.unsettled = Gauge("hydrovisor_mqtt_unsettled_messages",
                               "Device messages taken in and not yet stored/handed over (not acknowledged).",
                               registry=registry)
        self.pauses = Counter("hydrovisor_mqtt_backpressure_pauses_total",
                              "Times the broker stopped reading a device's socket until its messages were stored.",
                              ["scope"], registry=registry)
        self.failed = Counter("hydrovisor_mqtt_receipts_failed_total",
                              "QoS 1 messages that could not be kept: the connection was closed so the device "
                              "sends them again.", ["reason"], registry=registry)


class InflightGate:
    """Broker-wide bound on unsettled device messages (count and payload bytes). Loop only."""

    def __init__(self, total: int, total_bytes: int, metrics: FlowMetrics) -> None:
        self._total = total
        self._total_bytes = total_bytes
        self.metrics = metrics
        self.count = 0
        self.bytes = 0
        self._room = asyncio.Event()
        self._room.set()

    def has_room(self) -> bool:
        """Below both limits."""
        return self._room.is_set()

    def take(self, size: int) -> None:
        """One more unsettled message of ``size`` payload bytes."""
        self.count += 1
        self.bytes += size
        self._update()

    def give(self, size: int) -> None:
        """A message was settled or failed."""
        self.count -= 1
        self.bytes -= size
        self._update()

    async def wait(self) -> None:
        """Until below both limits."""
        if not self._room.is_set():
            self.metrics.pauses.labels(scope="broker").inc()
            await self._room.wait()

    def _update(self) -> None:
        self.metrics.unsettled.set(self.count)
        if self.count < self._total and self.bytes < self._total_bytes:
            self._room.set()
        else:
            self._room.clear()


class AckWindow:
    """The unacknowledged messages of one connection, in arrival order. Loop only."""

    def __init__(
        self, write: Callable[[bytes], None], drop: Callable[[str], None], gate: InflightGate, per_connection: int,
    ) -> None:
        self._write = write
        self._drop = drop
        self._gate = gate
        self._metrics = gate.metrics
        self._limit = per_connection
        self._queue: collections.deque[tuple[int, Receipt]] = collections.deque()  # packet id 0: QoS 0
        self._unsettled = 0
        self._room = asyncio.Event()
        self._room.set()
        self.closed = False

    @property
    def unsettled(self) -> int:
        """Messages of this connection not yet settled or failed."""
        return self._unsettled

    def open(self, packet_id: int, size: int) -> Receipt:
        """A PUBLISH arrived (``packet_id`` 0 for QoS 0): its receipt, to settle once it is kept."""
        receipt = Receipt(lambda done: self._done(done, size))
        self._queue.append((packet_id, receipt))
        self._unsettled += 1
        self._gate.take(size)
        if self._unsettled >= self._limit:
            self._room.clear()
        return receipt

    async def wait_for_room(self) -> bool:
        """Until this connection and the broker may take another message; True if it had to wait."""
        waited = False
        while True:
            if self._unsettled >= self._limit:
                if not waited:
                    self._metrics.pauses.labels(scope="connection").inc()
                waited = True
                await self._room.wait()
            elif not self._gate.has_room():
                waited = True
                await self._gate.wait()
            else:
                return waited

    def close(self) -> None:
        """The connection is gone: what settles later is not acknowledged (the device will resend)."""
        self.closed = True

    def _done(self, receipt: Receipt, size: int) -> None:
        self._unsettled -= 1
        self._gate.give(size)
        if self._unsettled < self._limit:
            self._room.set()
        if receipt.failure is not None and not self.closed:
            self._metrics.failed.labels(reason=receipt.failure).inc()
            self.closed = True
            self._drop(f"message_not_kept:{receipt.failure}")
        acks = bytearray()
        queue = self._queue
        while queue and queue[0][1].done:
            packet_id, _ = queue.popleft()
            if packet_id:
                acks += _PUBACK + packet_id.to_bytes(2, "big")
        if acks and not self.closed:
            self._write(bytes(acks))
