"""The seam between the device plane and an MQTT broker.

``EmbeddedBroker`` implements it in-process. A client of an external clustered broker (EMQX,
VerneMQ, Mosquitto; ARCHITECTURE §5) implements the same protocol: publish with the broker's
acknowledgement, tell whether a device session is live, and feed every device message (after
the broker's ACL) to the sink.
"""

from __future__ import annotations

from typing import Protocol

from hydrovisor.broker.messages import MessageSink


class Transport(Protocol):
    """What the device plane needs from a broker. Every method is called on the event loop."""

    on_message: MessageSink | None

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> None:
        """Publish to devices; returns once the broker accepted the message."""

    def subscriber_count(self, topic: str) -> int:
        """How many live device sessions would receive ``topic``."""

    def connected_clients(self) -> list[str]:
        """Client ids of the live device sessions."""
