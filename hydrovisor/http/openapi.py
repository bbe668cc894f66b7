"""The OpenAPI document served at ``/openapi.json``; a test keeps it equal to the router."""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from hydrovisor.actors.zone import ZoneStateReply
from hydrovisor.chaos.engine import ChaosRequest
from hydrovisor.http.body import MAX_TIME, MIN_TIME, UID_PATTERN
from hydrovisor.http.routes import commands, fleet, nodes, telemetry, zones
from hydrovisor.store.repos.events import ALERT_SOURCES, ALERT_STATUSES, Alert, ZoneEvent
from hydrovisor.store.repos.fleet import Zone
from hydrovisor.store.repos.zones import SafetyReset, SettingsVersion
from hydrovisor.supervisors.snapshot import ActorInfo
from hydrovisor.zones.settings import ZoneSettings

routes = web.RouteTableDef()

_ERROR = {"$ref": "#/components/schemas/Error"}


def _resp(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"description": description}
    if schema is not None:
        body["content"] = {"application/json": {"schema": schema}}
    return body


def _ok(data: dict[str, Any]) -> dict[str, Any]:
    """The success envelope ``{"status":"ok","data":...}`` around ``data``."""
    return {"type": "object", "required": ["status", "data"],
            "properties": {"status": {"const": "ok"}, "data": data}}


# every API operation: a malformed parameter or body, or a NUL character anywhere in the URL
_ERRORS = {
    "400": _resp("invalid input; `code` says which (e.g. invalid_uid, invalid_parameter, nul_character)", _ERROR),
    "401": _resp("missing or invalid bearer token", _ERROR),
    "403": _resp("role too low, or no token configured and the client is not on loopback", _ERROR),
}
_PATH_PARAM = [{"name": "path", "in": "path", "required": True, "schema": {"type": "string"},
                "description": "actor path without the leading slash, e.g. store/db_health"}]
_DEPTH = {"name": "depth", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}}
_TREE = _ok({"$ref": "#/components/schemas/ActorInfo"})

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
            "responses": {"200": _resp("tree", _TREE), **_ERRORS},
        }},
        "/api/v1/actors/{path}": {"get": {
            "summary": "one actor path and its subtree", "parameters": [*_PATH_PARAM, _DEPTH],
            "responses": {"200": _resp("subtree", _TREE),
                          "404": _resp("no actor at that path", _ERROR), **_ERRORS},
        }},
        "/api/v1/actors/{path}/restart": {"post": {
            "summary": "admin: fail the actor on purpose so its supervisor restarts it",
            "parameters": _PATH_PARAM,
            "responses": {"202": _resp("restarted", _TREE),
                          "404": _resp("no running actor at that path", _ERROR),
                          "409": _resp("the restart escalated (intensity exceeded)", _ERROR), **_ERRORS},
        }},
    },
}




def _schema(kind: type) -> dict[str, Any]:
    """JSON Schema of a request body Struct, straight from its msgspec definition."""
    schema: dict[str, Any] = msgspec.json.schema(kind, ref_template="#/components/schemas/{name}")
    for name, component in schema.pop("$defs", {}).items():
        DOCUMENT["components"]["schemas"][name] = component
    return schema


def _op(summary: str, responses: dict[str, Any], *, body: type | None = None, params: list[Any] | None = None,
        admin: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary + (" (admin)" if admin else ""), "responses": {**responses, **_ERRORS}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _schema(body)}}}
    if params:
        op["parameters"] = params
    return op


_UID = {"type": "string", "pattern": UID_PATTERN}
# what query_time accepts: unix seconds or ISO 8601 with a timezone, 1970..9999 (else 400 invalid_time)
_TIME = {"anyOf": [{"type": "number", "minimum": MIN_TIME, "maximum": MAX_TIME},
                   {"type": "string", "format": "date-time"}]}
_TIME_PARAMS = frozenset({"from", "to", "since", "before"})


def _q(name: str, description: str, *, required: bool = False, kind: str = "string") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind}
    if kind == "string" and name.endswith("_uid"):
        schema = _UID
    elif kind == "string" and name in _TIME_PARAMS:
        schema = _TIME
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


_UID_PARAM = [{"name": "uid", "in": "path", "required": True, "schema": _UID}]
_OK = _resp("ok")
_BAD = _resp("invalid input; `code` says which", _ERROR)
_NOT_FOUND = _resp("not found", _ERROR)
_CONFLICT = _resp("conflict", _ERROR)


