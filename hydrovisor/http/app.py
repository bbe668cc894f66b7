"""The aiohttp application: middlewares, limits and every route table."""

from __future__ import annotations

from aiohttp import web

from hydrovisor.http import openapi
from hydrovisor.http.auth import make_auth_middleware
from hydrovisor.http.errors import error_middleware
from hydrovisor.http.keys import MAX_BODY_BYTES, RATE_LIMIT, SERVICES
from hydrovisor.http.ratelimit import RateLimiter
from hydrovisor.http.routes import (
    actors,
    alerts,
    chaos,
    commands,
    dlq,
    fleet,
    health,
    metrics,
    nodes,
    system,
    tasks,
    telemetry,
    workflows,
    zones,
)
from hydrovisor.services import Services


def build_http_app(services: Services) -> web.Application:
    """Assemble the API for one running instance."""
    max_body = services.settings.http.max_body_bytes
    app = web.Application(
        middlewares=[error_middleware, make_auth_middleware(services.settings)],
        client_max_size=max_body,
    )
    app[SERVICES] = services
    app[MAX_BODY_BYTES] = max_body
    app[RATE_LIMIT] = RateLimiter(rate=20.0, burst=40)
    for table in (health.routes, metrics.routes, actors.routes, fleet.routes, zones.routes, nodes.routes,
                  alerts.routes, telemetry.routes, commands.routes, dlq.routes, system.routes, chaos.routes,
                  workflows.routes, tasks.routes, openapi.routes):
        app.add_routes(table)
    return app
