"""``/metrics`` in the Prometheus text format."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from hydrovisor.http.keys import SERVICES

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    """Every hydrovisor metric plus process metrics."""
    body = generate_latest(request.app[SERVICES].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