def _device_plane_paths() -> dict[str, Any]:
    zone_q = _q("zone_uid", "zone id", required=True)
    return {
        "/api/v1/greenhouses": {
            "get": _op("list greenhouses", {"200": _OK}),
            "post": _op("create a greenhouse", {"201": _resp("created"), "400": _BAD, "409": _CONFLICT},
                        body=fleet.NewGreenhouse),
        },
        "/api/v1/nodes": {
            "get": _op("list nodes", {"200": _OK}, params=[_q("zone_uid", "only this zone")]),
            "post": _op("pre-register a node configured in the field", {
                "201": _resp("created"), "400": _BAD, "404": _NOT_FOUND, "409": _CONFLICT}, body=nodes.NewNode),
        },
        "/api/v1/nodes/{uid}": {"get": _op("one node with its channels", {"200": _OK, "404": _NOT_FOUND},
                                           params=_UID_PARAM)},
        "/api/v1/nodes/{uid}/bind": {"post": _op(
            "bind to a zone: pushes the config, completed by the node's config_report",
            {"202": _resp("bind pending"), "400": _BAD, "404": _NOT_FOUND, "409": _CONFLICT},
            body=nodes.BindBody, params=_UID_PARAM)},
        "/api/v1/nodes/{uid}/unbind": {"post": _op(
            "back to the temp namespace", {"200": _OK, "404": _NOT_FOUND, "409": _CONFLICT}, params=_UID_PARAM)},
        "/api/v1/nodes/{uid}/credentials": {"post": _op(
            "issue or rotate the node's MQTT password (shown once)", {"201": _resp("credentials"),
                                                                      "404": _NOT_FOUND},
            params=_UID_PARAM, admin=True)},
        "/api/v1/nodes/{uid}/events": {"get": _op(
            "the node's timeline entries", {"200": _OK, "404": _NOT_FOUND},
            params=[*_UID_PARAM, _q("limit", "newest N entries", kind="integer")])},
        "/api/v1/ingest/telemetry": {"post": _op(
            "ingest telemetry samples (<= 1000); invalid ones are dropped with a counted reason",
            {"200": _resp("empty list"), "202": _resp("accepted: count, dropped, total, dropped_reasons"),
             "400": _BAD, "413": _resp("body too large", _ERROR), "429": _resp("rate limited", _ERROR)},
            body=telemetry.IngestBody)},
        "/api/v1/telemetry/last": {"get": _op("latest value per node + channel + metric", {"200": _OK, "400": _BAD},
                                              params=[zone_q, _q("node_uid", "only this node")])},
        "/api/v1/telemetry/quarantine": {"get": _op(
            "samples PostgreSQL refused, newest first: `[{id, quarantined_at, error, sample}]`",
            {"200": _OK, "400": _BAD}, params=[_q("limit", "max items (1-1000, default 100)", kind="integer")])},
        **_command_paths(),
        "/api/v1/telemetry": {"get": _op("samples or buckets of a zone", {"200": _OK, "400": _BAD}, params=[
            zone_q, _q("node_uid", "only this node"), _q("metric", "metric name"),
            _q("from", "unix seconds or ISO 8601 with timezone (default: 1 h ago)"),
            _q("to", "unix seconds or ISO 8601 with timezone (default: now)"),
            _q("bucket", "1m, 1h or 1d (default: raw samples)"), _q("limit", "max points", kind="integer")])},
    }


