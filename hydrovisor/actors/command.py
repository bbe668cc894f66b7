"""``CommandActor``: one per pending command (``/commands/<cmd_id>``), a tracker with a deadline.

Lifecycle (DOMAIN §1, PROTOCOL §5-§6): the row is already QUEUED when the actor starts. It signs
and publishes (up to 3 attempts, 0.5 s and 1 s apart, re-signed each time so ``ts`` is fresh),
stores SENT — in the publishing coroutine itself, on the loop, as a write in flight — or
SEND_FAILED with an infra alert, applies the node's ACK and the *first*
terminal reply, and persists TIMEOUT when the deadline passes. Every write is the repository's
guarded transition, so late, duplicate or contradicting replies are recorded but never applied,
whoever sends them. Reports that arrive while a write is in flight (a node's ACK and DONE come
within a millisecond or two) are stored together by the next one, in one transaction, in order.
A failed write is retried on the next tick; the deadline still holds.

Once SENT is stored, the reply path (``hydrovisor.commands.replies``) usually stores the node's
replies itself on the loop (the same guarded writes) and tells the actor only what was applied
(:class:`RepliesStored`): two thread hops less per reply. A reply it hands here instead
(:class:`DeviceReply`) carries a slot the actor sets once the write holding it commits, so the
reply path knows when the reply is durable. The actor still owns the deadline, its own writes
(SENT, SEND_FAILED, TIMEOUT) and stopping once the row is terminal; a race between its TIMEOUT and
a reply stored on the loop is settled by the guards (first wins).

A restarted incarnation rebuilds from the row: a SENT/ACK command is never published again, a
QUEUED/SEND_FAILED one is (same cmd_id: the node's cache dedupes), and a deadline already past
becomes TIMEOUT at once. The actor stops (normal exit, not restarted) once the row is terminal.

One exception: a plain stop (``set_relay`` off) that nothing has answered ``RETRANSMIT_S`` after it was
published goes out again, re-signed, up to ``RETRANSMITS`` times before its deadline. A stop published
while its node was reconnecting (connected, not yet subscribed) is lost on the broker, and a pump left
running must not wait for the command timeout; a stop is always safe to repeat (the node's cache answers
a copy it has seen, and a stop it has not seen can only stop).

The actor never blocks (it runs pooled). A new command's first incarnation starts from the row and
node its submitter read (:class:`Preload`); any other one (a restart, an adoption) starts at once and
*loads* them as a continuation (:meth:`ContinuingActor.then`): whatever arrives meanwhile (replies,
stored news) is stashed and handled once the row is in, in order. So is what arrives while the row is
read again after a server status was refused (the row says what became of the command).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import msgspec

from hydrovisor.commands.outage_stops import is_plain_stop
from hydrovisor.commands.plane import PUBLISH_ATTEMPTS, PUBLISH_BACKOFF_S, CommandPlane, NodeNotConnected
from hydrovisor.commands.waiters import StatusNews
from hydrovisor.protocol import TERMINAL, CommandResponse, CommandStatus, channel_topic, encode_command
from hydrovisor.runtime.bridge import LoopReply, Outcome
from hydrovisor.runtime.timers import Timer
from hydrovisor.store.repos import commands, events, nodes
from hydrovisor.store.repos.commands import CommandRecord, Report
from hydrovisor.store.repos.nodes import NodeRecord
from hydrovisor.supervisors import ActorContext, ContinuingActor

log = logging.getLogger(__name__)

DbCall = Callable[[asyncpg.Pool], Coroutine[Any, Any, Any]]
S = CommandStatus
# loading the row (and its node), or reading it again, not done by then: OutcomeUnknown, a crash (the
# actor restarts and loads again); the bound of a blocking bridge call's two waits
LOAD_WITHIN_S = 20.0
RETRANSMIT_S = 1.0
RETRANSMITS = 3


class Preload(msgspec.Struct, frozen=True):
    """The row and node the submitter just read: spares a new command's first incarnation two
    database round trips in ``on_start`` (the supervisor starts children one at a time)."""

    row: CommandRecord
    node: NodeRecord


class DeviceReply(msgspec.Struct, frozen=True):
    """A ``command_response`` for this command; ``stored`` is set once the write holding it commits
    (applied or recorded as not applied), and failed if this incarnation stops without storing it."""

    response: CommandResponse
    stored: LoopReply | None = None

    def undeliverable(self, error: BaseException) -> None:
        """The mailbox closed with this reply in it (its actor stopped after its terminal): the router must not
        acknowledge it, and must not wait ``STORE_WAIT_S`` for a write that will never come (holding the node's
        later messages meanwhile)."""
        if self.stored is not None:
            lost = ReplyLost(f"command {self.response.cmd_id}: {error}")
            self.stored.set_exception((ReplyLost, lost, None))


class RepliesStored(msgspec.Struct, frozen=True):
    """The reply router stored replies of this command: the rows it applied, in order."""

    rows: list[CommandRecord]


def device_report(response: CommandResponse) -> Report:
    """The status report a node's reply asks for (``message`` kept in the details)."""
    details = dict(response.details or {})
    if response.message:
        details.setdefault("message", response.message)
    return Report(response.status, "device", error_code=response.error_code, error_message=response.error_message,
                  details=details or None)


