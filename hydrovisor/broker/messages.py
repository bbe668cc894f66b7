"""What the broker hands to the in-process server side."""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from hydrovisor.broker.receipts import Receipt


class DeviceMessage(msgspec.Struct, frozen=True, kw_only=True):
    """A publish from a device that passed the topic ACL (or a device's last will).

    ``username`` is None for unrestricted development-mode clients; ``received_at`` is the
    broker's Unix time in seconds.
    """

    client_id: str
    username: str | None
    topic: str
    payload: bytes
    qos: int
    retain: bool
    received_at: float


# Called on the event loop for every DeviceMessage with its receipt: must not block (enqueue and
# return). The sink settles the receipt once the message is kept (stored, or handed to its actor, or
# dropped with a counted reason), or fails it when the device should send it again.
MessageSink = Callable[[DeviceMessage, Receipt], None]