def _command_paths() -> dict[str, Any]:
    submitted = {"202": _resp("QUEUED stored, published, SENT stored"), "200": _resp("the same command again"),
                 "400": _BAD, "404": _NOT_FOUND, "409": _resp("node not bound/validated, zone mismatch, cmd_id reused "
                                                                "with other target or params", _ERROR),
                 "429": _resp("too many commands in flight (Retry-After)", _ERROR),
                 "500": _resp("command_state_sync_failed: published but SENT not stored", _ERROR),
                 "502": _resp("command_send_failed: node not connected / broker refused (retry the cmd_id)", _ERROR),
                 "503": _resp("safe_mode_active: SAFE_MODE/FATAL refuses actuation except commands driving an "
                              "actuator to its fail-safe state", _ERROR)}
    cmd_param = [{"name": "cmd_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    return {
        "/api/v1/commands": {
            "post": _op("submit a command", submitted, body=commands.CommandBody),
            "get": _op("commands, newest first", {"200": _OK, "400": _BAD}, params=[
                _q("zone_uid", "only this zone"), _q("node_uid", "only this node"), _q("status", "only this status"),
                _q("since", "created at or after (unix s or ISO 8601)"),
                _q("before", "created before (paging: created_at of the last item)"),
                _q("limit", "max items", kind="integer")]),
        },
        "/api/v1/zones/{uid}/commands": {"post": _op("submit a command to a node of this zone", submitted,
                                                     body=commands.CommandBody, params=_UID_PARAM)},
        "/api/v1/nodes/{uid}/commands": {"post": _op("submit a command to this node", submitted,
                                                     body=commands.CommandBody, params=_UID_PARAM)},
        "/api/v1/commands/{cmd_id}": {"get": _op(
            "one command (`?wait=N` holds up to N s for a terminal status)", {"200": _OK, "404": _NOT_FOUND},
            params=[*cmd_param, _q("wait", "seconds to wait for a terminal status (<= 60)", kind="integer")])},
        "/api/v1/commands/{cmd_id}/events": {"get": _op(
            "the status timeline, late and contradicting replies included", {"200": _OK, "404": _NOT_FOUND},
            params=cmd_param)},
    }


# --- notification dead-letter queue (hydrovisor/http/routes/dlq.py) ---------------------------
def _dlq_paths() -> dict[str, Any]:
    dlq_param = [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1},
                  "description": "the DLQ entry id (`items[].id`)"}]
    missing = _resp("dlq_entry_not_found: no such entry (or already replayed/purged)", _ERROR)
    bad_id = _resp("invalid_dlq_id", _ERROR)
    return {
        "/api/v1/dlq": {"get": _op(
            "dead-lettered notifications, newest first: `{items, total, pending, next_before}`",
            {"200": _OK, "400": _BAD},
            params=[_q("limit", "max items (1-1000, default 100)", kind="integer"),
                    _q("before", "paging: `next_before` of the previous page", kind="integer")])},
        "/api/v1/dlq/{id}/replay": {"post": _op(
            "move back to the pending queue (attempts reset, same notification id) for delivery now",
            {"200": _resp("pending again: `{dlq_id, notification_id, status}`"), "400": bad_id, "404": missing},
            params=dlq_param, admin=True)},
        "/api/v1/dlq/{id}": {"delete": _op(
            "purge the entry for good", {"200": _resp("purged"), "400": bad_id, "404": missing},
            params=dlq_param, admin=True)},
    }
# --- end of the DLQ paths ------------------------------------------------------------------------


# --- zones, their settings and timeline, alerts (hydrovisor/http/routes/zones.py, alerts.py) -----
def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _settings_body(kind: type) -> type:
    """``kind``'s body schema, its ``settings`` documented as the full ZoneSettings document."""
    _schema(kind)
    DOCUMENT["components"]["schemas"][kind.__name__]["properties"]["settings"] = _ref("ZoneSettings")
    return kind


