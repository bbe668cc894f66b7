"""The OpenAPI document served at ``/openapi.json``; a test keeps it equal to the router."""

from __future__ import annotations

from typing import Any

from aiohttp import web

routes = web.RouteTableDef()

_ERROR = {"$ref": "#/components/schemas/Error"}


def _resp(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"description": description}
    if schema is not None:
        body["content"] = {"application/json": {"schema": schema}}
    return body


_ERRORS = {
    "401": _resp("missing or invalid bearer token", _ERROR),
    "403": _resp("role too low, or no token configured and the client is not on loopback", _ERROR),
}
_PATH_PARAM = [{"name": "path", "in": "path", "required": True, "schema": {"type": "string"},
                "description": "actor path without the leading slash, e.g. store/db_health"}]
_DEPTH = {"name": "depth", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "hydrovisor", "version": "0.1.0",
             "description": "Control plane of a hydroponic greenhouse."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["status", "code", "message"],
                "properties": {"status": {"const": "error"}, "code": {"type": "string"},
                               "message": {"type": "string"}},
            },
            "ActorInfo": {
                "type": "object",
                "required": ["path", "id", "kind", "state", "restarts_in_window", "restarts_total",
                             "mailbox_depth", "children"],
                "properties": {
                    "path": {"type": "string"}, "id": {"type": "string"}, "kind": {"type": "string"},
                    "actor_class": {"type": "string"},
                    "state": {"enum": ["starting", "running", "restarting", "stopping", "stopped"]},
                    "restart": {"enum": ["permanent", "transient", "temporary"]},
                    "restarts_in_window": {"type": "integer"}, "restarts_total": {"type": "integer"},
                    "last_failure": {"type": ["object", "null"], "properties": {
                        "reason": {"type": "string"}, "kind": {"type": "string"}, "at": {"type": "number"}}},
                    "mailbox_depth": {"type": "integer"},
                    "uptime_s": {"type": ["number", "null"]}, "busy_for_s": {"type": ["number", "null"]},
                    "strategy": {"type": ["string", "null"]}, "max_restarts": {"type": ["integer", "null"]},
                    "period_s": {"type": ["number", "null"]}, "max_children": {"type": ["integer", "null"]},
                    "children": {"type": "array", "items": {"$ref": "#/components/schemas/ActorInfo"}},
                },
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/health/live": {"get": {"summary": "the process answers", "security": [],
                                 "responses": {"200": _resp("alive")}}},
        "/health/ready": {"get": {
            "summary": "db, broker and actor tree are healthy", "security": [],
            "responses": {"200": _resp("ready"),
                          "503": _resp("not ready; `checks` gives each reason", _ERROR)},
        }},
        "/metrics": {"get": {"summary": "Prometheus metrics", "security": [],
                             "responses": {"200": _resp("text exposition format")}}},
        "/openapi.json": {"get": {"summary": "this document", "security": [],
                                  "responses": {"200": _resp("OpenAPI 3.1")}}},
        "/api/v1/actors": {"get": {
            "summary": "the whole supervision tree", "parameters": [_DEPTH],
            "responses": {"200": _resp("tree", {"$ref": "#/components/schemas/ActorInfo"}), **_ERRORS},
        }},
        "/api/v1/actors/{path}": {"get": {
            "summary": "one actor path and its subtree", "parameters": [*_PATH_PARAM, _DEPTH],
            "responses": {"200": _resp("subtree", {"$ref": "#/components/schemas/ActorInfo"}),
                          "404": _resp("no actor at that path", _ERROR), **_ERRORS},
        }},
        "/api/v1/actors/{path}/restart": {"post": {
            "summary": "admin: fail the actor on purpose so its supervisor restarts it",
            "parameters": _PATH_PARAM,
            "responses": {"202": _resp("restarted", {"$ref": "#/components/schemas/ActorInfo"}),
                          "404": _resp("no running actor at that path", _ERROR),
                          "409": _resp("the restart escalated (intensity exceeded)", _ERROR), **_ERRORS},
        }},
    },
}


@routes.get("/openapi.json")
async def openapi(_: web.Request) -> web.Response:
    """The API description."""
    return web.json_response(DOCUMENT)
