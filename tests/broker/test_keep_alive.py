"""Keep-alive: a silent client is dropped after 1.5x its keep-alive, a pinging one never.

amqtt 0.12.1 itself never drops a silent client (its read-timeout handler is a no-op); the
broker's watchdog does. MQTT keep-alive is whole seconds on the wire, so 2 s is the shortest
useful value here: the limit is 3.0 s.
"""

from __future__ import annotations

import asyncio
import time

from hydrovisor.broker.limits import BrokerLimits
from tests.broker.support import Inbox, RawClient, connect_packet, eventually, run, running

KEEP_ALIVE = 2
PINGREQ = b"\xc0\x00"


def test_a_silent_client_is_dropped_between_1_2x_and_1_6x_its_keep_alive() -> None:
    inbox = Inbox()

    async def scenario() -> None:
        async with running(dev_mode=True, on_message=inbox) as broker:
            silent, pinging = await RawClient.open(broker.port), await RawClient.open(broker.port)
            will = ("hydro/x/lwt", b"offline")
            await silent.send(connect_packet("silent", keep_alive=KEEP_ALIVE, will=will))
            await pinging.send(connect_packet("pinging", keep_alive=KEEP_ALIVE))
            assert await silent.connack() == 0
            assert await pinging.connack() == 0
            began = time.monotonic()

            async def ping() -> None:
                while True:
                    await asyncio.sleep(KEEP_ALIVE / 2)
                    await pinging.send(PINGREQ)

            pinger = asyncio.create_task(ping())
            await asyncio.sleep(1.2 * KEEP_ALIVE)
            assert broker.connected_clients() == ["pinging", "silent"]
            assert await silent.closed(within=0.4 * KEEP_ALIVE)  # i.e. by 1.6x
            dropped_after = time.monotonic() - began
            assert 1.45 * KEEP_ALIVE <= dropped_after <= 1.6 * KEEP_ALIVE, dropped_after
            await eventually(lambda: broker.connected_clients() == ["pinging"])
            assert (await inbox.wait_for("hydro/x/lwt")).payload == b"offline"  # abnormal: will sent
            await asyncio.sleep(0.3 * KEEP_ALIVE)
            assert broker.connected_clients() == ["pinging"]
            pinger.cancel()
            pinging.close()

    run(scenario)


def test_keep_alive_zero_means_no_limit() -> None:
    async def scenario() -> None:
        async with running(dev_mode=True, limits=BrokerLimits(keep_alive_factor=1.5)) as broker:
            raw = await RawClient.open(broker.port)
            await raw.send(connect_packet("forever", keep_alive=0))
            assert await raw.connack() == 0
            assert not await raw.closed(within=0.5)
            assert broker.connected_clients() == ["forever"]
            raw.close()

    run(scenario)