def _zone_paths() -> dict[str, Any]:
    for kind in (ZoneSettings, Zone, SettingsVersion, ZoneEvent, Alert, SafetyReset):
        _schema(kind)  # registers each as a component, exactly as the routes encode them
    field_error = {"type": "object", "required": ["path", "message"],
                   "properties": {"path": {"type": "string", "description": "JSON path, e.g. $.targets.ph.min"},
                                  "message": {"type": "string"}}}
    DOCUMENT["components"]["schemas"]["FieldError"] = field_error
    DOCUMENT["components"]["schemas"]["SettingsView"] = {
        "type": "object",
        "required": ["zone_uid", "version", "created_at", "created_by", "settings", "devices", "errors"],
        "properties": {
            "zone_uid": {"type": "string"}, "version": {"type": "integer"}, "created_at": {"type": "number"},
            "created_by": {"type": "string"},
            "settings": {"type": "object", "description": "the stored ZoneSettings document"},
            "devices": {"type": "object", "description": "role -> the node channel it is bound to",
                        "additionalProperties": {
                            "type": "object", "required": ["node_uid", "channel", "source"],
                            "properties": {"node_uid": {"type": "string"}, "channel": {"type": "string"},
                                           "source": {"enum": ["settings", "auto"]}}}},
            "errors": {"type": "array", "items": _ref("FieldError"),
                       "description": "why the stored document is not in force as shown (empty: it is)"},
        },
    }
    invalid = _resp("invalid_settings: `errors` lists `{path, message}` for each bad value (or ambiguous role)",
                    {"allOf": [_ERROR, {"type": "object", "required": ["errors"],
                                        "properties": {"errors": {"type": "array", "items": _ref("FieldError")}}}]})
    view = _resp("the settings in force", _ok(_ref("SettingsView")))

    def int_q(name: str, description: str) -> dict[str, Any]:
        return _q(name, description, kind="integer")

    def enum_q(name: str, values: tuple[str, ...]) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": {"enum": list(values)}}

    alert_param = [{"name": "id", "in": "path", "required": True,
                    "schema": {"type": "integer", "minimum": 1, "maximum": zones.MAX_ID}}]
    return {
        "/api/v1/zones": {
            "get": _op("list zones", {"200": _resp("zones", _ok({"type": "array", "items": _ref("Zone")}))},
                       params=[_q("greenhouse_uid", "only this greenhouse")]),
            "post": _op("create a zone; `settings` (default: all defaults) becomes version 1",
                        {"201": _resp("created", _ok(_ref("Zone"))), "404": _NOT_FOUND, "409": _CONFLICT,
                         "422": invalid}, body=_settings_body(zones.NewZone)),
        },
        "/api/v1/zones/{uid}": {"delete": _op(
            "delete a zone (its timeline and alerts are kept)",
            {"200": _resp("deleted"), "404": _NOT_FOUND,
             "409": _resp("zone_has_nodes: nodes are bound or binding to it", _ERROR)}, params=_UID_PARAM)},
        "/api/v1/zones/{uid}/settings": {
            "get": _op("the settings in force, each role's node channel and its source", {"200": view,
                                                                                        "404": _NOT_FOUND},
                       params=_UID_PARAM),
            "put": _op("store a new version of the whole document, edited from `version`",
                       {"200": view, "404": _NOT_FOUND, "409": _resp(
                           "settings_version_conflict (`current_version`), or a running workflow refuses it",
                           _ERROR), "422": invalid},
                       body=_settings_body(zones.SettingsEdit), params=_UID_PARAM),
        },
        "/api/v1/zones/{uid}/settings/history": {"get": _op(
            "every stored version, newest first",
            {"200": _resp("versions", _ok({"type": "array", "items": _ref("SettingsVersion")})), "404": _NOT_FOUND},
            params=[*_UID_PARAM, int_q("limit", "max versions (1-1000, default 100)"),
                    int_q("before", "only versions older than this one")])},
        "/api/v1/zones/{uid}/events": {"get": _op(
            "the zone timeline in (created_at, id) order: the newest `limit` entries, or the first `limit` "
            "after `after_id` (0: from the beginning)",
            {"200": _resp("events", _ok({"type": "array", "items": _ref("ZoneEvent")})), "404": _NOT_FOUND},
            params=[*_UID_PARAM, int_q("limit", "max entries (1-5000, default 200)"),
                    int_q("after_id", "the id of the last event seen")])},
        "/api/v1/zones/{uid}/state": {"get": _op(
            "the zone's live state: readings with ages, actuators desired/confirmed, levels, alerts, locks",
            {"200": _resp("state", _ok(_schema(ZoneStateReply))), "404": _NOT_FOUND,
             "503": _resp("zone_not_running / zone_not_ready / zone_not_answering (Retry-After)", _ERROR)},
            params=_UID_PARAM)},
        "/api/v1/zones/{uid}/safety/reset": {"post": _op(
            "reset safety lock: resolve the zone's active safety-lock alerts (audited with who and why)",
            {"200": _resp("the reset and the alerts it resolved", _ok(_ref("SafetyReset"))), "404": _NOT_FOUND},
            body=zones.ReasonBody, params=_UID_PARAM)},
        "/api/v1/alerts": {"get": _op(
            "alerts, newest first", {"200": _resp("alerts", _ok({"type": "array", "items": _ref("Alert")}))},
            params=[enum_q("status", ALERT_STATUSES), enum_q("source", ALERT_SOURCES),
                    _q("zone_uid", "only this zone"), int_q("limit", "max alerts (1-5000, default 500)")])},
        "/api/v1/alerts/{id}/resolve": {"post": _op(
            "resolve one active alert with a reason (kept with who resolved it)",
            {"200": _resp("resolved", _ok(_ref("Alert"))), "404": _NOT_FOUND,
             "409": _resp("alert_not_active: already resolved", _ERROR)},
            body=zones.ReasonBody, params=alert_param)},
    }
