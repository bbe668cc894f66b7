"""``POST /api/v1/ingest/telemetry``, the telemetry queries and the quarantine."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from aiohttp import web

from hydrovisor.actors.telemetry_writer import StoreSample
from hydrovisor.broker.receipts import Receipt, ReceiptGroup
from hydrovisor.devices.ingest import DropReason, validate_sample
from hydrovisor.devices.router import WRITER_PATH
from hydrovisor.http.body import query_int, query_time, query_uid, read_body
from hydrovisor.http.errors import ApiError, ok
from hydrovisor.http.keys import RATE_LIMIT, SERVICES
from hydrovisor.http.ratelimit import RateLimiter
from hydrovisor.store.repos import telemetry
from hydrovisor.supervisors import SupervisionError

routes = web.RouteTableDef()

MAX_SAMPLES = 1000
MAX_QUARANTINE_LIMIT = 1000
BUCKETS = ("1m", "1h", "1d")


class IngestSample(msgspec.Struct):
    """One sample of the HTTP ingest; validated like an MQTT sample (extra fields tolerated)."""

    node_uid: Any = None
    channel: Any = None
    metric_type: Any = None
    value: Any = None
    ts: Any = None
    zone_id: Any = None
    zone_uid: Any = None


class IngestBody(msgspec.Struct):
    """``{"samples": [...]}``."""

    samples: Annotated[list[IngestSample], msgspec.Meta(max_length=MAX_SAMPLES)]


STORE_WAIT_S = 30.0  # the answer waits for the commit; past this the client is told to send again


def _one(services: Any, raw: IngestSample, now: float, receipt: Receipt) -> DropReason | None:
    if not isinstance(raw.node_uid, str) or not isinstance(raw.channel, str) or not isinstance(raw.metric_type, str):
        return DropReason.MALFORMED
    zone = raw.zone_uid if raw.zone_uid is not None else raw.zone_id
    if zone is not None and not isinstance(zone, str):
        return DropReason.MALFORMED
    ts = raw.ts if isinstance(raw.ts, int | float) and not isinstance(raw.ts, bool) else None
    result = validate_sample(services.devices.registry, node_uid=raw.node_uid, zone_uid=zone, channel=raw.channel,
                             metric_type=raw.metric_type, value=raw.value, ts=ts, source="http", now=now)
    if isinstance(result, DropReason):
        return result
    token = services.receipts.token(receipt)
    try:
        services.system.tell(WRITER_PATH, StoreSample(result, token))
    except SupervisionError:
        services.receipts.fail((token,), "writer_unavailable")
        return DropReason.BUFFER_FULL
    services.zones.reading(result.zone_uid, node_uid=result.node_uid, channel=result.channel, value=result.value,
                           ts=result.ts, flags=result.flags, received_at=now)
    return None


@routes.post("/api/v1/ingest/telemetry")
async def ingest(request: web.Request) -> web.Response:
    """Validate and store samples; 202 with counts (200 for an empty list) once every accepted sample
    is committed. Invalid samples are dropped with a counted reason; the rest are kept. 503
    ``telemetry_not_stored`` when the store does not confirm within 30 s: sending the same samples
    again is safe (samples with a ``ts`` are stored once)."""
    limiter: RateLimiter = request.app[RATE_LIMIT]
    wait = limiter.check(request.remote or "?")
    if wait:
        raise ApiError(429, "rate_limited", "too many ingest requests from this client",
                       headers={"Retry-After": limiter.retry_after(wait)})
    try:
        body = await read_body(request, IngestBody)
    except ApiError as exc:
        if "Expected `array` of length <=" in exc.message:
            raise ApiError(400, "too_many_samples", f"at most {MAX_SAMPLES} samples per request") from None
        raise
    services = request.app[SERVICES]
    if not body.samples:
        return ok({"count": 0, "dropped": 0, "total": 0})
    now = services.zone_plane.clock.now()  # the process clock: device timestamps are checked against it
    reasons: dict[str, int] = {}
    stored = ReceiptGroup()
    for raw in body.samples:
        receipt = stored.receipt()
        reason = _one(services, raw, now, receipt)
        if reason is None:
            services.telemetry.accepted.labels(source="http").inc()
        else:
            receipt.settle()  # dropped with its reason: nothing to wait for
            services.telemetry.dropped.labels(reason=reason, source="http").inc()
            reasons[reason] = reasons.get(reason, 0) + 1
    failure = await stored.wait(STORE_WAIT_S)
    if failure is not None:
        raise ApiError(503, "telemetry_not_stored", f"the samples were not confirmed stored ({failure}); "
                       "send them again (samples with a ts are stored once)", headers={"Retry-After": "5"})
    dropped = sum(reasons.values())
    return ok({"count": len(body.samples) - dropped, "dropped": dropped, "total": len(body.samples),
               "dropped_reasons": reasons}, status=202)


@routes.get("/api/v1/telemetry/last")
async def last(request: web.Request) -> web.Response:
    """Latest value per node + channel + metric of a zone."""
    zone = query_uid(request, "zone_uid", required=True)
    assert zone is not None
    node = query_uid(request, "node_uid")
    return ok(await telemetry.last_values(request.app[SERVICES].db.pool, zone, node))


@routes.get("/api/v1/telemetry")
async def series(request: web.Request) -> web.Response:
    """Samples of a zone in ``[from, to)`` (default: the last hour), raw or per ``bucket``."""
    zone = query_uid(request, "zone_uid", required=True)
    assert zone is not None
    now = request.app[SERVICES].zone_plane.clock.now()
    start = query_time(request, "from", now - 3600)
    end = query_time(request, "to", now + 1)
    if end <= start:
        raise ApiError(400, "invalid_time_range", "`to` must be after `from`")
    bucket = request.query.get("bucket")
    if bucket is not None and bucket not in BUCKETS:
        raise ApiError(400, "invalid_bucket", f"bucket must be one of {', '.join(BUCKETS)}")
    metric = request.query.get("metric")
    points = await telemetry.query(
        request.app[SERVICES].db.pool, zone_uid=zone, node_uid=query_uid(request, "node_uid"),
        metric=metric.strip().upper() if metric else None, start=start, end=end, bucket=bucket,
        limit=query_int(request, "limit", 5000, low=1, high=100_000))
    return ok(points)


@routes.get("/api/v1/telemetry/quarantine")
async def quarantine(request: web.Request) -> web.Response:
    """Samples PostgreSQL refused (split out of their batch, the rest stored), newest first: each with
    its id, when, the database's error and the sample as it was."""
    limit = query_int(request, "limit", 100, low=1, high=MAX_QUARANTINE_LIMIT)
    return ok(await telemetry.quarantined(request.app[SERVICES].db.pool, limit))
