"""The ingest path against the real database, fuzzed (issue 9 item 6: no poison pill).

Random mixes of valid and invalid samples go through ``validate_sample`` and the real
``TelemetryStore.write`` (real asyncpg pool, real migrations, embedded PostgreSQL): every valid sample
is stored exactly once (samples with the same device ts and value once in all), every invalid one is
dropped at validation with its reason, nothing valid is held back, every receipt is settled. Samples
that bypass validation and that PostgreSQL refuses are split out of their batch and quarantined
(``telemetry_quarantine``), counted, and the rest of the batch is stored.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from hydrovisor.actors.telemetry_writer import StoreSample
from hydrovisor.broker.receipts import Receipt, ReceiptBook
from hydrovisor.devices.ingest import MAX_NAME_CHARS, DropReason, TelemetryCounters, validate_sample
from hydrovisor.devices.registry import NodeRegistry, NodeView
from hydrovisor.devices.telemetry_store import TelemetryStore
from hydrovisor.store.migrations import apply_migrations
from hydrovisor.store.repos import telemetry
from hydrovisor.store.repos.telemetry import Sample

NOW = 1_710_001_300.0
ZONE = "zn-1"
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


class Db:
    """A migrated database on a loop of its own, reused by every example of a test."""

    def __init__(self, dsn: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool: asyncpg.Pool = self.run(self._open(dsn))
        self.nodes = 0

    async def _open(self, dsn: str) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
        await apply_migrations(pool)
        return pool

    def run(self, coro: Awaitable[Any]) -> Any:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.pool.close())
        self.loop.close()

    def fresh_node(self, registry: NodeRegistry) -> str:
        """A node of its own for one example, so that examples do not see each other's rows."""
        self.nodes += 1
        uid = f"nd-fuzz-{self.nodes}"
        registry.put(NodeView(uid=uid, hardware_id=f"esp32-{self.nodes:012x}", zone_uid=ZONE, gh_uid="gh-1",
                              validated=True))
        return uid


@pytest.fixture
def db(pg_dsn: str) -> Iterator[Db]:
    database = Db(pg_dsn)
    yield database
    database.close()