# --- end of the zone paths -----------------------------------------------------------------------


# --- controlled failure (hydrovisor/http/routes/system.py, chaos.py) -----------------------------
def _workflow_paths() -> dict[str, Any]:
    from hydrovisor.http.routes import workflows as routes_wf  # noqa: PLC0415 - the routes import this module's peers
    from hydrovisor.store.repos.workflows import Automation, WorkflowRecord  # noqa: PLC0415
    from hydrovisor.workflows.runtime import EmergencyStopReport  # noqa: PLC0415

    for kind in (WorkflowRecord, Automation, EmergencyStopReport):
        _schema(kind)  # registers each as a component, exactly as the routes encode them
    status_q = {"name": "status", "in": "query", "required": False,
                "schema": {"type": "string", "enum": list(routes_wf.STATUSES)}, "description": "only this status"}
    wf_params = [*_UID_PARAM, {"name": "wf_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    record = _ok(_ref("WorkflowRecord"))
    refused = _resp("refused: workflow_already_running, zone_not_ready, emergency_stop_active, topology_mismatch, "
                    "pump_safety_blocked (with reason_code), ...", _ERROR)
    return {
        "/api/v1/zones/{uid}/workflows": {
            "post": _op("start a workflow (two_tank_startup, irrigation {duration_s}, correction, water_change)",
                        {"202": _resp("started", record), "400": _BAD, "404": _NOT_FOUND, "409": refused,
                         "422": _resp("invalid_params", _ERROR)}, body=routes_wf.StartBody, params=_UID_PARAM),
            "get": _op("the zone's workflows, newest first",
                       {"200": _resp("workflows", _ok({"type": "array", "items": _ref("WorkflowRecord")})),
                        "404": _NOT_FOUND},
                       params=[*_UID_PARAM, status_q, _q("limit", "max workflows (1-1000, default 100)",
                                                         kind="integer")])},
        "/api/v1/zones/{uid}/workflows/{wf_id}": {"get": _op(
            "one workflow: status, current stage, every stage, reason codes, the commands it sent",
            {"200": _resp("the workflow", record), "404": _NOT_FOUND}, params=wf_params)},
        "/api/v1/zones/{uid}/workflows/{wf_id}/cancel": {"post": _op(
            "cancel: a confirmed compensating stop, then cancelled",
            {"202": _resp("cancel requested", record), "404": _NOT_FOUND,
             "409": _resp("workflow_not_running", _ERROR)}, params=wf_params)},
        "/api/v1/zones/{uid}/emergency-stop": {"post": _op(
            "emergency stop: latch, fail the running workflow, stop every pump and valve (each confirmed)",
            {"202": _resp("stopped", _ok(_ref("EmergencyStopReport"))), "404": _NOT_FOUND,
             "409": _resp("zone_not_running / zone_not_ready: latched, but the zone cannot stop its plant now",
                          _ERROR)}, body=routes_wf.StopBody, params=_UID_PARAM)},
        "/api/v1/zones/{uid}/emergency-stop/clear": {"post": _op(
            "clear the emergency-stop latch (audited)",
            {"200": _resp("cleared", _ok(_ref("Automation"))), "404": _NOT_FOUND,
             "409": _resp("emergency_stop_not_active", _ERROR)}, body=routes_wf.ClearBody, params=_UID_PARAM)},
        "/api/v1/zones/{uid}/automation": {"get": _op(
            "the zone's automation state: water state, emergency-stop latch, corrections failed closed until",
            {"200": _resp("automation", _ok(_ref("Automation"))), "404": _NOT_FOUND}, params=_UID_PARAM)},
    }


# --- scheduled tasks (hydrovisor/http/routes/tasks.py) -------------------------------------------
def _task_paths() -> dict[str, Any]:
    from hydrovisor.http.routes import tasks as routes_tasks  # noqa: PLC0415 - as for the workflow routes
    from hydrovisor.store.repos.tasks import TaskDetail, TaskRecord  # noqa: PLC0415
    from hydrovisor.tasks.contract import TaskBody  # noqa: PLC0415

    for kind in (TaskRecord, TaskDetail):
        _schema(kind)  # registers each as a component, exactly as the routes encode them
    invalid = _resp("invalid_field: `field` names the bad value (e.g. due_at, payload.duration_s): a naive or "
                    "invalid time, a missing or unknown field, expires_at <= due_at, due_at < scheduled_for, a "
                    "payload that does not fit task_type",
                    {"allOf": [_ERROR, {"type": "object", "required": ["field"],
                                        "properties": {"field": {"type": "string"}}}]})
    task = _ok(_ref("TaskRecord"))
    status_q = {"name": "status", "in": "query", "required": False,
                "schema": {"type": "string", "enum": list(routes_tasks.STATUSES)}, "description": "only this status"}
    return {
        "/api/v1/tasks": {
            "post": _op(
                "submit a task; idempotent by correlation_id for 24 h (or until the task expires, if later). "
                "Received after expires_at it is stored `expired`, after due_at `rejected`: never executed",
                {"201": _resp("stored: accepted, or the fail-fast terminal expired/rejected", task),
                 "200": _resp("the correlation id already names a task with the same values: that task", task),
                 "400": _BAD, "404": _resp("zone_not_found", _ERROR),
                 "409": _resp("idempotency_payload_mismatch: the correlation id names a task with other values "
                              "(`task_id`)", _ERROR),
                 "422": invalid},
                body=TaskBody),
            "get": _op("tasks, newest first (by receipt)",
                       {"200": _resp("tasks", _ok({"type": "array", "items": _ref("TaskRecord")}))},
                       params=[_q("zone_uid", "only this zone"), status_q,
                               _q("since", "received at or after (unix s or RFC 3339 with an offset)"),
                               _q("limit", "max tasks (1-1000, default 100)", kind="integer")]),
        },
        "/api/v1/tasks/{task_id}": {"get": _op(
            "one task with its timeline (events oldest first)",
            {"200": _resp("the task", _ok(_ref("TaskDetail"))), "404": _resp("task_not_found", _ERROR)},
            params=[{"name": "task_id", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": routes_tasks.TASK_ID_PATTERN}}])},
    }
# --- end of the task paths -----------------------------------------------------------------------


def _system_paths() -> dict[str, Any]:
    incident_param = [{"name": "incident_id", "in": "path", "required": True, "schema": {"type": "string"},
                       "description": "e.g. stall-1a2b3c4d, state-…, chaos-…"}]
    chaos_errors = {"403": _resp("not admin, or chaos_disabled", _ERROR)}
    return {
        "/api/v1/system": {"get": _op(
            "system state (RUNNING, DEGRADED, SAFE_MODE, RECOVERING, FATAL), counters, open incidents",
            {"200": _OK})},
        "/api/v1/system/incidents": {"get": _op(
            "incidents, newest first, without task dumps", {"200": _OK, "400": _BAD},
            params=[_q("kind", "loop_stall, state_transition or chaos"), _q("open", "1: only open ones"),
                    _q("limit", "max items (1-500)", kind="integer")])},
        "/api/v1/system/incidents/{incident_id}": {"get": _op(
            "one incident with its task dump (asyncio tasks and thread stacks)",
            {"200": _OK, "400": _BAD, "404": _NOT_FOUND}, params=incident_param)},
        "/admin/chaos/inject": {"post": _op(
            "inject a real fault that ends by itself after `duration` s; answers its incident id",
            {"202": _resp("started"), "400": _BAD, "404": _NOT_FOUND,
             "409": _resp("chaos_already_active or chaos_unsupported", _ERROR), **chaos_errors},
            body=ChaosRequest, admin=True)},
        "/admin/chaos": {"get": _op("the injections running now", {"200": _OK, **chaos_errors}, admin=True)},
    }


@routes.get("/openapi.json")
async def openapi(_: web.Request) -> web.Response:
    """The API description."""
    return web.json_response(DOCUMENT)


_schema(ActorInfo)  # registers ActorInfo and Failure as components, exactly as the route encodes them
DOCUMENT["paths"].update(_device_plane_paths())
DOCUMENT["paths"].update(_dlq_paths())
DOCUMENT["paths"].update(_zone_paths())
DOCUMENT["paths"].update(_system_paths())
DOCUMENT["paths"].update(_workflow_paths())
DOCUMENT["paths"].update(_task_paths())
