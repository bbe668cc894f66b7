"""What command actors need: storage, the node view, the broker seam, waiters; and the publish step."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter

from hydrovisor.broker.transport import Transport
from hydrovisor.commands.waiters import CommandWaiters, StatusNews
from hydrovisor.devices.registry import NodeRegistry
from hydrovisor.protocol import CommandStatus
from hydrovisor.runtime.bridge import Outcome
from hydrovisor.store.database import Database
from hydrovisor.store.repos import commands
from hydrovisor.store.repos.commands import CommandRecord, Report
from hydrovisor.zones.clock import Clock, SystemClock

PUBLISH_ATTEMPTS = 3
PUBLISH_BACKOFF_S = (0.5, 1.0)
DEFAULT_TIMEOUT_S = 30.0
DURATION_MARGIN_S = 30.0


class NodeNotConnected(Exception):
    """The node has no live subscription to its command topic: a QoS 1 publish would be dropped."""

    code = "node_not_connected"


@dataclass(frozen=True)
class CommandPlane:
    """Dependencies of command actors, built once by the app."""

    db: Database
    registry: NodeRegistry
    transport: Transport
    waiters: CommandWaiters
    publishes: Counter
    clock: Clock = field(default_factory=SystemClock)  # the devices' wall time: commands are signed with it
    _stored_hooks: list[Callable[[CommandRecord], None]] = field(default_factory=list, init=False, repr=False)

    def on_stored(self, hook: Callable[[CommandRecord], None]) -> None:
        """Call ``hook(row)`` on the loop after every status this plane stores (the reply path uses
        it to learn when a command's SENT is stored, and when it is terminal)."""
        self._stored_hooks.append(hook)

    def stored(self, row: CommandRecord) -> None:
        """Make ``row``, just stored, known (on the loop): to the hooks, then to the waiters."""
        for hook in self._stored_hooks:
            hook(row)
        self.waiters.deliver(StatusNews.stored(row))

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish a signed command; refuses (``NodeNotConnected``) when no session would get it.

        The embedded broker silently drops a QoS 1 message for a clean-session device that is not
        connected, so "published" would not mean "delivered": a command for an absent node fails
        fast with a clear code instead of pretending (the caller may resend the same cmd_id).
        """
        if self.transport.subscriber_count(topic) == 0:
            self.publishes.labels(outcome="node_not_connected").inc()
            raise NodeNotConnected(f"no live session subscribed to {topic}")
        await self.transport.publish(topic, payload, qos=1)
        self.publishes.labels(outcome="published").inc()

    async def publish_and_store_sent(self, cmd_id: str, topic: str, payload: bytes) -> Outcome:
        """:meth:`publish`, then at once (no hop back to the actor first) :meth:`store` SENT.

        Raises what ``publish`` raises: nothing was published. Once published, returns the SENT
        write's outcome (its rows, or its error: the command went out even if SENT is not stored).
        """
        await self.publish(topic, payload)
        try:
            return Outcome(value=await self.store(cmd_id, [Report(CommandStatus.SENT, "server")]))
        except Exception as exc:
            return Outcome(error=exc)

    async def store(self, cmd_id: str, reports: Sequence[Report]) -> list[CommandRecord | None]:
        """``commands.apply_reports`` (one transaction), then :meth:`stored` for every applied report,
        on the loop: a waiter wakes right after the commit, not after a hop through the writer's thread."""
        rows = await commands.apply_reports(self.db.pool, cmd_id, reports)
        for row in rows:
            if row is not None:
                self.stored(row)
        return rows


def default_timeout(params: dict[str, object]) -> float:
    """DOMAIN §1: the command's ``duration_ms`` + 30 s margin, else 30 s."""
    duration = params.get("duration_ms")
    if isinstance(duration, int | float) and not isinstance(duration, bool) and duration > 0:
        return float(duration) / 1000.0 + DURATION_MARGIN_S
    return DEFAULT_TIMEOUT_S


def publish_counter(registry: CollectorRegistry) -> Counter:
    """``hydrovisor_command_publishes_total{outcome}``: every signed command that went out (or not)."""
    return Counter("hydrovisor_command_publishes_total", "Command publish attempts by outcome.", ["outcome"],
                   registry=registry)
