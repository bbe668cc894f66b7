"""``/health/live`` (the process answers) and ``/health/ready`` (db, broker and tree are healthy)."""

from __future__ import annotations

import time

from aiohttp import web

from hydrovisor.http.errors import error_body, json_response
from hydrovisor.http.keys import SERVICES
from hydrovisor.services import Services
from hydrovisor.supervisors import ROOT, NoSuchActor

routes = web.RouteTableDef()
_STARTED = time.monotonic()


@routes.get("/health/live")
async def live(_: web.Request) -> web.Response:
    """200 while the process and its loop answer."""
    return json_response({"status": "ok", "data": {"uptime_s": round(time.monotonic() - _STARTED, 3)}})


def _component(services: Services, name: str, max_age: float) -> dict[str, object]:
    state = services.health.get(name)
    if state is None:
        return {"ok": False, "reason": "not checked yet"}
    age = time.monotonic() - state.checked_at
    if age > max_age:
        return {"ok": False, "reason": f"last check {age:.1f}s ago (stale)"}
    return {"ok": state.ok, "reason": state.reason, "checked_s_ago": round(age, 3)}


def _tree(services: Services) -> dict[str, object]:
    try:
        root = services.system.cell(ROOT)
    except NoSuchActor:
        return {"ok": False, "reason": "actor tree not running"}
    bad = []
    for path in root.children:
        try:
            state = services.system.cell(path).state.value
        except NoSuchActor:
            state = "missing"
        if state != "running":
            bad.append(f"{path} {state}")
    if root.state.value != "running" or bad:
        return {"ok": False, "reason": "; ".join(bad) or f"root {root.state.value}"}
    return {"ok": True, "reason": "ok", "subtrees": len(root.children)}


@routes.get("/health/ready")
async def ready(request: web.Request) -> web.Response:
    """200 when every component is healthy, else 503 with each component's reason."""
    services = request.app[SERVICES]
    db_age = 3 * services.settings.database.health_interval + 2
    checks = {
        "db": _component(services, "db", db_age),
        "broker": _component(services, "broker", 8.0),
        "tree": _tree(services),
    }
    if all(check["ok"] for check in checks.values()):
        return json_response({"status": "ok", "checks": checks})
    failing = ", ".join(name for name, check in checks.items() if not check["ok"])
    return json_response(error_body("not_ready", f"not ready: {failing}", checks=checks), 503)
