"""Submitting a command: the one path every caller takes (the HTTP API, zone workflows).

:meth:`CommandSubmitter.submit` applies DOMAIN §1 and §4 in order: transport sanity (the params would
sign), SAFE_MODE (only fail-safe commands pass), the target (node exists, bound, validated, in the zone,
owns the channel), the pump-safety gate, then the durable ``QUEUED`` row, the tracker actor, and the
wait for ``SENT``. A refusal is a :class:`SubmitRefused` with the HTTP status and machine code the API
answers with; nothing is stored or sent for a refusal before the row.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import msgspec

from hydrovisor.actors.command import Preload
from hydrovisor.commands.outage_stops import OutageStops
from hydrovisor.commands.plane import CommandPlane, default_timeout
from hydrovisor.commands.spawn import StartQueued, start_command_actor
from hydrovisor.commands.waiters import StatusNews
from hydrovisor.process.control import SystemControl
from hydrovisor.protocol import CommandInvalid, CommandStatus, sign_command
from hydrovisor.refusals import Refused
from hydrovisor.store.database import Database
from hydrovisor.store.repos import commands, nodes
from hydrovisor.store.repos.commands import CommandRecord, NewCommand
from hydrovisor.store.repos.nodes import NodeRecord
from hydrovisor.supervisors import ActorSystem, CapacityExceeded
from hydrovisor.zoneplane.runtime import ZoneRuntime
from hydrovisor.zones.safety import fail_safe_allowed, starts_actuator

SYSTEM_CHANNELS = frozenset({"system", "storage_state"})  # firmware channels that accept commands
SUBMIT_WAIT_S = 5.0


class SubmitRequest(msgspec.Struct, frozen=True, kw_only=True):
    """A command to submit (validated for shape by the caller)."""

    cmd: str
    node_uid: str
    channel: str
    params: dict[str, Any] = {}
    cmd_id: str | None = None
    zone_uid: str | None = None
    source: str = "api"
    timeout_s: float | None = None
    trace_id: str | None = None


class Submission(msgspec.Struct, frozen=True, kw_only=True):
    """The stored command after submit; ``created``: this call created it (else the same command again)."""

    row: CommandRecord
    created: bool


class SubmitRefused(Refused):
    """The command was refused or failed to go out (``extra``: the gate's ``reason_code``, ...)."""


class CommandSubmitter:
    """See the module docstring. Loop-side; built once by the app."""

    def __init__(self, *, db: Database, control: SystemControl, zones: ZoneRuntime, plane: CommandPlane,
                 system: ActorSystem, outage_stops: OutageStops) -> None:
        self._db = db
        self._control = control
        self._zones = zones
        self._plane = plane
        self._system = system
        self.outage_stops = outage_stops

    async def submit(self, body: SubmitRequest) -> Submission:
        """Store QUEUED, start the tracker, return once SENT is stored (or the same command again);
        raises :class:`SubmitRefused`."""
        cmd_id = body.cmd_id or f"cmd-{uuid.uuid4().hex}"
        try:
            sign_command(body.cmd, cmd_id, body.params, int(time.time()), "transport-sanity-check")
        except CommandInvalid as exc:
            raise SubmitRefused(400, exc.code, exc.message) from None
        if self._control.actuation_blocked:
            relay_type = await nodes.channel_relay_type(self._db.pool, body.node_uid, body.channel)
            if not fail_safe_allowed(body.cmd, body.params, relay_type):
                state = self._control.state.value
                raise SubmitRefused(503, "safe_mode_active", f"the system is in {state}: only commands that drive "
                                    "an actuator to its fail-safe state are accepted", system_state=state,
                                    headers={"Retry-After": "30"})
        node = await self._check_target(body)
        await self._check_safety(body, node)
        new = NewCommand(cmd_id=cmd_id, zone_uid=node.zone_uid, node_uid=body.node_uid, channel=body.channel,
                         cmd=body.cmd, params=body.params, source=body.source, trace_id=body.trace_id,
                         timeout_s=body.timeout_s or default_timeout(body.params))
        plane = self._plane
        with plane.waiters.watching(cmd_id, lambda news: news.settled_submit) as settled:
            row, created = await commands.insert_queued(self._db.pool, new)
            if not created:
                same = (row.node_uid, row.channel, row.cmd, row.params) == (new.node_uid, new.channel, new.cmd,
                                                                             new.params)
                if not same:
                    raise SubmitRefused(409, "cmd_id_conflict", f"cmd_id {cmd_id} exists with another target or params")
                if row.status == CommandStatus.SEND_FAILED:  # a resend: the old deadline has likely passed
                    row = await commands.rearm(self._db.pool, cmd_id) or await self.row(cmd_id)
                if row.status not in (CommandStatus.QUEUED, CommandStatus.SEND_FAILED):
                    return Submission(row=row, created=False)  # the same command again: no second publish
            try:
                started = await start_command_actor(self._system, plane, cmd_id, Preload(row=row, node=node))
            except StartQueued:
                # the start request is queued at the supervisor: the command is durable (QUEUED) and will
                # be tracked; an error here would invite a retry under a new cmd_id, i.e. a second actuation
                return Submission(row=await self.row(cmd_id), created=created)
            except CapacityExceeded:
                await commands.transition(self._db.pool, cmd_id, CommandStatus.SEND_FAILED, source="server",
                                          error_code="capacity_exceeded", error_message="too many commands in flight")
                raise SubmitRefused(429, "too_many_commands", "too many commands in flight; retry with the same "
                                    "cmd_id", headers={"Retry-After": "1"}) from None
            if not started and not created:
                return Submission(row=row, created=False)  # its tracker is already publishing it
            news = await plane.waiters.wait(settled, SUBMIT_WAIT_S)
        row = await self.news_row(cmd_id, news)
        if news is not None and news.sync_failed:
            raise SubmitRefused(500, "command_state_sync_failed",
                                "the command was published but its SENT status could not be stored; "
                                "its status will be reconciled", command_id=row.cmd_id)
        if row.status == CommandStatus.SEND_FAILED:
            raise SubmitRefused(502, "command_send_failed", f"the command could not be sent: {row.error_code}",
                                command_id=row.cmd_id, error_code=row.error_code)
        return Submission(row=row, created=created)

    async def wait_terminal(self, cmd_id: str, within: float) -> CommandRecord:
        """The command's row once terminal, or as it stands after ``within`` s."""
        waiters = self._plane.waiters
        with waiters.watching(cmd_id, lambda news: news.terminal) as terminal:
            row = await self.row(cmd_id)
            if not row.terminal:
                row = await self.news_row(cmd_id, await waiters.wait(terminal, within))
        return row

    async def row(self, cmd_id: str) -> CommandRecord:
        """The stored command; raises ``SubmitRefused`` 404 ``command_not_found``."""
        row = await commands.get(self._db.pool, cmd_id)
        if row is None:
            raise SubmitRefused(404, "command_not_found", f"command {cmd_id} does not exist")
        return row

    async def news_row(self, cmd_id: str, news: StatusNews | None) -> CommandRecord:
        """The row the news was stored with (no read), else the stored row."""
        return news.row if news is not None and news.row is not None else await self.row(cmd_id)

    async def _check_target(self, body: SubmitRequest) -> NodeRecord:
        """The node must exist, be bound and validated, in the given zone, and own the channel."""
        node, channel_type = await nodes.get_command_target(self._db.pool, body.node_uid, body.channel)
        if node is None:
            raise SubmitRefused(404, "node_not_found", f"node {body.node_uid} does not exist")
        if node.zone_uid is None:
            raise SubmitRefused(409, "node_not_bound", f"node {body.node_uid} is not bound to a zone")
        if not node.validated:
            raise SubmitRefused(409, "node_not_validated", f"node {body.node_uid} is not validated yet")
        if body.zone_uid is not None and body.zone_uid != node.zone_uid:
            raise SubmitRefused(409, "node_zone_mismatch",
                                f"node {body.node_uid} is bound to {node.zone_uid}, not {body.zone_uid}")
        if body.channel not in SYSTEM_CHANNELS and channel_type != "ACTUATOR":
            raise SubmitRefused(400, "channel_not_actuator", f"{body.channel} is not an actuator channel of {node.uid}")
        self.outage_stops.learn(node, body.channel, body.cmd, body.params)
        return node

    async def _check_safety(self, body: SubmitRequest, node: NodeRecord) -> None:
        """The one pump-safety gate (DOMAIN §4), for operators as for automation: a start the zone refuses is
        a 409 with the zone's reason code (recorded by the zone as an event); nothing is stored or sent."""
        if node.zone_uid is None or not starts_actuator(body.cmd, body.params):
            return
        refusal = await self._zones.check_start(node.zone_uid, node_uid=node.uid, channel=body.channel,
                                                cmd=body.cmd, params=body.params, source=body.source)
        if refusal is not None:
            raise SubmitRefused(409, "pump_safety_blocked",
                                f"{body.cmd} on {node.uid}/{body.channel} refused: {refusal.message}",
                                reason_code=refusal.reason_code)
