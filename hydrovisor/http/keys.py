"""Typed aiohttp application keys."""

from aiohttp import web

from hydrovisor.http.ratelimit import RateLimiter
from hydrovisor.services import Services

SERVICES = web.AppKey("services", Services)
MAX_BODY_BYTES = web.AppKey("max_body_bytes", int)
RATE_LIMIT = web.AppKey("ingest_rate_limit", RateLimiter)