class ReplyLost(Exception):
    """The actor stopped with a device reply not stored yet (a crash, or a stop before its write)."""


class _Publish(msgspec.Struct, frozen=True):
    attempt: int


class _Published(msgspec.Struct, frozen=True):
    attempt: int
    outcome: Outcome  # chained: once published, its value is the SENT write's Outcome
    chained: bool = False


class _Retransmit(msgspec.Struct, frozen=True):
    count: int


class _Retransmitted(msgspec.Struct, frozen=True):
    outcome: Outcome


class _Stored(msgspec.Struct, frozen=True):
    reports: list[Report]
    outcome: Outcome


class _Deadline(msgspec.Struct, frozen=True):
    pass


class _Tick(msgspec.Struct, frozen=True):
    pass


class CommandActor(ContinuingActor):
    """See the module docstring."""

    def __init__(self, ctx: ActorContext, *, cmd_id: str, plane: CommandPlane, tick: float = 1.0,
                 preload: Preload | None = None) -> None:
        super().__init__(ctx)
        self.cmd_id = cmd_id
        self._preload = preload
        self._plane = plane
        self._tick_interval = tick
        self._row: CommandRecord | None = None
        self._secret = ""
        self._topic = ""
        # status writes in arrival order; whatever queued up during a write goes in the next one, as
        # one transaction (a failed batch stays queued and is retried whole)
        self._writes: collections.deque[Report] = collections.deque()
        self._writing = False
        self._finished = False
        self._sync_failure_told = False
        self._sent_queued = False  # SENT is stored or on its way
        self._timers: list[Timer] = []
        self._reply_slots: list[tuple[Report, LoopReply]] = []  # device reports whose router awaits their write
        self._answered = False  # the node has replied (only then is a stop not retransmitted)

    # lifecycle -------------------------------------------------------------------------------

    def on_start(self) -> None:
        preload = self._preload
        self._preload = None
        if preload is not None:
            self._begin(preload.row, preload.node)
            return
        cmd_id, db = self.cmd_id, self._plane.db

        async def load() -> tuple[CommandRecord | None, NodeRecord | None]:
            row = await db.run(lambda pool: commands.get(pool, cmd_id))
            if row is None or _closed(row):
                return row, None
            return row, await db.run(lambda pool: nodes.get_node(pool, row.node_uid))

        self.then("load", load(), self._loaded, within=LOAD_WITHIN_S)

    def _loaded(self, outcome: Outcome) -> None:
        if outcome.error is not None:
            raise outcome.error  # a crash: restarted, the next incarnation loads again
        row, node = outcome.value
        self._begin(row, node)

    def _begin(self, row: CommandRecord | None, node: NodeRecord | None) -> None:
        """Track the command from its row (and its node's, unless the row is terminal already)."""
        if row is None:
            raise LookupError(f"command {self.cmd_id} has no row")
        self._row = row
        self._sent_queued = row.status not in (S.QUEUED, S.SEND_FAILED)
        if _closed(row):
            self.stop()
            return
        # the tick retries failed writes: every path below, SEND_FAILED for an unbound node included,
        # may need it, or a failed write would leave the row open and this actor holding its slot
        self._timers.append(self.tell_self_every(self._tick_interval, _Tick()))
        view = self._plane.registry.get(row.node_uid)
        gh = view.gh_uid if view is not None else None
        if node is None or gh is None or node.zone_uid is None:
            self._store(S.SEND_FAILED, error_code="node_not_bound",
                        error_message=f"node {row.node_uid} is not bound to a zone")
            return
        self._secret = node.node_secret
        self._topic = channel_topic(gh, node.zone_uid, row.node_uid, row.channel, "command")
        self._timers.append(self.tell_self_after(max(0.0, row.deadline_at - time.time()), _Deadline()))
        if row.status in (S.QUEUED, S.SEND_FAILED):
            self.actor_ref.tell(_Publish(1))

    def on_stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for _, slot in self._reply_slots:  # the router must not acknowledge what this incarnation lost
            slot.set_exception((ReplyLost, ReplyLost(f"command {self.cmd_id}: actor stopped before storing it"), None))
        self._reply_slots.clear()
        super().on_stop()

    def on_failure(self, *_: Any) -> None:
        self.on_stop()

    def on_receive(self, message: Any) -> Any:
        if self.continuing(message):
            return None
        if isinstance(message, _Publish):
            self._publish(message.attempt)
        elif isinstance(message, _Published):
            self._published(message)
        elif isinstance(message, DeviceReply):
            self._reply(message)
        elif isinstance(message, RepliesStored):
            self._replies_stored(message.rows)
        elif isinstance(message, _Stored):
            self._stored(message)
        elif isinstance(message, _Deadline):
            self._store(S.TIMEOUT, error_code="command_timeout",
                        error_message="no terminal reply before the deadline")
        elif isinstance(message, _Tick):
            self._next_write()
        elif isinstance(message, _Retransmit):
            self._retransmit(message.count)
        elif isinstance(message, _Retransmitted):
            if not message.outcome.ok:
                log.info("command %s: retransmission not published (%s)", self.cmd_id, message.outcome.error,
                         extra={"event": "command_retransmit_failed", "cmd_id": self.cmd_id})
        else:
            return super().on_receive(message)
        return None

    # publishing ------------------------------------------------------------------------------

    def _publish(self, attempt: int) -> None:
        row = self._row
        if row is None or CommandStatus(row.status) not in (S.QUEUED, S.SEND_FAILED):
            return
        payload = encode_command(row.cmd, row.cmd_id, row.params, int(self._plane.clock.now()), self._secret)
        if self._sent_queued or self._writing:
            # SENT is queued already (a reply proved an earlier attempt arrived), or another write is
            # in flight and SENT must wait its turn: publish only
            self.pipe_to_self(self._plane.publish(self._topic, payload), lambda o: _Published(attempt, o))
            return
        # the usual case: the publishing coroutine stores SENT itself, a write in flight at the head
        # of the queue; replies and other reports queue behind it
        self._sent_queued = self._writing = True
        self._writes.appendleft(Report(S.SENT, "server"))
        self.pipe_to_self(self._plane.publish_and_store_sent(self.cmd_id, self._topic, payload),
                          lambda o: _Published(attempt, o, chained=True))

    def _published(self, msg: _Published) -> None:
        if msg.chained:
            self._writing = False
            if msg.outcome.ok:
                self._stored(_Stored([self._writes[0]], msg.outcome.value))
                return
            if not any(report.source == "device" for report in self._writes):
                self._writes.popleft()  # nothing went out: no SENT yet
                self._sent_queued = False
            # else a reply queued meanwhile proves an attempt arrived: SENT stays first
            self._next_write()
        elif msg.outcome.ok:
            self._ensure_sent()
            return
        error = msg.outcome.error
        log.warning("command %s publish attempt %d failed: %s", self.cmd_id, msg.attempt, error,
                    extra={"event": "command_publish_failed", "cmd_id": self.cmd_id})
        if msg.attempt < PUBLISH_ATTEMPTS:
            self._timers.append(self.tell_self_after(PUBLISH_BACKOFF_S[msg.attempt - 1], _Publish(msg.attempt + 1)))
            return
        code = NodeNotConnected.code if isinstance(error, NodeNotConnected) else "publish_failed"
        self._store(S.SEND_FAILED, error_code=code, error_message=str(error))
        row = self._row
        zone = row.zone_uid if row is not None else None
        self.ctx.system.bridge.pipe(self._plane.db.run(lambda pool: events.raise_alert(
            pool, zone_uid=zone, node_uid=row.node_uid if row else None, source="infra",
            code="infra_command_send_failed", alert_type="Command could not be sent",
            details={"cmd_id": self.cmd_id, "error_code": code}, dedupe_key=self.cmd_id)), _alert_outcome)

    # replies ---------------------------------------------------------------------------------

    def _ensure_sent(self) -> None:
        if not self._sent_queued:
            self._sent_queued = True
            self._store(S.SENT)

    def _reply(self, reply: DeviceReply) -> None:
        # a reply proves the publish worked, even if the broker's acknowledgement is still on its
        # way to us: SENT goes first, so the stored history is QUEUED, SENT, ACK, terminal
        self._answered = True
        self._ensure_sent()
        report = device_report(reply.response)
        self._writes.append(report)
        if reply.stored is not None:
            self._reply_slots.append((report, reply.stored))
        self._next_write()

    def _replies_stored(self, rows: list[CommandRecord]) -> None:
        self._answered = True
        for row in rows:
            self._applied(row)
        if self._finished and not self._writes:
            self.stop()

    def _retransmit(self, count: int) -> None:
        """Publish the unanswered stop again (see the module docstring)."""
        row = self._row
        if row is None or self._answered or self._finished or row.status != S.SENT \
                or time.time() >= row.deadline_at:
            return
        log.info("command %s: stop unanswered after %.0f s; published again (%d)", self.cmd_id,
                 count * RETRANSMIT_S, count, extra={"event": "command_retransmitted", "cmd_id": self.cmd_id})
        payload = encode_command(row.cmd, row.cmd_id, row.params, int(self._plane.clock.now()), self._secret)
        self.pipe_to_self(self._plane.publish(self._topic, payload), _Retransmitted)
        if count < RETRANSMITS:
            self._timers.append(self.tell_self_after(RETRANSMIT_S, _Retransmit(count + 1)))

    # storing ---------------------------------------------------------------------------------

    def _store(self, target: CommandStatus, **fields: Any) -> None:
        self._writes.append(Report(target, "server", **fields))
        self._next_write()

    def _next_write(self) -> None:
        if self._writing or not self._writes:
            return
        batch = list(self._writes)
        self._writing = True
        self.pipe_to_self(self._plane.store(self.cmd_id, batch), lambda o: _Stored(batch, o))

    def _stored(self, msg: _Stored) -> None:
        self._writing = False
        if not msg.outcome.ok:
            targets = ", ".join(report.target for report in msg.reports)
            log.error("command %s: %s not stored (%s); retrying", self.cmd_id, targets, msg.outcome.error,
                      extra={"event": "command_state_sync_failed", "cmd_id": self.cmd_id})
            if any(r.target is S.SENT for r in msg.reports) and not self._sync_failure_told:
                self._sync_failure_told = True  # the submitter gets command_state_sync_failed once
                self._plane.waiters.announce(StatusNews(self.cmd_id, S.QUEUED, sync_failed=True,
                                                        error_code="command_state_sync_failed"))
            return  # stays queued; the next tick tries again
        rows: list[CommandRecord | None] = msg.outcome.value
        if self._reply_slots:
            self._release_slots(msg.reports)
        refused = False
        for report, row in zip(msg.reports, rows, strict=True):
            self._writes.popleft()
            if row is not None:
                self._applied(row)
            elif report.source == "server" and report.target in TERMINAL:
                refused = True  # e.g. a re-send failed again: the row already says what became of it
        if refused:
            self._settle_from_row()
        else:
            self._written()

    def _written(self) -> None:
        if self._finished and not self._writes:
            self.stop()
        self._next_write()

    def _release_slots(self, written: list[Report]) -> None:
        waiting = []
        for report, slot in self._reply_slots:
            if any(report is done for done in written):
                slot.set(None)
            else:
                waiting.append((report, slot))
        self._reply_slots = waiting

    def _applied(self, row: CommandRecord) -> None:
        # the news went out on the loop with the write (CommandPlane.store, the reply router)
        first_sent = row.status == S.SENT and (self._row is None or self._row.status != S.SENT)
        self._row = row
        if first_sent and is_plain_stop(row.cmd, row.params):
            self._timers.append(self.tell_self_after(RETRANSMIT_S, _Retransmit(1)))
        log.info("command %s -> %s", self.cmd_id, row.status,
                 extra={"event": "command_status", "cmd_id": self.cmd_id, "status": row.status,
                        "node_uid": row.node_uid, "zone_id": row.zone_uid})
        if CommandStatus(row.status) in TERMINAL:
            self._finished = True

    def _settle_from_row(self) -> None:
        """Read the row again (a continuation: what arrives meanwhile waits for it), then go on."""
        cmd_id = self.cmd_id
        self.then("row", self._plane.db.run(lambda pool: commands.get(pool, cmd_id)), self._settled,
                  within=LOAD_WITHIN_S)

    def _settled(self, outcome: Outcome) -> None:
        if outcome.error is not None:
            raise outcome.error  # a crash: restarted, the next incarnation reads the row
        row: CommandRecord | None = outcome.value
        if row is not None:
            self._row = row
            self._plane.waiters.announce(StatusNews.stored(row))
            if CommandStatus(row.status) in TERMINAL:
                self._finished = True
        self._written()


def _closed(row: CommandRecord) -> bool:
    """Nothing left to track (SEND_FAILED is terminal, but a new incarnation sends it again)."""
    return row.terminal and row.status != S.SEND_FAILED


def _alert_outcome(outcome: Outcome) -> None:
    if not outcome.ok:  # the SEND_FAILED row itself is what matters; the alert is best effort
        log.warning("infra_command_send_failed alert not stored: %s", outcome.error,
                    extra={"event": "alert_not_stored"})
