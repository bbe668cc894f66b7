"""A fleet of simulated nodes on one event loop against one broker."""

from __future__ import annotations

import asyncio
from collections import Counter

from hydrovisor.protocol import TIME_REQUEST
from hydrovisor.sim import SIM_NODE_TYPES, SimFleet, hardware_id_for
from tests.sim.support import FAST, broker, run, url


def test_fifty_mixed_nodes_connect_sync_and_stream() -> None:
    async def scenario() -> None:
        async with broker(answer_time=True) as (embedded, inbox):
            fleet = SimFleet.create(url(embedded), 50, options=FAST, seed=7, start_concurrency=16)
            # 50 round-robin over 6 types: the first two types get one more
            assert Counter(node.node_type for node in fleet.nodes) == dict.fromkeys(SIM_NODE_TYPES, 8) | {
                "ph": 9, "ec": 9}
            await fleet.start(within=15)
            try:
                assert sorted(embedded.connected_clients()) == sorted(n.hardware_id for n in fleet.nodes)
                await fleet.wait_synced(10)

                def every_node_streams() -> bool:
                    senders = {m.client_id for m in inbox.messages if m.topic.endswith("/telemetry")}
                    # the broker may deliver before the publisher has its PUBACK (and counts the sample)
                    acked = all(count > 0 for count in fleet.stats().telemetry_by_node.values())
                    return len(senders) == 50 and acked
                await inbox.wait(every_node_streams, within=10)
                stats = fleet.stats()
                assert (stats.nodes, stats.connected, stats.synced) == (50, 50, 50)
                assert stats.telemetry_sent >= 50 and stats.connect_failures == 0
                assert len({m.client_id for m in inbox.on(TIME_REQUEST)}) == 50
            finally:
                await fleet.stop()
            await asyncio.sleep(0.1)
            assert embedded.session_count == 0
            assert not [m for m in inbox.messages if m.topic.endswith("/lwt")]  # clean disconnects

    run(scenario, timeout=40)


def test_fleet_ids_are_stable_and_unique() -> None:
    ids = [hardware_id_for(3, i) for i in range(1000)]
    assert len(set(ids)) == 1000
    assert ids[0] == hardware_id_for(3, 0) != hardware_id_for(4, 0)
    assert all(len(i) == 18 and i.startswith("esp32-") for i in ids)
