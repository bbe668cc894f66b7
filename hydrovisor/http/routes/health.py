"""``/health/live`` (the process answers) and ``/health/ready`` (db, broker, tree, loop, system state)."""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from hydrovisor.http.errors import error_body, json_response
from hydrovisor.http.keys import SERVICES
from hydrovisor.process.checks import CheckResult
from hydrovisor.process.states import ACTUATION_BLOCKED

routes = web.RouteTableDef()
_STARTED = time.monotonic()


@routes.get("/health/live")
async def live(_: web.Request) -> web.Response:
    """200 while the process and its loop answer."""
    return json_response({"status": "ok", "data": {"uptime_s": round(time.monotonic() - _STARTED, 3)}})


@routes.get("/health/ready")
async def ready(request: web.Request) -> web.Response:
    """200 when every component is healthy and the system may actuate, else 503 with each reason."""
    control = request.app[SERVICES].control
    checks = control.readiness()
    state = control.state
    checks["system"] = CheckResult(state not in ACTUATION_BLOCKED, state.value)
    body = {name: msgspec.to_builtins(check) for name, check in checks.items()}
    if all(check.ok for check in checks.values()):
        return json_response({"status": "ok", "system_state": state.value, "checks": body})
    failing = ", ".join(name for name, check in checks.items() if not check.ok)
    return json_response(error_body("not_ready", f"not ready: {failing}", system_state=state.value, checks=body), 503)