class Harness:
    """A TelemetryStore with its receipts and counters."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.book = ReceiptBook()
        self.prometheus = CollectorRegistry()
        self.counters = TelemetryCounters(self.prometheus)
        self.store = TelemetryStore(lambda: db.pool, self.book, self.counters)
        self.receipts: list[Receipt] = []

    def item(self, sample: Sample) -> StoreSample:
        receipt = Receipt()
        self.receipts.append(receipt)
        return StoreSample(sample, self.book.token(receipt))

    def dropped(self, reason: str, source: str = "http") -> float:
        value = self.prometheus.get_sample_value("hydrovisor_telemetry_dropped_total",
                                                 {"reason": reason, "source": source})
        return value or 0.0

    def assert_all_settled(self) -> None:
        assert len(self.book) == 0
        assert all(r.settled and r.failure is None for r in self.receipts)


async def stored_rows(pool: asyncpg.Pool, node_uid: str) -> Counter[tuple[Any, ...]]:
    rows = await pool.fetch("SELECT channel, metric, metric_original, value, ts, source FROM telemetry_samples "
                            "WHERE node_uid = $1", node_uid)
    return Counter((r["channel"], r["metric"], r["metric_original"], r["value"], r["ts"], r["source"]) for r in rows)


def row_of(sample: Sample) -> tuple[Any, ...]:
    return (sample.channel, sample.metric, sample.metric_original, sample.value,
            dt.datetime.fromtimestamp(sample.ts, tz=dt.UTC), sample.source)


def expected_rows(samples: list[Sample]) -> Counter[tuple[Any, ...]]:
    """What ``write_batch`` keeps: a repeat of a device-timestamped sample (same zone, node, channel,
    metric, ts and value) only once; samples with a replaced ts every time."""
    seen: set[tuple[Any, ...]] = set()
    rows: Counter[tuple[Any, ...]] = Counter()
    for s in samples:
        if not (s.flags or {}).get("ts_replaced"):
            key = (s.channel, s.metric, dt.datetime.fromtimestamp(s.ts, tz=dt.UTC), s.value)
            if key in seen:
                continue
            seen.add(key)
        rows[row_of(s)] += 1
    return rows


# --- strategies -------------------------------------------------------------------------------------

_CONTROL = [chr(c) for c in (*range(0, 32), 127)]
names = st.one_of(
    st.sampled_from(["ph_sensor", "PH", "ec", " temperature ", "TDS", "LIGHT", "pump_state", "", "  "]),
    st.text(max_size=30),
    st.text(alphabet=st.sampled_from(["\x00", "a", "_", "😀", "é", "\u200b", " "]), max_size=12),
    st.sampled_from(_CONTROL),  # lone control characters
    st.sampled_from(["\x00", "ph\x00", "\x00PH", "🌱", "😀" * 40, "x" * MAX_NAME_CHARS, "x" * (MAX_NAME_CHARS + 1),
                     "y" * 10_000, "\\u0000", "Ω" * 128]),
)
values = st.one_of(
    st.floats(),  # nan and ±inf included
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=10**308, max_value=10**320),  # JSON integers beyond float range
    st.booleans(),
    st.sampled_from([None, "5.5", [], {}]),
)
timestamps = st.one_of(
    st.none(),
    st.floats(min_value=1e9, max_value=NOW + 200),
    st.integers(min_value=int(1e12), max_value=int(NOW * 1000)),  # milliseconds
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=10**308, max_value=10**320),
    st.sampled_from([0, -1, 1e10, NOW + 301, 1e300, 2**63]),
)
raw_samples = st.tuples(names, names, values, timestamps)


def oracle(channel: str, metric_type: str, value: object, ts: object) -> DropReason | None:
    """What validation should decide, written independently of ``validate_sample``."""
    if isinstance(value, bool):
        pass
    elif not isinstance(value, int | float):
        return DropReason.INVALID_VALUE
    else:
        try:
            if not math.isfinite(float(value)):
                return DropReason.INVALID_VALUE
        except OverflowError:
            return DropReason.INVALID_VALUE
    for name in (channel, metric_type):
        if "\x00" in name or len(name) > MAX_NAME_CHARS:
            return DropReason.INVALID_TEXT
    if not metric_type.strip():
        return DropReason.UNKNOWN_METRIC
    return None


@FUZZ
@given(batch=st.lists(raw_samples, max_size=40), batch_size=st.integers(1, 16),
       source=st.sampled_from(["mqtt", "http"]))
def test_valid_samples_stored_exactly_once_invalid_dropped(
    db: Db, batch: list[tuple[str, str, object, object]], batch_size: int, source: str,
) -> None:
    registry = NodeRegistry()
    node = db.fresh_node(registry)
    harness = Harness(db)
    accepted: list[Sample] = []
    drops: Counter[str] = Counter()
    for channel, metric_type, value, ts in batch:
        result = validate_sample(registry, node_uid=node, zone_uid=ZONE, channel=channel, metric_type=metric_type,
                                 value=value, ts=ts, source=source, now=NOW)  # type: ignore[arg-type]
        expected = oracle(channel, metric_type, value, ts)
        if isinstance(result, DropReason):
            assert result == expected, (channel[:40], metric_type[:40], value, ts)
            drops[result] += 1
            continue
        assert expected is None, (channel[:40], metric_type[:40], value, ts, result)
        assert "\x00" not in result.channel + result.metric + (result.metric_original or "")
        assert math.isfinite(result.value) and 1e9 <= result.ts <= NOW + 300
        accepted.append(result)
    # the writer's batches: any size, in arrival order
    results = [db.run(harness.store.write([harness.item(s) for s in accepted[i:i + batch_size]]))
               for i in range(0, len(accepted), batch_size)]
    want = expected_rows(accepted)
    assert db.run(stored_rows(db.pool, node)) == want  # nothing lost, nothing twice, nothing held back
    assert sum(r.quarantined for r in results) == 0  # validation kept out everything PostgreSQL refuses
    assert sum(r.stored for r in results) == want.total()
    assert sum(r.duplicates for r in results) == len(accepted) - want.total()
    assert harness.dropped("duplicate", source) == len(accepted) - want.total()
    harness.assert_all_settled()


# --- samples that bypass validation -----------------------------------------------------------------


def _incompressible(chars: int) -> str:
    return "".join(chr(0x4E00 + (i * 7919) % 20_000) for i in range(chars))


POISON: dict[str, Callable[[Sample], Sample]] = {
    "nul_channel": lambda s: _replace(s, channel="bad\x00channel"),
    "nul_metric_original": lambda s: _replace(s, metric="OTHER", metric_original="PH\x00"),
    "nul_in_flags": lambda s: _replace(s, flags={"note": "a\x00b"}),
    "nan_in_flags": lambda s: _replace(s, flags={"x": math.nan}),
    "lone_surrogate": lambda s: _replace(s, channel="bad\ud800"),
    "ts_nan": lambda s: _replace(s, ts=math.nan),
    "ts_far_future": lambda s: _replace(s, ts=1e300),
    "bad_source": lambda s: _replace(s, source="carrier-pigeon"),
    "huge_channel": lambda s: _replace(s, channel=_incompressible(4000)),  # a btree row over its limit
}


def _replace(sample: Sample, **changes: Any) -> Sample:
    fields = {name: getattr(sample, name) for name in Sample.__struct_fields__}
    fields.update(changes)
    return Sample(**fields)


def _good(node: str, i: int, source: str = "mqtt") -> Sample:
    return Sample(zone_uid=ZONE, node_uid=node, channel="ph_sensor", metric="PH", value=5.0 + i / 100,
                  ts=NOW - 1000 + i, source=source)


def test_a_batch_postgresql_refuses_is_split_and_the_culprit_quarantined(db: Db) -> None:
    registry = NodeRegistry()
    node = db.fresh_node(registry)
    harness = Harness(db)
    good = [_good(node, i) for i in range(7)]
    bad = _replace(_good(node, 99), channel="bad\x00channel")
    batch = [harness.item(s) for s in (*good[:3], bad, *good[3:])]
    result = db.run(harness.store.write(batch))
    assert (result.stored, result.quarantined, result.duplicates) == (7, 1, 0)
    assert db.run(stored_rows(db.pool, node)) == expected_rows(good)
    kept = db.run(telemetry.quarantined(db.pool, 10))
    assert len(kept) == 1
    assert kept[0].sample["channel"] == "bad\x00channel"
    assert kept[0].sample["node_uid"] == node
    assert "0x00" in kept[0].error or "\\0" in kept[0].error or "UTF8" in kept[0].error, kept[0].error
    assert kept[0].quarantined_at > 0
    assert harness.dropped("quarantined", "mqtt") == 1
    harness.assert_all_settled()
    # the same batch again (a redelivery): the good ones are not stored twice, the bad one is kept again
    again = db.run(harness.store.write([harness.item(s) for s in (*good, bad)]))
    assert (again.stored, again.duplicates, again.quarantined) == (0, 7, 1)
    harness.assert_all_settled()


@FUZZ
@given(layout=st.lists(st.one_of(st.none(), st.sampled_from(sorted(POISON))), min_size=1, max_size=24),
       source=st.sampled_from(["mqtt", "http"]))
def test_poison_anywhere_in_a_batch_holds_nothing_back(db: Db, layout: list[str | None], source: str) -> None:
    registry = NodeRegistry()
    node = db.fresh_node(registry)
    harness = Harness(db)
    before = len(db.run(telemetry.quarantined(db.pool, 100_000)))
    samples = [_good(node, i, source) if kind is None else POISON[kind](_good(node, i, source))
               for i, kind in enumerate(layout)]
    result = db.run(harness.store.write([harness.item(s) for s in samples]))
    good = [s for s, kind in zip(samples, layout, strict=True) if kind is None]
    poisoned = len(layout) - len(good)
    assert db.run(stored_rows(db.pool, node)) == expected_rows(good)
    assert (result.stored, result.quarantined, result.duplicates) == (len(good), poisoned, 0)
    kept = db.run(telemetry.quarantined(db.pool, 100_000))
    assert len(kept) - before == poisoned
    assert all(q.sample["node_uid"] == node for q in kept[:poisoned])
    # "bad_source" is refused by the CHECK on source: it is counted under the source it claims
    counted = harness.dropped("quarantined", source) + harness.dropped("quarantined", "carrier-pigeon")
    assert counted == poisoned
    harness.assert_all_settled()


def test_an_outage_is_not_a_data_error(db: Db) -> None:
    """A write that fails for the database's reasons raises: the batch is retried whole, its receipts
    stay open, nothing is quarantined."""
    registry = NodeRegistry()
    node = db.fresh_node(registry)
    harness = Harness(db)

    class Closed:
        def acquire(self) -> Any:
            raise asyncpg.ConnectionDoesNotExistError("connection was closed")

    store = TelemetryStore(Closed, harness.book, harness.counters)
    with pytest.raises(asyncpg.ConnectionDoesNotExistError):
        db.run(store.write([harness.item(_good(node, 1))]))
    assert len(harness.book) == 1
    assert not harness.receipts[0].done
    assert harness.dropped("quarantined", "mqtt") == 0
