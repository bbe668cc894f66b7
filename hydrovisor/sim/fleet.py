"""``SimFleet``: many ``SimNode``s on one event loop, against one broker, for tests, benchmarks and the CLI.

Nodes connect concurrently through a shared semaphore (``start_concurrency`` CONNECTs in flight at most,
reconnect storms included), so 100-1000 nodes come up in one process without flooding the broker's accept
queue.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hydrovisor.sim.faults import Faults
from hydrovisor.sim.node import SimNode
from hydrovisor.sim.options import FieldConfig, NodeOptions
from hydrovisor.sim.profiles import SIM_NODE_TYPES

__all__ = ["FleetStats", "SimFleet", "hardware_id_for"]


def hardware_id_for(seed: int, index: int) -> str:
    """A stable ``esp32-<12 hex>`` id for node ``index`` of a fleet built with ``seed``."""
    digest = hashlib.sha256(f"hydrovisor-sim:{seed}:{index}".encode()).hexdigest()
    return f"esp32-{digest[:12]}"


@dataclass(frozen=True)
class FleetStats:
    """A snapshot of the fleet's counters (sums over nodes, plus telemetry per node)."""

    nodes: int
    connected: int
    synced: int
    bound: int
    connects: int
    connect_failures: int
    telemetry_sent: int
    heartbeats_sent: int
    commands_received: int
    commands_answered: int
    replies_sent: int
    offline_windows: int
    telemetry_by_node: dict[str, int]


class SimFleet:
    """A set of nodes started and stopped together. Build one with ``create`` or from ready nodes."""

    def __init__(self, nodes: Sequence[SimNode], *, start_concurrency: int = 64) -> None:
        if start_concurrency < 1:
            raise ValueError("start_concurrency must be at least 1")
        ids = [node.hardware_id for node in nodes]
        if len(set(ids)) != len(ids):
            raise ValueError("hardware ids in a fleet must be unique (they are the MQTT client ids)")
        self._nodes = tuple(nodes)
        self._by_id = {node.hardware_id: node for node in self._nodes}
        gate = asyncio.Semaphore(start_concurrency)
        for node in self._nodes:
            node.connect_gate = gate

    @classmethod
    def create(
        cls,
        broker_url: str,
        count: int,
        *,
        types: Sequence[str] = SIM_NODE_TYPES,
        username: str | None = None,
        password: str | None = None,
        options: NodeOptions | None = None,
        faults: Faults | None = None,
        seed: int = 0,
        start_concurrency: int = 64,
        field_config: Callable[[int, str], FieldConfig | None] | None = None,
    ) -> SimFleet:
        """``count`` nodes, types assigned round-robin from ``types``, ids from ``hardware_id_for(seed, i)``.

        ``username`` may contain ``{hardware_id}`` (per-device credentials named after the device).
        ``field_config(index, hardware_id)`` may return a config for nodes that start already bound.
        """
        if count < 0:
            raise ValueError("count must be >= 0")
        if not types:
            raise ValueError("types must not be empty")
        nodes = []
        for index in range(count):
            hardware_id = hardware_id_for(seed, index)
            user = username.replace("{hardware_id}", hardware_id) if username is not None else None
            nodes.append(SimNode(
                broker_url, hardware_id, types[index % len(types)], username=user, password=password,
                field_config=field_config(index, hardware_id) if field_config is not None else None,
                options=options, faults=faults, seed=seed * 1_000_003 + index,
            ))
        return cls(nodes, start_concurrency=start_concurrency)

    @property
    def nodes(self) -> tuple[SimNode, ...]:
        """All nodes, in creation order."""
        return self._nodes

    def node(self, hardware_id: str) -> SimNode:
        """The node with this hardware id; raises ``KeyError``."""
        return self._by_id[hardware_id]

    def __len__(self) -> int:
        return len(self._nodes)

    async def start(self, *, wait: bool = True, within: float = 60.0) -> None:
        """Start every node; with ``wait``, return once all are connected (``TimeoutError`` after ``within`` s)."""
        for node in self._nodes:
            await node.start()
        if wait:
            await self.wait_connected(within)

    async def wait_connected(self, within: float = 60.0) -> None:
        """Wait until every node has a session up; raises ``TimeoutError`` after ``within`` s."""
        await asyncio.wait_for(asyncio.gather(*(node.wait_connected(within) for node in self._nodes)), within)

    async def wait_synced(self, within: float = 60.0) -> None:
        """Wait until every node's clock is synced; raises ``TimeoutError`` after ``within`` s."""
        await asyncio.wait_for(asyncio.gather(*(node.wait_synced(within) for node in self._nodes)), within)

    async def stop(self) -> None:
        """Stop every node (clean DISCONNECTs, no LWTs). Idempotent."""
        await asyncio.gather(*(node.stop() for node in self._nodes))

    def stats(self) -> FleetStats:
        """Counters summed over the fleet."""
        nodes = self._nodes
        return FleetStats(
            nodes=len(nodes),
            connected=sum(node.is_connected for node in nodes),
            synced=sum(node.time_synced for node in nodes),
            bound=sum(node.is_bound for node in nodes),
            connects=sum(node.stats.connects for node in nodes),
            connect_failures=sum(node.stats.connect_failures for node in nodes),
            telemetry_sent=sum(node.stats.telemetry_sent for node in nodes),
            heartbeats_sent=sum(node.stats.heartbeats_sent for node in nodes),
            commands_received=sum(node.stats.commands_received for node in nodes),
            commands_answered=sum(node.stats.commands_answered for node in nodes),
            replies_sent=sum(node.stats.replies_sent for node in nodes),
            offline_windows=sum(node.stats.offline_windows for node in nodes),
            telemetry_by_node={node.hardware_id: node.stats.telemetry_sent for node in nodes},
        )
