"""The OpenAPI document describes exactly the routes the server has."""

from __future__ import annotations

import re

from hydrovisor.http.app import build_http_app
from hydrovisor.http.openapi import DOCUMENT
from tests.app.conftest import Running
from tests.helpers import http


def _router_operations(instance: Running) -> set[tuple[str, str]]:
    services = instance.app.services
    assert services is not None
    app = build_http_app(services)
    found = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "OPTIONS"):
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter") or ""
        found.add((route.method.lower(), re.sub(r"\{(\w+)(:[^}]*)?\}", r"{\1}", path)))
    return found


def test_document_matches_router(instance: Running) -> None:
    documented = {(method, path) for path, ops in DOCUMENT["paths"].items() for method in ops}
    assert documented == _router_operations(instance)


def test_document_is_served(instance: Running) -> None:
    reply = http("GET", instance.base_url + "/openapi.json")
    assert reply.status == 200
    assert reply.json()["openapi"].startswith("3.")
