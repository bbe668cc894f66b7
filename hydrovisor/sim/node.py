"""``SimNode``: one simulated ESP32 node speaking Protocol 2.0 over a real MQTT connection.

Lifecycle, as the firmware does it (PROTOCOL §4, §7):

1. connect with client id = hardware id, clean session, the configured keep-alive and the retained QoS 1
   LWT ``offline`` on ``{namespace}/lwt``; subscribe to ``config`` and ``+/command`` of the current and the
   temp namespace, and to ``hydro/time/response``;
2. publish ``hydro/time/request`` (repeated until answered), the retained ``status`` ONLINE (then every
   ``status_interval_s``), ``node_hello`` when unbound and ``config_report``; heartbeats every
   ``heartbeat_interval_s``; telemetry — one message per sensor channel every ``telemetry_interval_s``, the
   first round at once — only once the clock is synced, as real firmware does; a node with a plant
   (``storage_state``: two-tank ``irrig``, single-tank ``recirculation``) also publishes its plant's events
   (level switches, fill stages, tank alarms) as they happen;
3. a valid config push with a new namespace makes the node disconnect cleanly and reconnect there (the LWT
   moves) and report its config from there; a push into ``gh-temp/zn-temp`` unbinds;
4. commands are admitted by ``commands.check_command``, de-duplicated by the firmware's ``cmd_id`` cache and
   executed by ``actions.Actions``: ``ACK`` then one terminal on ``{channel}/command_response`` of the
   *current* namespace, ``ts`` in milliseconds.

A lost connection is retried after ``reconnect_delay_s`` until ``stop()``. ``Faults`` make the node misbehave
(``set_faults`` changes them at run time).

Time: the node's plant, actuator runs and sensor settling run on one ``hydrovisor.zones.clock.Clock``: the
shared one given as ``clock`` (then the device's wall clock advances with it too, so a process whose zone
logic runs on the same clock sees consistent timestamps), else ``clock_for_scale(1 / options.time_scale)``
with the device's wall clock on real time (a server running in real time with a faster plant, as tests do).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Coroutine
from enum import Enum
from typing import Any

import msgspec
from amqtt.client import MQTTClient

from hydrovisor.protocol import (
    NODE_HELLO,
    TEMP_GH,
    TEMP_ZONE,
    TIME_REQUEST,
    TIME_RESPONSE,
    TopicError,
    TopicKind,
    TopicType,
    channel_topic,
    node_topic,
    parse_topic,
    validate_segment,
)
from hydrovisor.sim import wire
from hydrovisor.sim.actions import Actions
from hydrovisor.sim.clock import DeviceClock
from hydrovisor.sim.faults import Faults
from hydrovisor.sim.nodeconfig import StoredConfig, config_report, initial_config, parse_config_push
from hydrovisor.sim.options import FieldConfig, NodeOptions, PlantOptions
from hydrovisor.sim.physics import STORAGE_STATE, WaterPhysics
from hydrovisor.sim.profiles import Profile, Sensor, profile_for
from hydrovisor.sim.responder import Responder
from hydrovisor.sim.stats import NodeStats
from hydrovisor.sim.transport import abort, broker_uri, close, discard, new_client, redact_uri
from hydrovisor.zones.clock import Clock, clock_for_scale

__all__ = ["SimNode"]

log = logging.getLogger(__name__)

_QOS_1 = 1
_STOP_GRACE_S = 10.0


def _reraise_if_cancelling() -> None:
    """Raise ``CancelledError`` when the current task is being cancelled.

    amqtt converts a cancellation inside its packet writer into ``ProtocolHandlerError`` and its connect into
    ``ConnectError``; a loop that swallowed those would outlive its own cancellation.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class _End(Enum):
    """Why a connection session ended, which decides what happens next."""

    STOP = "stop"
    LOST = "lost"
    CONNECT_FAILED = "connect_failed"
    REBIND = "rebind"
    OFFLINE = "offline"
    RESTART = "restart"


