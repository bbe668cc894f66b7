"""``NodeActor``: one per registered node (``/nodes/<uid>``).

Owns the node's lifecycle (PROTOCOL §7): liveness (offline after ``offline_after`` s of silence,
or the LWT of its current session — the router drops the will of a session already replaced),
the bind flow (pending bind -> config push with the node secret on the temp topic ->
``config_report`` from the new namespace completes it; expiry), unbind, config reports
(stored without secrets, channels upserted), events (zone timeline) and error reports (stored;
level ERROR raises an alert). State is rebuilt from PostgreSQL on (re)start: the actor starts at
once from the registry view (loaded for all nodes by one query at process start) and its row
arrives as a message, so a fleet of thousands starts within its supervisor's start timeout whatever
the database does. A failed database write never crashes the actor: it is kept and retried on the
next liveness tick (bounded).

The actor never blocks (it runs pooled): a bind, an unbind and a bind completed by the node's
``config_report`` are database writes and a config push whose result the actor needs before it goes
on. Each runs as one coroutine on the loop (:meth:`ContinuingActor.then`); the ask is answered when
its outcome lands, and the messages that arrive meanwhile wait (stashed) and are handled after it, in
order, as if the handler had waited. A failure is what it was when the handler waited: the asker gets
the exception and the actor restarts from its row.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import msgspec

from hydrovisor.devices.plane import DevicePlane
from hydrovisor.devices.registry import NodeView
from hydrovisor.protocol import (
    TEMP_GH,
    TEMP_ZONE,
    ChannelConfig,
    ConfigPush,
    ConfigReport,
    DeviceMessage,
    ErrorReport,
    Event,
    Heartbeat,
    Lwt,
    NodeHello,
    ParsedTopic,
    SafeLimits,
    Status,
    encode_config_push,
    node_topic,
    temp_topic,
)
from hydrovisor.runtime.bridge import Outcome
from hydrovisor.runtime.timers import Timer
from hydrovisor.store.repos import events, nodes
from hydrovisor.store.repos.nodes import ChannelRecord, NodeRecord
from hydrovisor.supervisors import ActorContext, ContinuingActor, Rejection

log = logging.getLogger(__name__)

# a database call, given the pool on the loop (actors never touch the pool themselves)
DbWrite = Callable[[asyncpg.Pool], Coroutine[Any, Any, Any]]
MAX_PENDING_WRITES = 200
# a bind, an unbind or a completed bind not done by then raises OutcomeUnknown (the actor restarts):
# the bound of the two waits a blocking bridge call allowed (10 s to start, 10 s more to finish)
CONTINUATION_WITHIN_S = 20.0
# content errors (bad value, constraint, oversized key), as opposed to an outage: retrying cannot help
_REFUSED_FOR_GOOD = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.ProgramLimitExceededError,
                     UnicodeError, ValueError, OverflowError)


class FromDevice(msgspec.Struct, frozen=True):
    """A decoded device message routed to this node."""

    message: DeviceMessage
    topic: ParsedTopic
    received_at: float


class Bind(msgspec.Struct, frozen=True):
    """Ask: bind to ``zone_uid`` (of ``gh_uid``); replies with the node's new view."""

    zone_uid: str
    gh_uid: str


class Unbind(msgspec.Struct, frozen=True):
    """Ask: push the temp-namespace config and forget the binding."""


