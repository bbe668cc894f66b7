"""What the broker hands to the in-process server side."""

from __future__ import annotations

from collections.abc import Callable

import msgspec


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


# Called on the event loop for every DeviceMessage: must not block (enqueue and return).
MessageSink = Callable[[DeviceMessage], None]