class SimNode:
    """One simulated node (see the module docstring). Create, ``await start()``, ``await stop()``.

    ``broker_url`` is ``mqtt://host:port``; ``username``/``password`` are sent in CONNECT when given.
    ``field_config`` makes a node that was already configured in the field (bound, with its secret).
    ``seed`` makes physics and faults reproducible (default: derived from the hardware id).
    ``connect_gate`` bounds how many nodes connect at once (shared by a fleet).
    ``clock``: a shared clock (see the module docstring; ``options.time_scale`` must then stay 1).
    ``physics``: a plant shared with the zone's other nodes (default: one of its own, ``options.plant``; a
    ``recirculation`` node whose ``options.plant`` is the default gets a single-tank one). A node whose type
    needs a plant topology (``irrig``: two tank, ``recirculation``: single tank) refuses another one
    (``ValueError``).
    All methods must be called on the event loop that runs the node.
    """

    def __init__(
        self,
        broker_url: str,
        hardware_id: str,
        node_type: str,
        *,
        username: str | None = None,
        password: str | None = None,
        field_config: FieldConfig | None = None,
        options: NodeOptions | None = None,
        faults: Faults | None = None,
        seed: int | None = None,
        connect_gate: asyncio.Semaphore | None = None,
        clock: Clock | None = None,
        physics: WaterPhysics | None = None,
    ) -> None:
        problem = validate_segment(hardware_id, "hardware_id", strict=True)
        if problem is not None:
            raise ValueError(problem.detail)
        self._hardware_id = hardware_id
        self._profile: Profile = profile_for(node_type)
        self._uri = broker_uri(broker_url, username, password)
        self._options = options or NodeOptions()
        self._faults = faults or Faults()
        self._rng = random.Random(seed if seed is not None else hardware_id)
        self._gate = connect_gate
        if clock is not None and self._options.time_scale != 1.0:
            raise ValueError("give a SimNode either a shared clock or NodeOptions.time_scale, not both")
        self._shared_clock = clock
        self._time: Clock = clock if clock is not None else (
            physics.clock if physics is not None else clock_for_scale(1.0 / self._options.time_scale))
        self._clock = DeviceClock(clock.monotonic) if clock is not None else DeviceClock()
        seed_physics = self._rng.randrange(2**32)
        self._physics = physics if physics is not None else WaterPhysics(
            seed_physics, clock=self._time, plant=self._own_plant())
        topology = self._profile.topology
        if topology is not None and self._physics.plant.topology != topology:
            raise ValueError(f"a {node_type} node needs a {topology} plant, not a {self._physics.plant.topology} "
                             f"one (PlantOptions(topology={topology!r}))")
        self._actions = Actions(self._profile, self._physics, self._clock, faults=self._faults, options=self._options,
                                rng=self._rng, time=self._time, report_error=self._report_error)
        self._has_plant = self._profile.channel(STORAGE_STATE) is not None
        self._plant_wake = asyncio.Event()
        if self._has_plant:
            self._physics.listeners.append(self._plant_wake.set)
        self._frozen: dict[str, float] = {}
        self._apply_plant_faults()
        self._config = initial_config(hardware_id, field_config)
        self._ip = f"10.{self._rng.randrange(256)}.{self._rng.randrange(256)}.{self._rng.randrange(1, 255)}"
        self.stats = NodeStats()
        self._responder = Responder(
            self._actions, self._clock, self._faults, self._rng, self.stats,
            publish=lambda topic, payload: self._publish(topic, payload, corruptible=True),
            response_topic=lambda channel: self.topic(TopicType.COMMAND_RESPONSE, channel),
            report_config=self._publish_config_report, restart=self._restart_after_command,
        )
        self._client: MQTTClient | None = None
        self._session_end: asyncio.Future[_End] | None = None
        self._main: asyncio.Task[None] | None = None
        self._stopping = False
        self._offline_for = 0.0
        self._up = asyncio.Event()
        self._down = asyncio.Event()
        self._down.set()
        self._synced = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        if self._options.trust_local_clock:
            self._sync_clock(self._wall_time())

    def _own_plant(self) -> PlantOptions:
        """The plant of a node not given a shared one: ``options.plant``, or the profile's own plant when
        ``options.plant`` is left at its default (a ``recirculation`` node comes with its single tank)."""
        plant = self._options.plant
        if self._profile.plant is not None and plant == PlantOptions():
            return self._profile.plant
        return plant

    def _wall_time(self) -> float:
        return self._shared_clock.now() if self._shared_clock is not None else time.time()

    # -- state ---------------------------------------------------------------------------------

    @property
    def hardware_id(self) -> str:
        """``esp32-<12 hex>`` style id, also the MQTT client id."""
        return self._hardware_id

    @property
    def node_type(self) -> str:
        """One of ``profiles.ALL_SIM_NODE_TYPES``."""
        return self._profile.node_type

    @property
    def profile(self) -> Profile:
        """The node's hardware (channels and sensors)."""
        return self._profile

    @property
    def config(self) -> StoredConfig:
        """The stored config (``repr`` masks the secret)."""
        return self._config

    @property
    def namespace(self) -> tuple[str, str, str]:
        """``(gh, zone, node)`` the node publishes under now."""
        return self._config.namespace(self._hardware_id)

    @property
    def is_bound(self) -> bool:
        """True when configured into a real greenhouse/zone."""
        return self._config.is_bound

    @property
    def is_connected(self) -> bool:
        """True while a session is up (connected and subscribed)."""
        return self._up.is_set()

    @property
    def time_synced(self) -> bool:
        """True once a time response (or ``set_time``) set the clock since the last reboot."""
        return self._clock.synced

    @property
    def physics(self) -> WaterPhysics:
        """The water model behind the sensors."""
        return self._physics

    @property
    def actions(self) -> Actions:
        """Actuator state (relays, sensor mode)."""
        return self._actions

    @property
    def connect_gate(self) -> asyncio.Semaphore | None:
        """Semaphore held while connecting (a fleet shares one to bound concurrent CONNECTs)."""
        return self._gate

    @connect_gate.setter
    def connect_gate(self, gate: asyncio.Semaphore | None) -> None:
        self._gate = gate

    @property
    def options(self) -> NodeOptions:
        """Timing and behaviour knobs."""
        return self._options

    @property
    def faults(self) -> Faults:
        """Configured failure modes."""
        return self._faults

    @property
    def clock(self) -> Clock:
        """The clock the node's plant and actuator runs follow."""
        return self._time

    def skew_clock(self, seconds: float) -> None:
        """Move the node's synced wall clock by ``seconds`` (as a late time answer would); the next time
        response resyncs it. No effect before the first sync."""
        if self._clock.synced:
            self._clock.sync(self._clock.now() + seconds)

    def set_faults(self, faults: Faults) -> None:
        """Change the failure modes now (a stuck relay, frozen sensors, inconsistent switches take effect at
        once; probabilities from the next occasion)."""
        self._faults = faults
        self._actions.faults = faults
        self._responder.faults = faults
        self._frozen = {channel: value for channel, value in self._frozen.items()
                        if channel in faults.frozen_sensors}
        self._apply_plant_faults()

    def _apply_plant_faults(self) -> None:
        if not self._has_plant:
            return
        self._physics.stuck = frozenset(self._faults.stuck_relays)
        self._physics.inconsistent = frozenset(self._faults.inconsistent_levels)
        self._physics.refresh()

    def emergency_stop(self, reason: str = "button") -> list[str]:
        """Press the node's emergency stop (see ``Actions.emergency_stop``); returns the pumps it stopped."""
        return self._actions.emergency_stop(reason)

    def release_emergency_stop(self) -> None:
        """Release the emergency stop."""
        self._actions.release_emergency_stop()

    def topic(self, type_: str, channel: str | None = None) -> str:
        """A topic of this node in its current namespace."""
        gh, zone, node = self.namespace
        if channel is None:
            return node_topic(gh, zone, node, type_)
        return channel_topic(gh, zone, node, channel, type_)

    @property
    def lwt_topic(self) -> str:
        """Where the broker publishes this node's will (moves with the namespace)."""
        return self.topic(TopicType.LWT)

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background (returns at once; see ``wait_connected``)."""
        if self._main is not None and not self._main.done():
            return
        self._stopping = False
        self._main = asyncio.create_task(self._run(), name=f"sim-node:{self._hardware_id}")

    async def wait_connected(self, within: float = 10.0) -> None:
        """Wait until a session is up; raises ``TimeoutError`` after ``within`` s."""
        await asyncio.wait_for(self._up.wait(), within)

    async def wait_synced(self, within: float = 10.0) -> None:
        """Wait until the clock is synced; raises ``TimeoutError`` after ``within`` s."""
        await asyncio.wait_for(self._synced.wait(), within)

    async def stop(self) -> None:
        """Disconnect cleanly (DISCONNECT: no LWT) and stop everything the node runs. Idempotent."""
        self._stopping = True
        main = self._main
        if main is not None:
            if self._up.is_set():
                self._finish_session(_End.STOP)
            else:
                main.cancel()  # connecting or waiting to reconnect
            done, _ = await asyncio.wait({main}, timeout=_STOP_GRACE_S)
            if not done:  # should not happen; never let one node hang a fleet's stop
                log.warning("sim node did not stop in time", extra={
                    "event": "sim_stop_timeout", "hardware_id": self._hardware_id})
                main.cancel()
            self._main = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=_STOP_GRACE_S)
        self._actions.reset()

    async def go_offline(self, duration_s: float) -> bool:
        """Drop the connection now without DISCONNECT (the broker fires the LWT) and come back after
        ``duration_s``. Returns once disconnected; False when not connected."""
        if not self._up.is_set():
            return False
        self._offline_for = duration_s
        self.stats.offline_windows += 1
        self._finish_session(_End.OFFLINE)
        await self._down.wait()
        return True

    async def publish_event(self, channel: str, event_code: str, /, **fields: Any) -> bool:
        """Publish ``{event_code, ts, **fields}`` on ``{channel}/event``; False when not connected."""
        body = {"event_code": event_code, "ts": int(self._clock.now()), **fields}
        return await self._publish(self.topic(TopicType.EVENT, channel), wire.encode(body))

    def _finish_session(self, reason: _End) -> None:
        end = self._session_end
        if end is not None and not end.done():
            end.set_result(reason)

    async def _run(self) -> None:
        while not self._stopping:
            end = await self._session()
            if end is _End.STOP or self._stopping:
                return
            if end is _End.RESTART:
                self._reboot()
            delay = {
                _End.REBIND: 0.0,
                _End.OFFLINE: self._offline_for,
                _End.RESTART: self._options.restart_delay_s,
            }.get(end, self._options.reconnect_delay_s)
            if delay > 0:
                await asyncio.sleep(delay)

    def _reboot(self) -> None:
        """Power cycle: the clock, sensor mode, actuators, running commands and the cmd_id cache are lost."""
        for task in self._tasks:
            task.cancel()
        self._clock.reboot()
        self._synced.clear()
        self._actions.reset()
        self._responder.reboot()
        if self._options.trust_local_clock:
            self._sync_clock(self._wall_time())

    async def _session(self) -> _End:
        end: asyncio.Future[_End] = asyncio.get_running_loop().create_future()
        self._session_end = end
        client = new_client(self._hardware_id, will_topic=self.lwt_topic, keep_alive_s=self._options.keep_alive_s,
                            connect_timeout_s=self._options.connect_timeout_s)
        try:
            async with self._gate if self._gate is not None else contextlib.nullcontext():
                await asyncio.wait_for(client.connect(self._uri), self._options.connect_timeout_s)
        except Exception as exc:  # amqtt raises many kinds; all mean "not connected"
            if self._stopping:
                self._session_end = None
                await discard(client)
                return _End.STOP
            self.stats.connect_failures += 1
            log.debug("sim node connect failed", extra={
                "event": "sim_connect_failed", "hardware_id": self._hardware_id, "broker": redact_uri(self._uri),
                "error": repr(exc)})
            self._session_end = None
            await discard(client)
            return _End.CONNECT_FAILED
        workers: list[asyncio.Task[Any]] = []
        reason = _End.LOST
        try:
            await client.subscribe([(topic, _QOS_1) for topic in self._subscriptions()])
            self._client = client
            workers.append(asyncio.create_task(self._receive(client)))
            self.stats.connects += 1
            self._down.clear()
            self._up.set()
            workers += [asyncio.create_task(worker) for worker in (
                self._announce(), self._heartbeats(), self._statuses(), self._telemetry(), self._offline_windows())]
            if self._has_plant:
                workers.append(asyncio.create_task(self._plant_events()))
            reason = await end
        except asyncio.CancelledError:
            reason = _End.STOP
            raise
        except Exception as exc:  # e.g. the connection died during SUBSCRIBE
            if self._stopping:
                reason = _End.STOP
            log.debug("sim node session failed", extra={
                "event": "sim_session_failed", "hardware_id": self._hardware_id, "error": repr(exc)})
        finally:
            self._up.clear()
            self._client = None
            self._session_end = None
            for worker in workers:
                worker.cancel()
            if workers:
                await asyncio.wait(workers, timeout=_STOP_GRACE_S / 2)
            if reason in (_End.OFFLINE, _End.RESTART):
                await abort(client)
            elif reason is _End.LOST:
                await discard(client)
            else:
                await close(client)
            self.stats.sessions_ended += 1
            self._down.set()
        return reason

    def _subscriptions(self) -> list[str]:
        gh, zone, node = self.namespace
        topics = [
            node_topic(gh, zone, node, TopicType.CONFIG), f"hydro/{gh}/{zone}/{node}/+/{TopicType.COMMAND}",
            node_topic(TEMP_GH, TEMP_ZONE, self._hardware_id, TopicType.CONFIG),
            f"hydro/{TEMP_GH}/{TEMP_ZONE}/{self._hardware_id}/+/{TopicType.COMMAND}",
            TIME_RESPONSE,
        ]
        return list(dict.fromkeys(topics))

    # -- publishing ----------------------------------------------------------------------------

    async def _publish(self, topic: str, payload: bytes, *, retain: bool = False, corruptible: bool = False) -> bool:
        """QoS 1 publish on the current session; False when there is none or it broke meanwhile."""
        client = self._client
        if client is None or not self._up.is_set():
            return False
        if corruptible and self._faults.bad_json and self._rng.random() < self._faults.bad_json:
            payload = wire.corrupt(payload, self._rng)
            self.stats.bad_json_sent += 1
        try:
            await client.publish(topic, payload, qos=_QOS_1, retain=retain)
        except (Exception, asyncio.CancelledError):
            # amqtt cancels the PUBACK wait when the connection goes (CancelledError although we were not
            # cancelled) and turns *our* cancellation into ProtocolHandlerError: tell the two apart.
            _reraise_if_cancelling()
            self.stats.publish_failures += 1
            return False
        # Python 3.11's wait_for (inside amqtt's PUBACK wait) loses a cancellation that races the PUBACK.
        _reraise_if_cancelling()
        return True

    def _device_ts(self) -> int:
        return int(self._clock.now())

    async def _publish_status(self) -> None:
        body = wire.status_online(self._device_ts(), fw=self._options.fw_version, ip=self._ip, rssi=self._rssi())
        if await self._publish(self.topic(TopicType.STATUS), wire.encode(body), retain=True):
            self.stats.statuses_sent += 1

    async def _publish_config_report(self) -> None:
        body = config_report(self._config, self._profile, fw_version=self._options.fw_version,
                             echo_secret=self._options.echo_secret)
        if await self._publish(self.topic(TopicType.CONFIG_REPORT), wire.encode(body)):
            self.stats.config_reports_sent += 1

    async def _publish_time_request(self) -> None:
        await self._publish(TIME_REQUEST, wire.encode(wire.time_request(int(self._clock.uptime()))))

    async def _publish_telemetry(self, sensor: Sensor) -> None:
        if sensor.channel in self._faults.frozen_sensors:
            value = self._frozen.setdefault(sensor.channel, self._physics.read(sensor.source))
        else:
            value = self._physics.read(sensor.source)
        shown: float = round(value, sensor.decimals) if sensor.decimals else round(value)
        ts = int(self._clock.uptime()) if self._faults.uptime_timestamps else self._device_ts()
        raw = round(value * sensor.raw_scale) if sensor.raw_scale else None
        flags = self._actions.sensor_flags() if sensor.gated else None
        body = wire.telemetry(sensor.metric, shown, ts, sensor.unit, raw=raw, flags=flags)
        if await self._publish(self.topic(TopicType.TELEMETRY, sensor.channel), wire.encode(body), corruptible=True):
            self.stats.telemetry_sent += 1

    def _rssi(self) -> int:
        return -self._rng.randint(45, 80)

    # -- session workers -----------------------------------------------------------------------

    async def _announce(self) -> None:
        await self._publish_time_request()
        await self._publish_status()
        if not self.is_bound:
            hello = wire.node_hello(self._hardware_id, self._profile.node_type, fw_version=self._options.fw_version,
                                    hardware_revision=self._options.hardware_revision,
                                    capabilities=self._profile.capabilities)
            await self._publish(NODE_HELLO, wire.encode(hello))
        await self._publish_config_report()
        while not self._clock.synced:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._synced.wait(), self._options.time_request_retry_s)
            if not self._clock.synced:
                await self._publish_time_request()

    async def _heartbeats(self) -> None:
        interval = self._options.heartbeat_interval_s
        await asyncio.sleep(self._rng.uniform(0, interval))
        while True:
            body = wire.heartbeat(int(self._clock.uptime()), free_heap=180_000 + self._rng.randrange(-4096, 4096),
                                  rssi=self._rssi(), fw_version=self._options.fw_version)
            if await self._publish(self.topic(TopicType.HEARTBEAT), wire.encode(body), corruptible=True):
                self.stats.heartbeats_sent += 1
            await asyncio.sleep(interval)

    async def _statuses(self) -> None:
        while True:
            await asyncio.sleep(self._options.status_interval_s)
            await self._publish_status()

    async def _telemetry(self) -> None:
        interval = self._options.telemetry_interval_s
        await self._synced.wait()
        for sensor in self._profile.sensors:  # at once: the server's freshness checks need a first reading
            await self._publish_telemetry(sensor)
        await asyncio.sleep(self._rng.uniform(0, interval))
        while True:
            for sensor in self._profile.sensors:
                await self._publish_telemetry(sensor)
            await asyncio.sleep(interval)

    async def _plant_events(self) -> None:
        """Step the plant while water moves and publish what it reports (level switches, stages, alarms)."""
        self._physics.take_events()  # what happened while away is not news: the telemetry tells the state
        await self._synced.wait()
        while True:
            self._plant_wake.clear()
            for event in self._physics.take_events():
                fields = event.fields
                if "snapshot" in fields:
                    # firmware publishes an event as it happens, so its snapshot is never older than a reply
                    # sent before it; here the event waited for this loop while commands were answered
                    fields = {**fields, "snapshot": self._physics.snapshot()}
                await self.publish_event(event.channel, event.code, **fields)
            if self._physics.moving() or self._actions.busy:
                await asyncio.sleep(self._options.plant_tick_s)
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._plant_wake.wait(), 1.0)

    def _report_error(self, component: str, error_code: str, message: str, details: dict[str, Any]) -> None:
        body = {"level": "ERROR", "component": component, "error_code": error_code, "message": message,
                "ts": int(self._clock.now() * 1000), "details": details}
        self._spawn(self._publish_quietly(self.topic(TopicType.ERROR), wire.encode(body)))

    async def _publish_quietly(self, topic: str, payload: bytes) -> None:
        await self._publish(topic, payload)

    async def _offline_windows(self) -> None:
        every = self._faults.offline_every_s
        if every is None:
            return
        await asyncio.sleep(self._rng.expovariate(1.0 / every))
        self._offline_for = self._faults.offline_duration_s
        self.stats.offline_windows += 1
        log.debug("sim node going offline", extra={
            "event": "sim_offline_window", "hardware_id": self._hardware_id, "duration_s": self._offline_for})
        self._finish_session(_End.OFFLINE)

    async def _receive(self, client: MQTTClient) -> None:
        while True:
            try:
                message = await client.deliver_message()
            except (Exception, asyncio.CancelledError):  # amqtt raises when the session is gone
                message = None
            _reraise_if_cancelling()
            if message is None:  # amqtt returns None once the connection is closed
                self._finish_session(_End.LOST)
                return
            self._dispatch(message.topic, bytes(message.data or b""))

    # -- incoming ------------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sim node task failed", exc_info=task.exception(), extra={
                "event": "sim_task_failed", "hardware_id": self._hardware_id})

    def _dispatch(self, topic: str, data: bytes) -> None:
        if topic == TIME_RESPONSE:
            self._on_time_response(data)
            return
        parsed = parse_topic(topic)
        if isinstance(parsed, TopicError):
            return
        temp = (TEMP_GH, TEMP_ZONE, self._hardware_id)
        if parsed.namespace not in (self.namespace, temp):
            return
        if parsed.kind is TopicKind.NODE and parsed.type == TopicType.CONFIG:
            self._on_config(data)
        elif parsed.kind is TopicKind.CHANNEL and parsed.type == TopicType.COMMAND and parsed.channel is not None:
            self._spawn(self._responder.handle(parsed.channel, data, secret=self._config.node_secret))

    def _sync_clock(self, unix_ts: float) -> bool:
        if not self._clock.sync(unix_ts):
            return False
        self._synced.set()
        return True

    def _on_time_response(self, data: bytes) -> None:
        try:
            body: Any = msgspec.json.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return
        if isinstance(body, dict):
            unix_ts = body.get("unix_ts", body.get("server_time"))
            if isinstance(unix_ts, int | float):
                self._sync_clock(unix_ts)

    def _on_config(self, data: bytes) -> None:
        stored = parse_config_push(data)
        if stored is None:
            self.stats.config_rejected += 1  # the firmware stays silent
            return
        self.stats.config_pushes += 1
        before = self.namespace
        self._config = stored
        if stored.namespace(self._hardware_id) != before:
            log.debug("sim node moving namespace", extra={
                "event": "sim_rebind", "hardware_id": self._hardware_id, "namespace": "/".join(self.namespace)})
            self._finish_session(_End.REBIND)  # reconnect there; the new session reports the config
        else:
            self._spawn(self._publish_config_report())

    async def _restart_after_command(self) -> None:
        body = wire.status_restarting(self._device_ts())
        await self._publish(self.topic(TopicType.STATUS), wire.encode(body), retain=True)
        self._finish_session(_End.RESTART)