class BindRefused(Rejection):
    """The bind or unbind cannot be done in the node's current state."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class _Tick(msgspec.Struct, frozen=True):
    pass


class _BindExpired(msgspec.Struct, frozen=True):
    zone_uid: str


class _Loaded(msgspec.Struct, frozen=True):
    outcome: Outcome


class _Written(msgspec.Struct, frozen=True):
    what: str
    retry: DbWrite | None
    outcome: Outcome


class NodeActor(ContinuingActor):
    """See the module docstring."""

    def __init__(self, ctx: ActorContext, *, uid: str, plane: DevicePlane) -> None:
        super().__init__(ctx)
        self.uid = uid
        self._plane = plane
        self._node: NodeRecord | None = None
        self._online = False
        self._last_seen: float | None = None
        self._persisted_seen: float | None = None
        self._heartbeat: dict[str, Any] | None = None
        self._pending: collections.deque[tuple[str, DbWrite]] = collections.deque()
        self._timers: list[Timer] = []
        self._loading = False

    # lifecycle -------------------------------------------------------------------------------

    def on_start(self) -> None:
        self._timers.append(self.tell_self_every(self._plane.liveness_interval, _Tick()))
        row = self._plane.boot_rows.take(self.uid)
        if row is not None:  # the first incarnation after start: its row came with the whole fleet's
            self._loaded(Outcome(value=row))
        else:
            self._load()

    def _load(self) -> None:
        """Ask for the node's row without waiting for it. Until it arrives (and while PostgreSQL is
        unreachable) the actor runs on the registry view (routing, liveness) and asks again every
        tick, so neither a slow database nor a large fleet turns node (re)starts into an escalation."""
        if self._loading:
            return
        self._loading = True
        self.pipe_to_self(self._plane.db.run(lambda pool: nodes.get_node(pool, self.uid)), _Loaded)

    def _loaded(self, outcome: Outcome) -> None:
        self._loading = False
        if not outcome.ok:
            log.warning("node %s: row not loaded yet (%s); retrying", self.uid, outcome.error,
                        extra={"event": "node_load_deferred", "node_uid": self.uid})
            return
        node: NodeRecord | None = outcome.value
        if node is None:
            raise LookupError(f"node {self.uid} is not in the registry")
        self._node = node
        # traffic handled while the row was on its way is newer than the row
        self._online = self._online or node.online
        self._last_seen = max(node.last_seen_at or 0.0, self._last_seen or 0.0) or None
        self._persisted_seen = node.last_seen_at
        if self._heartbeat is None:
            self._heartbeat = node.heartbeat
        self._publish_view()
        if node.pending_zone_uid is not None and node.pending_since is not None:
            left = max(0.0, node.pending_since + self._plane.bind_expiry - time.time())
            self._timers.append(self.tell_self_after(left, _BindExpired(node.pending_zone_uid)))

    def on_stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        super().on_stop()

    def on_failure(self, *_: Any) -> None:
        self.on_stop()

    # messages --------------------------------------------------------------------------------

    def on_receive(self, message: Any) -> Any:
        if self.continuing(message):
            return None
        if isinstance(message, FromDevice):
            self._from_device(message)
        elif isinstance(message, _Tick):
            self._tick()
        elif isinstance(message, Bind):
            self._bind(message)  # answered once its writes are done
        elif isinstance(message, Unbind):
            self._unbind()
        elif isinstance(message, _BindExpired):
            self._bind_expired(message.zone_uid)
        elif isinstance(message, _Written):
            self._written(message)
        elif isinstance(message, _Loaded):
            self._loaded(message.outcome)
        else:
            return super().on_receive(message)
        return None

    def _from_device(self, msg: FromDevice) -> None:
        body = msg.message
        if isinstance(body, Lwt):
            self._lwt()
            return
        self._seen(msg.received_at)
        if isinstance(body, Heartbeat):
            self._heartbeat = {k: v for k, v in msgspec.structs.asdict(body).items() if v is not None}
        elif isinstance(body, ConfigReport):
            self._config_report(body, msg.topic)
        elif isinstance(body, Event):
            self._event(body.event_code, {**body.payload, "channel": msg.topic.channel})
        elif isinstance(body, ErrorReport):
            self._error(body)
        elif isinstance(body, Status) and body.is_safe_mode:
            self._event("NODE_SAFE_MODE", {"reason": body.reason})
        elif isinstance(body, NodeHello):
            log.info("node %s said hello again", self.uid, extra={"node_uid": self.uid})

    # liveness --------------------------------------------------------------------------------

    def _seen(self, at: float) -> None:
        self._last_seen = max(self._last_seen or 0.0, at)
        if not self._online:
            self._set_online(True, "traffic")

    def _lwt(self) -> None:
        # the router already dropped the will of a session the device has replaced
        if self._online:
            self._set_online(False, "lwt")

    def _tick(self) -> None:
        if self._node is None:
            self._load()
        routed = self._plane.registry.last_seen(self.uid)  # telemetry is counted by the router
        if routed is not None and routed > (self._last_seen or 0.0):
            self._seen(routed)
        now = time.time()
        if self._online and (self._last_seen is None or now - self._last_seen > self._plane.offline_after):
            self._set_online(False, f"silent for over {self._plane.offline_after:.0f}s")
        elif self._last_seen and now - (self._persisted_seen or 0.0) > self._plane.persist_seen_every:
            self._persist_liveness()
        if self._pending:
            what, write = self._pending.popleft()
            self._write(what, write)

    def _set_online(self, online: bool, reason: str) -> None:
        self._online = online
        self._persist_liveness()
        zone = self._zone()
        kind = "NODE_ONLINE" if online else "NODE_OFFLINE"
        log.info("node %s is %s (%s)", self.uid, "online" if online else "offline", reason,
                 extra={"event": kind.lower(), "node_uid": self.uid, "zone_id": zone})
        self._event(kind, {"reason": reason})
        if zone is not None:
            self._plane.on_liveness(zone, self.uid, online, time.time())
        if online:
            self._write("resolve_offline_alert", lambda pool: events.resolve_alert(
                pool, zone_uid=zone, code="infra_node_offline", dedupe_key=self.uid))
        else:
            self._write("offline_alert", lambda pool: events.raise_alert(
                pool, zone_uid=zone, node_uid=self.uid, source="infra", code="infra_node_offline",
                alert_type="Node offline", details={"node_uid": self.uid, "reason": reason},
                dedupe_key=self.uid))

    def _persist_liveness(self) -> None:
        online, seen, heartbeat = self._online, self._last_seen, self._heartbeat
        self._persisted_seen = seen
        self._write("liveness", lambda pool: nodes.record_liveness(
            pool, self.uid, online=online, last_seen_at=seen, heartbeat=heartbeat))

    # binding ---------------------------------------------------------------------------------

    def _bind(self, msg: Bind) -> None:
        """Pending bind stored, then the config (with the node's secret) pushed; answered with the view."""
        node = self._require_node()
        if node.zone_uid == msg.zone_uid:
            raise BindRefused("node_already_bound", f"node {self.uid} is already bound to {msg.zone_uid}")
        uid, db, plane, topic = self.uid, self._plane.db, self._plane, self._config_topic()

        async def bind() -> None:
            channels = await db.run(lambda pool: nodes.list_channels(pool, uid))
            push = ConfigPush(node_id=uid, gh_uid=msg.gh_uid, zone_uid=msg.zone_uid, type=node.type,
                              channels=tuple(_channel_config(c) for c in channels), node_secret=node.node_secret)
            await db.run(lambda pool: nodes.set_pending_bind(pool, uid, msg.zone_uid))
            await plane.publish(topic, encode_config_push(push))

        def bound(outcome: Outcome) -> NodeView:
            _raise_error(outcome)
            self._node = msgspec.structs.replace(node, pending_zone_uid=msg.zone_uid, pending_since=time.time(),
                                                 state="ASSIGNED")
            self._timers.append(self.tell_self_after(self._plane.bind_expiry, _BindExpired(msg.zone_uid)))
            self._event("NODE_BIND_REQUESTED", {"target_zone_uid": msg.zone_uid}, zone=msg.zone_uid)
            return self._publish_view()

        self.then("bind", bind(), bound, within=CONTINUATION_WITHIN_S, reply=True)

    def _unbind(self) -> None:
        """The temp-namespace config pushed, then the binding forgotten; answered with the view."""
        node = self._require_node()
        if node.zone_uid is None and node.pending_zone_uid is None:
            raise BindRefused("node_not_bound", f"node {self.uid} is not bound")
        push = ConfigPush(node_id=node.hardware_id, gh_uid=TEMP_GH, zone_uid=TEMP_ZONE, type=node.type,
                          channels=(), node_secret=node.node_secret)
        uid, db, plane, topic = self.uid, self._plane.db, self._plane, self._config_topic()

        async def unbind() -> None:
            await plane.publish(topic, encode_config_push(push))
            await db.run(lambda pool: nodes.unbind(pool, uid))

        def unbound(outcome: Outcome) -> NodeView:
            _raise_error(outcome)
            self._node = msgspec.structs.replace(node, zone_uid=None, pending_zone_uid=None, pending_since=None,
                                                 validated=False, state="REGISTERED")
            self._event("NODE_UNBOUND", {}, zone=node.zone_uid)
            return self._publish_view()

        self.then("unbind", unbind(), unbound, within=CONTINUATION_WITHIN_S, reply=True)

    def _bind_expired(self, zone_uid: str) -> None:
        node = self._node
        if node is None or node.pending_zone_uid != zone_uid:
            return
        self._write("bind_expired", lambda pool: nodes.clear_pending_bind(pool, self.uid))
        self._node = msgspec.structs.replace(node, pending_zone_uid=None, pending_since=None,
                                             state="REGISTERED" if node.zone_uid is None else node.state)
        self._event("NODE_BIND_EXPIRED", {"target_zone_uid": zone_uid}, zone=zone_uid)
        self._publish_view()

    def _config_report(self, report: ConfigReport, topic: ParsedTopic) -> None:
        node = self._require_node()
        channels = [_channel_record(c) for c in report.channels]
        data = msgspec.to_builtins(report)

        def store(pool: asyncpg.Pool) -> Any:
            return nodes.store_config_report(pool, self.uid, data, channels, report.fw_version)

        pending = node.pending_zone_uid
        if not (pending is not None and not topic.is_temp and topic.zone == pending
                and report.zone_uid in (None, pending)):
            self._write("config_report", store)
        else:
            # a bound node's channels are stored before it counts as bound: whoever sees it validated
            # (the API, its zone resolving roles) sees what it reported
            async def store_then_bind(pool: asyncpg.Pool) -> None:
                await store(pool)
                await nodes.complete_bind(pool, self.uid, pending)

            def completed(outcome: Outcome) -> None:
                _raise_error(outcome)
                self._node = msgspec.structs.replace(node, zone_uid=pending, pending_zone_uid=None,
                                                     pending_since=None, validated=True, state="ACTIVE")
                self._event("NODE_BOUND", {"gh_uid": topic.gh}, zone=pending)
                self._publish_view()

            self.then("bind completion", self._plane.db.run(store_then_bind), completed,
                      within=CONTINUATION_WITHIN_S)

    # events and errors -----------------------------------------------------------------------

    def _event(self, event_type: str, details: dict[str, Any], zone: str | None = None) -> None:
        zone_uid = zone or self._zone()
        self._write("zone_event", lambda pool: events.add_zone_event(pool, zone_uid, self.uid, event_type, details))

    def _error(self, report: ErrorReport) -> None:
        level = (report.level or "ERROR").upper()
        self._write("node_error", lambda pool: events.add_node_error(
            pool, node_uid=self.uid, level=level, component=report.component, error_code=report.error_code,
            message=report.message, details=report.details or {}, ts=report.ts))
        if level == "ERROR":
            zone = self._zone()
            code = report.error_code or "unknown"
            self._write("node_error_alert", lambda pool: events.raise_alert(
                pool, zone_uid=zone, node_uid=self.uid, source="infra", code="infra_node_error",
                alert_type="Node error", details={"error_code": code, "message": report.message},
                dedupe_key=f"{self.uid}:{code}"))

    # helpers ---------------------------------------------------------------------------------

    def _write(self, what: str, write: DbWrite) -> None:
        self.pipe_to_self(self._plane.db.run(write), lambda outcome: _Written(what, write, outcome))

    def _written(self, msg: _Written) -> None:
        if msg.outcome.ok and msg.what == "config_report" and (zone := self._zone()) is not None:
            self._plane.on_channels_changed(zone)  # the zone's roles are resolved from its nodes' channels
        if msg.outcome.ok or msg.retry is None:
            return
        if isinstance(msg.outcome.error, _REFUSED_FOR_GOOD):
            # what PostgreSQL refuses for its content fails again on every retry: dropped, loudly
            log.error("node %s: %s refused by the database, not retried: %s", self.uid, msg.what, msg.outcome.error,
                      extra={"event": "node_write_refused", "node_uid": self.uid})
            return
        log.warning("node %s: %s not stored yet (%s); will retry", self.uid, msg.what, msg.outcome.error,
                    extra={"event": "node_write_failed", "node_uid": self.uid})
        if len(self._pending) < MAX_PENDING_WRITES:
            self._pending.append((msg.what, msg.retry))
        else:
            log.error("node %s: dropping %s after %d queued failed writes", self.uid, msg.what,
                      MAX_PENDING_WRITES, extra={"event": "node_write_dropped", "node_uid": self.uid})

    def _require_node(self) -> NodeRecord:
        if self._node is None:
            raise BindRefused("node_not_loaded", f"node {self.uid} is not loaded")
        return self._node

    def _zone(self) -> str | None:
        if self._node is not None:
            return self._node.zone_uid
        view = self._plane.registry.get(self.uid)
        return view.zone_uid if view is not None else None

    def _config_topic(self) -> str:
        node = self._require_node()
        if node.zone_uid is None:
            return temp_topic(node.hardware_id, "config")
        gh = self._plane.registry.greenhouse_of(node.zone_uid) or TEMP_GH
        return node_topic(gh, node.zone_uid, self.uid, "config")

    def _publish_view(self) -> NodeView:
        node = self._require_node()
        view = NodeView(uid=self.uid, hardware_id=node.hardware_id, zone_uid=node.zone_uid,
                        gh_uid=self._plane.registry.greenhouse_of(node.zone_uid) if node.zone_uid else None,
                        validated=node.validated, pending_zone_uid=node.pending_zone_uid)
        old = self._plane.registry.get(self.uid)
        self._plane.registry.put(view)
        if old != view:
            self._plane.on_binding_changed(view)
        return view



def _raise_error(outcome: Outcome) -> None:
    """A failed write fails its continuation as it failed the handler that waited for it: the asker
    gets the error and the actor crashes (restarted, it reloads its row: the write may have happened)."""
    if outcome.error is not None:
        raise outcome.error


def _channel_record(channel: ChannelConfig) -> ChannelRecord:
    limits = msgspec.to_builtins(channel.safe_limits) if channel.safe_limits is not None else None
    # the schema accepts only the documented values; anything else the node says is not kept
    kind = channel.type if channel.type in ("SENSOR", "ACTUATOR") else "SENSOR"
    relay = channel.relay_type if channel.relay_type in ("NO", "NC") else None
    return ChannelRecord(name=channel.name, type=kind, metric=channel.metric, unit=channel.unit,
                         actuator_type=channel.actuator_type, relay_type=relay, safe_limits=limits,
                         ml_per_second=channel.ml_per_second)


def _channel_config(channel: ChannelRecord) -> ChannelConfig:
    limits = msgspec.convert(channel.safe_limits, SafeLimits) if channel.safe_limits else None
    return ChannelConfig(name=channel.name, type=channel.type, metric=channel.metric, unit=channel.unit,
                         actuator_type=channel.actuator_type, relay_type=channel.relay_type,
                         safe_limits=limits, ml_per_second=channel.ml_per_second)
