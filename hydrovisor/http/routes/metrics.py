"""``/metrics`` in the Prometheus text format."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hydrovisor.http.keys import SERVICES

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Every hydrovisor metric plus process metrics.

    Rendered off the loop: walking a tree of 100,000 actors takes ~150 ms, which would stall every
    device connection. Safe: the collectors read thread-safe counters and the cells, never loop objects."""
    body = await asyncio.to_thread(generate_latest, request.app[SERVICES].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
