"""The filter index behind broadcasts and ``subscriber_count`` agrees with amqtt's own matcher,
and stays in step with amqtt's subscription table through a session's whole life."""

from __future__ import annotations

from amqtt.broker import Broker
from amqtt.mqtt.constants import QOS_1
from hypothesis import given
from hypothesis import strategies as st

from hydrovisor.broker.embedded import EmbeddedBroker
from hydrovisor.broker.topic_index import FilterIndex
from tests.broker.support import connect, eventually, no_message, run, running

_level = st.sampled_from(["a", "b", "hydro", "", "$s"])
_filter = st.builds(lambda levels, end: "/".join([*levels, end] if end else levels),
                    st.lists(st.one_of(_level, st.just("+")), min_size=0, max_size=4),
                    st.sampled_from(["", "#", "+", "a"])).filter(bool)
_topic = st.lists(_level, min_size=1, max_size=5).map("/".join)


class _Quiet:
    """Stands in for ``self`` in amqtt's ``Broker._matches`` (it only logs through it)."""

    class logger:
        @staticmethod
        def debug(*_: object) -> None:
            pass


def _amqtt_matches(topic: str, topic_filter: str) -> bool:
    return bool(Broker._matches(_Quiet(), topic, topic_filter))


@given(filters=st.lists(_filter, max_size=12), gone=st.lists(_filter, max_size=6), topics=st.lists(_topic, max_size=6))
def test_the_index_matches_what_amqtt_matches(filters: list[str], gone: list[str], topics: list[str]) -> None:
    index = FilterIndex()
    for topic_filter in filters:
        index.add(topic_filter)
    for topic_filter in gone:
        index.discard(topic_filter)
    kept = set(filters) - set(gone)
    for topic in topics:
        found = index.matching(topic)
        assert len(found) == len(set(found))
        assert set(found) == {f for f in kept if _amqtt_matches(topic, f)}


def _assert_in_step(broker: EmbeddedBroker, topics: list[str]) -> None:
    """What a broadcast visits through the index is what amqtt's walk over the table would visit."""
    amqtt = broker._running()
    table = amqtt.subscriptions
    for topic in topics:
        walked = sorted(f for f in table if _amqtt_matches(topic, f))
        assert sorted(table.index.matching(topic)) == walked, topic


COMMAND = "hydro/gh-1/zn-1/nd-a/pump_main/command"
PROBES = [COMMAND, "hydro/gh-1/zn-1/nd-a/config", "hydro/time/response", "hydro/gh-1/zn-1/nd-b/valve_1/command"]


def test_the_index_follows_subscribe_unsubscribe_disconnect_and_takeover() -> None:
    async def scenario() -> None:
        async with running(dev_mode=True) as broker:
            a = await connect(broker.port, client_id="dev-a")
            await a.subscribe([("hydro/gh-1/zn-1/nd-a/+/command", QOS_1), ("hydro/time/response", QOS_1),
                               ("hydro/#", QOS_1)])
            b = await connect(broker.port, client_id="dev-b")
            await b.subscribe([(COMMAND, QOS_1), ("hydro/time/response", QOS_1)])
            await eventually(lambda: broker.subscriber_count(COMMAND) == 2)
            _assert_in_step(broker, PROBES)
            assert broker.subscriber_count("hydro/gh-1/zn-1/nd-b/valve_1/command") == 1  # dev-a's "hydro/#"

            await a.unsubscribe(["hydro/#"])
            await eventually(lambda: broker.subscriber_count("hydro/gh-1/zn-1/nd-b/valve_1/command") == 0)
            _assert_in_step(broker, PROBES)

            await b.disconnect()  # a clean session's subscriptions go with it
            await eventually(lambda: broker.subscriber_count(COMMAND) == 1)
            await eventually(lambda: COMMAND not in broker._running().subscriptions)
            _assert_in_step(broker, PROBES)

            taker = await connect(broker.port, client_id="dev-a")  # takes dev-a over: the old filters are gone
            await eventually(lambda: broker.subscriber_count(COMMAND) == 0)
            _assert_in_step(broker, PROBES)
            await taker.subscribe([("hydro/gh-1/zn-1/+/+/command", QOS_1)])
            await eventually(lambda: broker.subscriber_count(COMMAND) == 1)
            _assert_in_step(broker, PROBES)

            await broker.publish(COMMAND, b"wildcard")  # delivered through the index's "+" levels
            message = await taker.deliver_message(timeout_duration=3)
            assert message is not None and bytes(message.data) == b"wildcard"
            await broker.publish("hydro/time/response", b"nobody")
            await no_message(taker, within=0.2)
            await taker.disconnect()

    run(scenario)
