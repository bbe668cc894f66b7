"""Telemetry: batched COPY of samples + newest-wins ``telemetry_last``, rollups, queries."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec

ROLLUP_UNITS = {"1m": "minute", "1h": "hour", "1d": "day"}
# Rollups only take samples that arrived at least this long ago: a writer transaction that began
# before the watermark moved but committed after it would otherwise be skipped for ever.
ROLLUP_GRACE_S = 30.0


class Sample(msgspec.Struct, frozen=True):
    """One validated sample, ready to store."""

    zone_uid: str
    node_uid: str
    channel: str
    metric: str
    value: float
    ts: float  # unix seconds
    source: str  # mqtt | http
    metric_original: str | None = None
    flags: dict[str, Any] | None = None


class LastValue(msgspec.Struct, frozen=True):
    """Latest value of one (zone, node, channel, metric)."""

    zone_uid: str
    node_uid: str
    channel: str
    metric: str
    value: float
    ts: float
    flags: dict[str, Any] | None


class Point(msgspec.Struct, frozen=True):
    """A raw sample or a bucket (``count`` > 1 only for buckets)."""

    node_uid: str
    channel: str
    metric: str
    ts: float
    value: float
    min: float
    max: float
    count: int


_SAMPLE_COLUMNS = ("zone_uid", "node_uid", "channel", "metric", "metric_original", "value", "ts", "source", "flags")


def _utc(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


async def write_batch(pool: asyncpg.Pool, samples: Sequence[Sample]) -> dict[str, int]:
    """Store a batch atomically: every new sample is appended and ``telemetry_last`` keeps the newest.

    Idempotent for samples that carry the device's own ``ts``: one already stored with the same
    zone, node, channel, metric, ts and value (a QoS 1 message the device sent again because its
    PUBACK was lost) is not stored twice. Returns how many samples were appended, per ``source``.
    """
    fresh: dict[tuple[Any, ...], Sample] = {}
    replaced: list[Sample] = []
    for s in samples:
        if s.flags and s.flags.get("ts_replaced"):
            replaced.append(s)  # our clock, not the device's: no identity to repeat
        else:
            fresh.setdefault((s.zone_uid, s.node_uid, s.channel, s.metric, s.ts, s.value), s)
    rows = [*fresh.values(), *replaced]
    newest: dict[tuple[str, str, str, str], Sample] = {}
    for s in rows:
        key = (s.zone_uid, s.node_uid, s.channel, s.metric)
        if key not in newest or newest[key].ts <= s.ts:
            newest[key] = s
    columns = list(zip(*[(s.zone_uid, s.node_uid, s.channel, s.metric, s.metric_original, s.value, _utc(s.ts),
                          s.source, json.dumps(s.flags) if s.flags else None, not (s.flags or {}).get("ts_replaced"))
                         for s in rows], strict=True))
    async with pool.acquire() as conn, conn.transaction():
        appended = await conn.fetch(
            "WITH ins AS (INSERT INTO telemetry_samples (zone_uid, node_uid, channel, metric, metric_original, value, ts, source, flags) "
            "SELECT z, n, c, m, mo, v, t, s, f::jsonb FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], "
            "  $5::text[], $6::float8[], $7::timestamptz[], $8::text[], $9::text[], $10::bool[]) "
            "  AS u(z, n, c, m, mo, v, t, s, f, device_ts) "
            "WHERE NOT (device_ts AND EXISTS (SELECT 1 FROM telemetry_samples o WHERE o.zone_uid = z AND o.node_uid = n "
            "  AND o.metric = m AND o.ts = t AND o.channel = c AND o.value = v)) RETURNING source) "
            "SELECT source, count(*) AS n FROM ins GROUP BY source",
            *[list(col) for col in columns])
        await conn.executemany(
            "INSERT INTO telemetry_last (zone_uid, node_uid, channel, metric, value, ts, flags) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb) "
            "ON CONFLICT (zone_uid, node_uid, channel, metric) DO UPDATE "
            "SET value = EXCLUDED.value, ts = EXCLUDED.ts, flags = EXCLUDED.flags, updated_at = now() "
            "WHERE telemetry_last.ts <= EXCLUDED.ts",
            [(s.zone_uid, s.node_uid, s.channel, s.metric, s.value, _utc(s.ts),
              json.dumps(s.flags) if s.flags else None) for s in newest.values()])
    return {r["source"]: int(r["n"]) for r in appended}


class Quarantined(msgspec.Struct, frozen=True):
    """A sample PostgreSQL refused, kept as JSON with the error, for an operator to look at."""

    id: int
    quarantined_at: float
    error: str
    sample: dict[str, Any]


async def quarantine(pool: asyncpg.Pool, sample: Sample, error: str) -> None:
    """Keep a sample that cannot be stored; as bytes, so that nothing in it can fail this insert."""
    await pool.execute("INSERT INTO telemetry_quarantine (sample, error) VALUES ($1, $2)",
                       _sample_json(sample), error.replace("\x00", "\\0")[:2000])


def _sample_json(sample: Sample) -> bytes:
    """The sample as JSON; a string that is not valid Unicode (a lone surrogate, which UTF-8 cannot
    encode) is kept with its bad code points written as ``\\udXXX`` text, so that it can be encoded."""
    try:
        return msgspec.json.encode(sample)
    except UnicodeEncodeError:
        return msgspec.json.encode(_printable(msgspec.to_builtins(sample)))


def _printable(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_printable(k): _printable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_printable(v) for v in value]
    return value


async def quarantined(pool: asyncpg.Pool, limit: int) -> list[Quarantined]:
    """The newest quarantined samples."""
    rows = await pool.fetch(
        "SELECT id, date_part('epoch', quarantined_at) AS quarantined_at, error, sample "
        "FROM telemetry_quarantine ORDER BY id DESC LIMIT $1", limit)
    return [Quarantined(id=r["id"], quarantined_at=r["quarantined_at"], error=r["error"],
                        sample=msgspec.json.decode(r["sample"])) for r in rows]


async def last_values(pool: asyncpg.Pool, zone_uid: str, node_uid: str | None = None) -> list[LastValue]:
    """Latest value per node + channel + metric of a zone."""
    rows = await pool.fetch(
        "SELECT zone_uid, node_uid, channel, metric, value, date_part('epoch', ts) AS ts, flags "
        "FROM telemetry_last WHERE zone_uid = $1 AND ($2::text IS NULL OR node_uid = $2) "
        "ORDER BY node_uid, channel, metric", zone_uid, node_uid)
    return [LastValue(**{**dict(r), "flags": json.loads(r["flags"]) if r["flags"] else None}) for r in rows]


async def count_samples(pool: asyncpg.Pool, zone_uid: str | None = None) -> int:
    """Stored samples (of one zone)."""
    return int(await pool.fetchval(
        "SELECT count(*) FROM telemetry_samples WHERE $1::text IS NULL OR zone_uid = $1", zone_uid))


async def query(
    pool: asyncpg.Pool, *, zone_uid: str, node_uid: str | None, metric: str | None, start: float, end: float,
    bucket: str | None, limit: int,
) -> list[Point]:
    """Raw samples, or ``bucket`` (1m|1h|1d) aggregates computed from the stored samples."""
    if bucket is None:
        rows = await pool.fetch(
            "SELECT node_uid, channel, metric, date_part('epoch', ts) AS ts, value, value AS min, value AS max, "
            "1 AS count FROM telemetry_samples WHERE zone_uid = $1 AND ($2::text IS NULL OR node_uid = $2) "
            "AND ($3::text IS NULL OR metric = $3) AND ts >= $4 AND ts < $5 ORDER BY ts LIMIT $6",
            zone_uid, node_uid, metric, _utc(start), _utc(end), limit)
    else:
        unit = ROLLUP_UNITS[bucket]
        rows = await pool.fetch(
            "SELECT node_uid, channel, metric, date_part('epoch', date_trunc($7, ts, 'UTC')) AS ts, "
            "avg(value) AS value, min(value) AS min, max(value) AS max, count(*) AS count "
            "FROM telemetry_samples WHERE zone_uid = $1 AND ($2::text IS NULL OR node_uid = $2) "
            "AND ($3::text IS NULL OR metric = $3) AND ts >= $4 AND ts < $5 "
            "GROUP BY 1, 2, 3, 4 ORDER BY 4, 1, 2, 3 LIMIT $6",
            zone_uid, node_uid, metric, _utc(start), _utc(end), limit, unit)
    return [Point(**dict(r)) for r in rows]


async def advance_rollups(pool: asyncpg.Pool, bucket: str, grace_s: float = ROLLUP_GRACE_S) -> int:
    """Fold samples that arrived since the bucket's watermark into ``telemetry_rollups``.

    Returns how many samples were folded. Idempotent per sample: the watermark moves in the same
    transaction as the upsert.
    """
    unit = ROLLUP_UNITS[bucket]
    async with pool.acquire() as conn, conn.transaction():
        since = await conn.fetchval(
            "SELECT upto FROM rollup_watermarks WHERE bucket = $1 FOR UPDATE", bucket)
        upto = await conn.fetchval("SELECT now() - make_interval(secs => $1)", grace_s)
        if since is not None and since >= upto:
            return 0
        folded = await conn.fetchval(
            "WITH src AS (SELECT * FROM telemetry_samples WHERE ($2::timestamptz IS NULL OR received_at > $2) "
            "  AND received_at <= $3), "
            "agg AS (INSERT INTO telemetry_rollups "
            "  (bucket, zone_uid, node_uid, channel, metric, bucket_start, sum, min, max, count) "
            "  SELECT $1, zone_uid, node_uid, channel, metric, date_trunc($4, ts, 'UTC'), "
            "         sum(value), min(value), max(value), count(*) FROM src GROUP BY 2, 3, 4, 5, 6 "
            "  ON CONFLICT (bucket, zone_uid, node_uid, channel, metric, bucket_start) DO UPDATE SET "
            "    sum = telemetry_rollups.sum + EXCLUDED.sum, count = telemetry_rollups.count + EXCLUDED.count, "
            "    min = least(telemetry_rollups.min, EXCLUDED.min), max = greatest(telemetry_rollups.max, EXCLUDED.max) "
            "  RETURNING 1) "
            "SELECT count(*) FROM src",
            bucket, since, upto, unit)
        await conn.execute(
            "INSERT INTO rollup_watermarks (bucket, upto) VALUES ($1, $2) "
            "ON CONFLICT (bucket) DO UPDATE SET upto = EXCLUDED.upto", bucket, upto)
        return int(folded)


async def rollups(
    pool: asyncpg.Pool, *, bucket: str, zone_uid: str, metric: str | None = None,
) -> list[dict[str, Any]]:
    """Stored rollup rows of a zone (for inspection and tests)."""
    rows = await pool.fetch(
        "SELECT node_uid, channel, metric, date_part('epoch', bucket_start) AS bucket_start, "
        "sum / count AS avg, min, max, count FROM telemetry_rollups "
        "WHERE bucket = $1 AND zone_uid = $2 AND ($3::text IS NULL OR metric = $3) ORDER BY bucket_start",
        bucket, zone_uid, metric)
    return [dict(r) for r in rows]
