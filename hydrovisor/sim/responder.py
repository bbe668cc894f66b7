"""How a simulated node answers one command (PROTOCOL §5): admission, the ``cmd_id`` cache, ACK and the
terminal reply on ``{channel}/command_response`` with ``ts`` in milliseconds, and the reply faults.

- rejected by ``commands.check_command`` → one terminal (``INVALID``/``ERROR``), no ACK, not cached;
- known ``cmd_id`` (firmware cache, 128 entries / 5 min) → ``ACK`` again while running, the same terminal
  after ``DONE`` (or ``NO_EFFECT``/``BUSY``/``INVALID``), ``ERROR command_already_failed`` after ``ERROR``;
- refused by ``Actions.plan`` → one terminal, no ACK (cached); otherwise ``ACK`` and the run at once (the run
  does not wait for the ACK's PUBACK, nor for a delayed ACK), then the terminal once the ACK is out.

Reply faults apply to every ``command_response`` publish: delay, drop, duplicate, corrupt (via ``publish``), and
a contradictory ``ACK`` + ``BUSY`` after a ``DONE``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from hydrovisor.protocol import MAX_COMMAND_BYTES
from hydrovisor.sim import wire
from hydrovisor.sim.actions import Actions, Outcome
from hydrovisor.sim.clock import DeviceClock
from hydrovisor.sim.commands import RUNNING, CommandCache, Rejection, check_command
from hydrovisor.sim.faults import Faults
from hydrovisor.sim.stats import NodeStats

__all__ = ["Responder"]

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[bool]]
"""Publish a corruptible payload on a topic; False when it did not go out."""


class Responder:
    """Answers the commands of one node (see the module docstring).

    ``publish(topic, payload)`` sends on the node's current session; ``response_topic(channel)`` is the
    ``command_response`` topic in the node's *current* namespace; ``report_config`` runs before the terminal
    answer of ``report_config{}``, ``restart`` after the answer of ``restart{}``.
    """

    def __init__(
        self, actions: Actions, clock: DeviceClock, faults: Faults, rng: random.Random, stats: NodeStats, *,
        publish: Publish, response_topic: Callable[[str], str],
        report_config: Callable[[], Awaitable[None]], restart: Callable[[], Awaitable[None]],
    ) -> None:
        self._actions = actions
        self._clock = clock
        self._faults = faults
        self._rng = rng
        self._stats = stats
        self._publish = publish
        self._response_topic = response_topic
        self._report_config = report_config
        self._restart = restart
        self.cache = CommandCache()

    @property
    def faults(self) -> Faults:
        """The reply faults in force."""
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults

    def reboot(self) -> None:
        """The cache lives in RAM: a reboot forgets every ``cmd_id``."""
        self.cache = CommandCache()

    async def handle(self, channel: str, data: bytes, *, secret: str | None) -> None:
        """Answer one command payload that arrived on ``{channel}/command``."""
        self._stats.commands_received += 1
        if len(data) > MAX_COMMAND_BYTES:
            return  # the firmware drops oversized payloads without an answer
        checked = check_command(data, secret=secret, now=self._clock.now(), synced=self._clock.synced)
        if isinstance(checked, Rejection):
            await self._answer(channel, checked.cmd_id, Outcome(
                status=checked.status, error_code=checked.error_code, error_message=checked.error_message))
            return
        cmd_id = checked.cmd_id
        cached = self.cache.get(cmd_id)
        if cached is not None:
            await self._repeat(channel, cmd_id, cached)
            return
        plan = self._actions.plan(channel, checked)
        self.cache.start(cmd_id)
        if isinstance(plan, Outcome):
            self.cache.finish(cmd_id, plan.status)
            await self._answer(channel, cmd_id, plan)
            return
        # firmware acts without waiting for the broker's PUBACK of its ACK (its MQTT client queues the
        # publish): a server holding that PUBACK (a database outage) delays the replies, not the action
        ack = asyncio.create_task(self._reply(channel, cmd_id, "ACK"))
        try:
            try:
                outcome = await plan()
            except Exception as exc:
                log.exception("sim node command failed", extra={"event": "sim_command_crashed", "cmd": checked.cmd})
                outcome = Outcome(status="ERROR", error_code="internal_error", error_message=repr(exc))
            self.cache.finish(cmd_id, outcome.status)
            await ack  # the ACK goes out before the terminal
        finally:
            ack.cancel()
        if outcome.follow_up == "report_config":
            await self._report_config()
        await self._answer(channel, cmd_id, outcome)
        if outcome.follow_up == "restart":
            await self._restart()

    async def _repeat(self, channel: str, cmd_id: str, cached: str) -> None:
        if cached == RUNNING:
            await self._reply(channel, cmd_id, "ACK")
        elif cached == "ERROR":
            await self._answer(channel, cmd_id, Outcome(
                status="ERROR", error_code="command_already_failed", error_message="this cmd_id already failed"))
        else:
            await self._answer(channel, cmd_id, Outcome(status=cached))

    async def _answer(self, channel: str, cmd_id: str, outcome: Outcome) -> None:
        """Send a terminal status (and, under the contradictory-terminal fault, a second ACK + BUSY)."""
        self._stats.commands_answered += 1
        await self._reply(channel, cmd_id, outcome.status, outcome)
        if outcome.status == "DONE" and self._chance(self._faults.contradictory_terminal):
            self._stats.contradictions_sent += 1
            await self._reply(channel, cmd_id, "ACK")
            await self._reply(channel, cmd_id, "BUSY", Outcome(status="BUSY", message="channel busy"))

    def _chance(self, probability: float) -> bool:
        return probability > 0 and self._rng.random() < probability

    async def _reply(self, channel: str, cmd_id: str, status: str, outcome: Outcome | None = None) -> None:
        faults = self._faults
        if faults.delay_reply_s or faults.delay_jitter_s:
            await asyncio.sleep(faults.delay_reply_s + self._rng.uniform(0, faults.delay_jitter_s))
        if self._chance(faults.drop_reply):
            self._stats.replies_dropped += 1
            return
        copies = 2 if self._chance(faults.duplicate_reply) else 1
        topic = self._response_topic(channel)
        for _ in range(copies):
            body = wire.command_response(cmd_id, status, int(self._clock.now() * 1000), outcome,
                                         errors_in_details=faults.errors_in_details)
            if await self._publish(topic, wire.encode(body)):
                self._stats.replies_sent += 1
