"""``SafetyObserver``: the pure core that judges every actuation on the wire against the plant's truth.

No I/O and no clock: the caller passes ``at`` (zone-clock seconds, one time line for every feed). Feeds:

- ``observe(topic, payload, at)``: every MQTT publish under ``hydro/`` (commands, replies, telemetry,
  events; the rest is counted and ignored);
- ``observe_plant(zone_uid, reading, at)``: the simulator's physical plant (``plant.plant_reading``);
- ``mark(zone_uid, kind, at)``: facts learnt elsewhere (a workflow failed or was cancelled, an emergency
  stop was pressed or cleared).

What it believes about each node comes only from the wire: a valve is open once a ``set_relay`` to it was
answered ``DONE`` (or a ``state`` snapshot / ``storage_state`` event says so), a stop is confirmed once it
was answered ``DONE`` or a later snapshot shows its channel off. Replies are matched by ``cmd_id``
(PROTOCOL §4) and only the first terminal status counts (PROTOCOL §5). Rule codes and what each one
means: ``model.RULES`` and the README of this package (``__init__``).
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict

import msgspec

from hydrovisor.observer import rules
from hydrovisor.observer.model import (
    DOSE_WITHOUT_FLAGS,
    INTERLOCK_VIOLATION,
    LEFT_RUNNING_AFTER_STOP,
    MARK_KINDS,
    NC_PUMP_OFF_TOO_LONG,
    PUMP_ON_SOURCE_BELOW_MIN,
    START_DURING_ESTOP,
    START_WITHOUT_CONFIRMED_STOP,
    PlantReading,
    Tank,
    Violation,
    ZoneLimits,
)
from hydrovisor.observer.state import (
    CommandRecord,
    FlagReading,
    NodeState,
    PendingStop,
    StopMark,
    ValveState,
    ZoneState,
)
from hydrovisor.observer.wire import (
    Command,
    Event,
    Response,
    Telemetry,
    Topic,
    action_of,
    decode_command,
    decode_event,
    decode_response,
    decode_telemetry,
    duration_s,
    parse_topic,
    snapshot_of,
    switch_state,
)

__all__ = ["CommandSeen", "SafetyObserver"]

log = logging.getLogger(__name__)

_MAX_COMMANDS = 100_000  # commands remembered for matching replies (oldest forgotten first)
_MAX_ORPHANS = 1_000  # replies that arrived before their command (broker delivery order is per publisher)
WIRE_LAG_SHARE = 0.1
"""A start heard on the wire up to ``grace_s`` x this after a reading found something left running still
lifts the stop: the node acts on a start before the tap receives it (the readings and the tap race)."""
TANKS: tuple[Tank, ...] = ("clean", "solution")
_ESTOP_EVENT = "emergency_stop_activated"
_LEVEL_SWITCH_EVENT = "level_switch_changed"
_SNAPSHOT_LEVELS = {"clean_level_min": "level_clean_min", "clean_level_max": "level_clean_max",
                    "solution_level_min": "level_solution_min", "solution_level_max": "level_solution_max"}
_LEVEL_SWITCHES = frozenset(_SNAPSHOT_LEVELS.values())
_GATED_METRICS = frozenset({"PH", "EC"})


class CommandSeen(msgspec.Struct, frozen=True, kw_only=True):
    """What the observer knows of one command: where it went, what it does, how it was answered."""

    cmd_id: str
    zone_uid: str
    node_uid: str
    channel: str
    cmd: str
    action: str
    at: float
    acked: bool
    terminal: str | None


class SafetyObserver:
    """Watches the traffic and the plant, and records every unsafe actuation in :attr:`violations`.

    Never raises on input: malformed publishes are counted (``stats()['malformed']``) and ignored.
    Not thread-safe: feed it from one thread (the event loop the tap and the sampler run on).
    """

    def __init__(self, limits: dict[str, ZoneLimits] | None = None) -> None:
        self._zones: dict[str, ZoneState] = {}
        self._nodes: dict[str, NodeState] = {}
        self._commands: OrderedDict[str, CommandRecord] = OrderedDict()
        self._orphans: OrderedDict[str, tuple[Response, float]] = OrderedDict()
        self._nc_wire_zones: set[str] = set()  # zones whose NC pump is commanded off (wire tracking)
        self._counts: Counter[str] = Counter()
        self.violations: list[Violation] = []
        for zone_uid, zone_limits in (limits or {}).items():
            self.configure_zone(zone_uid, zone_limits)

    # -- configuration and inspection ----------------------------------------------------------------

    def configure_zone(self, zone_uid: str, limits: ZoneLimits) -> None:
        """Set (or replace) what the observer knows about ``zone_uid``; unconfigured zones get ``ZoneLimits()``."""
        self._zone(zone_uid).limits = limits

    def stats(self) -> dict[str, int]:
        """Counters: ``publishes``, ``commands``, ``starts``, ``stops``, ``responses``, ``telemetry``,
        ``events``, ``plant_readings``, ``marks``, ``malformed``, ``violations`` and ``violations.<rule>``, ..."""
        return dict(self._counts)

    def command(self, cmd_id: str) -> CommandSeen | None:
        """What was seen of command ``cmd_id`` (None: never seen, or forgotten)."""
        record = self._commands.get(cmd_id)
        if record is None:
            return None
        return CommandSeen(cmd_id=record.cmd_id, zone_uid=record.zone, node_uid=record.node,
                           channel=record.channel, cmd=record.command.cmd, action=record.action, at=record.at,
                           acked=record.acked, terminal=record.terminal)

    def violations_of(self, rule: str) -> list[Violation]:
        """The violations of one rule, oldest first."""
        return [violation for violation in self.violations if violation.rule == rule]

    # -- feeds ---------------------------------------------------------------------------------------

    def observe(self, topic: str, payload: bytes, at: float) -> None:
        """One MQTT publish seen at ``at`` (zone-clock seconds)."""
        self._counts["publishes"] += 1
        parsed = parse_topic(topic)
        if parsed is None:
            self._counts["ignored"] += 1  # global topics (hello, time) and foreign ones
        elif parsed.kind == "command" and parsed.channel is not None:
            self._on_command(parsed, decode_command(payload), at)
        elif parsed.kind == "command_response":
            self._on_response(parsed, decode_response(payload), at)
        elif parsed.kind == "telemetry" and parsed.channel is not None:
            self._on_telemetry(parsed, decode_telemetry(payload), at)
        elif parsed.kind == "event":
            self._on_event(parsed, decode_event(payload), at)
        else:
            self._counts["ignored"] += 1  # status, heartbeat, lwt, config...: nothing a rule needs
        self._tick(at)

    def observe_plant(self, zone_uid: str, plant: PlantReading, at: float) -> None:
        """The physical state of ``zone_uid``'s plant at ``at``."""
        self._counts["plant_readings"] += 1
        zone = self._zone(zone_uid)
        zone.plant, zone.plant_at = plant, at
        for tank in TANKS:
            if not plant.below_min(tank):
                zone.above_min_at[tank] = at
        self._judge_dry_run(zone_uid, zone, plant, at)
        self._judge_nc_pump_plant(zone_uid, zone, plant, at)
        self._judge_marks(zone_uid, zone, plant, at)
        self._tick(at)

    def mark(self, zone_uid: str, kind: str, at: float) -> None:
        """A fact learnt elsewhere: ``workflow_failed``, ``workflow_cancelled``, ``emergency_stop`` or
        ``estop_cleared`` (raises ``ValueError`` for anything else: a typo must not disable a rule)."""
        if kind not in MARK_KINDS:
            raise ValueError(f"unknown mark {kind!r}; expected one of {sorted(MARK_KINDS)}")
        self._counts["marks"] += 1
        zone = self._zone(zone_uid)
        if kind == "emergency_stop":
            self._emergency_stop(zone, at)
        elif kind == "estop_cleared":
            zone.estop_since, zone.estop_cleared_at = None, at
            for pending in zone.marks:
                pending.liftable = True  # from now on a new start is legitimate again
        else:
            zone.marks.append(StopMark(kind=kind, at=at, liftable=True))
        self._tick(at)

    def check(self, at: float) -> None:
        """Evaluate the time-based rules that need no new input (call once more at the end of a run)."""
        self._tick(at)

    # -- commands and replies --------------------------------------------------------------------------

    def _on_command(self, topic: Topic, command: Command | None, at: float) -> None:
        if command is None:
            self._counts["malformed"] += 1
            self._counts["malformed.command"] += 1
            return
        assert topic.channel is not None
        self._counts["commands"] += 1
        action = action_of(command)
        record = self._commands.get(command.cmd_id)
        if record is None:
            record = CommandRecord(cmd_id=command.cmd_id, zone=topic.zone, node=topic.node,
                                   channel=topic.channel, command=command, action=action, at=at)
            self._remember(record)
        else:
            self._counts["republished"] += 1  # the same cmd_id again (a retried publish): judged again
        if action == "start":
            self._counts["starts"] += 1
            found = self._judge_start(record, at)
            if not found:
                self._lift_marks(self._zone(topic.zone), at)
        elif action == "stop":
            self._counts["stops"] += 1
            if record.terminal is None:
                self._node(topic.node).stops.setdefault(record.cmd_id, PendingStop(record.cmd_id, record.channel, at))
        orphan = self._orphans.pop(command.cmd_id, None)
        if orphan is not None:
            response, response_at = orphan
            self._apply_response(record, response, response_at)

    def _remember(self, record: CommandRecord) -> None:
        self._commands[record.cmd_id] = record
        while len(self._commands) > _MAX_COMMANDS:
            self._commands.popitem(last=False)

    def _on_response(self, topic: Topic, response: Response | None, at: float) -> None:
        if response is None:
            self._counts["malformed"] += 1
            self._counts["malformed.response"] += 1
            return
        self._counts["responses"] += 1
        if response.status == "DONE" and isinstance(response.details, dict):
            snapshot = snapshot_of(response.details.get("snapshot"))
            if snapshot is not None:  # a state{} probe: what the node believes, confirmed
                self._apply_snapshot(topic.zone, topic.node, snapshot, at)
        record = self._commands.get(response.cmd_id)
        if record is None:
            self._counts["unknown_responses"] += 1
            self._orphans[response.cmd_id] = (response, at)
            while len(self._orphans) > _MAX_ORPHANS:
                self._orphans.popitem(last=False)
            return
        self._apply_response(record, response, at)

    def _apply_response(self, record: CommandRecord, response: Response, at: float) -> None:
        if response.status == "ACK":
            record.acked = True
            if record.command.cmd == "run_pump":
                self._nc_wire(record, on=True, at=at)
            return
        if not response.terminal:
            self._counts["unknown_statuses"] += 1
            return
        if record.terminal is not None:
            self._counts["late_terminals"] += 1  # PROTOCOL §5: the first terminal status is final
            return
        record.terminal = response.status
        self._counts[f"terminal.{response.status}"] += 1
        node = self._node(record.node)
        done = response.status == "DONE"
        if record.action == "stop":
            if done:
                # confirms this stop and supersedes every earlier unconfirmed stop of the same channel
                for cmd_id, stop in list(node.stops.items()):
                    if stop.channel == record.channel and stop.at <= record.at:
                        del node.stops[cmd_id]
            elif record.cmd_id in node.stops:
                node.stops[record.cmd_id].terminal = response.status
        if not done:
            return
        command = record.command
        if command.cmd == "set_relay" and record.channel in rules.VALVES:
            state = switch_state(command.params.get("state"))
            if state is not None:
                hold = duration_s(command)
                node.valves[record.channel] = ValveState(open=state, revert_at=at + hold if hold is not None else None)
                node.valves_changed_at = at
        if command.cmd == "set_relay" and record.action in ("start", "stop"):
            self._nc_wire(record, on=record.action == "start", at=at)
        elif command.cmd == "run_pump":
            self._nc_wire(record, on=False, at=at)  # DONE: the timed run is over, the pump is off again

    # -- telemetry and events ---------------------------------------------------------------------------

    def _on_telemetry(self, topic: Topic, telemetry: Telemetry | None, at: float) -> None:
        if telemetry is None:
            self._counts["malformed"] += 1
            self._counts["malformed.telemetry"] += 1
            return
        self._counts["telemetry"] += 1
        if telemetry.metric in _GATED_METRICS:
            self._node(topic.node).flags = FlagReading(at=at, flow_active=telemetry.flow_active,
                                                       corrections_allowed=telemetry.corrections_allowed,
                                                       stable=telemetry.stable)
        if topic.channel in _LEVEL_SWITCHES:
            state = switch_state(telemetry.value)
            if state is not None:
                self._zone(topic.zone).levels[topic.channel] = state

    def _on_event(self, topic: Topic, event: Event | None, at: float) -> None:
        if event is None:
            self._counts["malformed"] += 1
            self._counts["malformed.event"] += 1
            return
        self._counts["events"] += 1
        zone = self._zone(topic.zone)
        if event.code == _ESTOP_EVENT:
            self._counts["estop_events"] += 1
            self._emergency_stop(zone, at)
        elif event.code == _LEVEL_SWITCH_EVENT:
            channel = event.channel if isinstance(event.channel, str) else topic.channel
            state = switch_state(event.state)
            if channel in _LEVEL_SWITCHES and state is not None:
                zone.levels[channel] = state
        details = event.details if isinstance(event.details, dict) else {}
        snapshot = snapshot_of(event.snapshot) or snapshot_of(details.get("snapshot"))
        if snapshot is not None:
            self._apply_snapshot(topic.zone, topic.node, snapshot, at)

    def _apply_snapshot(self, zone_uid: str, node_uid: str, snapshot: dict[str, bool], at: float) -> None:
        node = self._node(node_uid)
        for valve in rules.VALVES:
            if valve in snapshot:
                node.valves[valve] = ValveState(open=snapshot[valve])
                node.valves_changed_at = at
        # the node's own snapshot showing a channel off confirms the stops sent to it before (a stop answered
        # NO_EFFECT "already off" is confirmed this way: DONE to a probe, not to the stop)
        for cmd_id, stop in list(node.stops.items()):
            if snapshot.get(stop.channel) is False and stop.at <= at:
                del node.stops[cmd_id]
        levels = self._zone(zone_uid).levels
        for key, channel in _SNAPSHOT_LEVELS.items():
            if key in snapshot:
                levels[channel] = snapshot[key]

    # -- command-time rules -------------------------------------------------------------------------------

    def _judge_start(self, record: CommandRecord, at: float) -> list[Violation]:
        zone = self._zone(record.zone)
        node = self._node(record.node)
        limits = zone.limits
        found: list[Violation] = []

        def flag(rule: str, detail: str) -> None:
            found.append(self._violation(rule, record.zone, record.node, at, detail, cmd_id=record.cmd_id))

        what = f"{record.command.cmd} on {record.channel}"
        if zone.estop_since is not None:
            flag(START_DURING_ESTOP, f"{what} during the emergency stop of {zone.estop_since:.1f} (not cleared)")
        unconfirmed = [stop for stop in node.stops.values() if stop.cmd_id != record.cmd_id]
        if unconfirmed:
            listed = ", ".join(f"{stop.channel} ({stop.cmd_id}: {stop.terminal or 'no reply'})" for stop in unconfirmed)
            flag(START_WITHOUT_CONFIRMED_STOP, f"{what} before these stops were confirmed DONE: {listed}")
        is_main = record.channel == rules.MAIN_PUMP or (record.node, record.channel) == limits.nc_pump
        if is_main:
            open_valves = node.open_valves(at)
            if (limits.topology == "two_tank" and record.channel == rules.MAIN_PUMP
                    and rules.open_pump_path(open_valves) is None):
                flag(INTERLOCK_VIOLATION, f"{what} with no confirmed pump path open "
                                          f"(confirmed open: {sorted(open_valves) or 'none'})")
            for tank, how in self._dry_sources(zone, node, open_valves):
                flag(PUMP_ON_SOURCE_BELOW_MIN, f"{what} while its source, the {tank} tank, is below min ({how})")
        if record.command.cmd == "dose":
            flags = node.flags
            problem = rules.flags_problem(
                (flags.flow_active, flags.corrections_allowed, flags.stable) if flags else None,
                at - flags.at if flags else None, limits.flags_fresh_s)
            if problem is not None:
                flag(DOSE_WITHOUT_FLAGS, f"{what}: {problem}")
        return found

    def _dry_sources(self, zone: ZoneState, node: NodeState, wire_open: set[str]) -> list[tuple[Tank, str]]:
        """The main pump's source tanks that are below min, with how that is known.

        Which valves are open: the plant's physical valves when its reading is at least as recent as the
        last valve change confirmed on the wire, else the wire's (a sample taken before the valves opened
        would name the wrong tank). The level: the plant's true level, else the last switch on the wire.
        """
        plant = zone.plant
        plant_fresh = plant is not None and zone.plant_at is not None and (
            node.valves_changed_at is None or zone.plant_at >= node.valves_changed_at)
        valves = plant.valves if plant is not None and plant_fresh else wire_open
        dry: list[tuple[Tank, str]] = []
        for tank in rules.source_tanks(zone.limits, valves):
            if plant is not None:
                if plant.below_min(tank):
                    above = zone.above_min_at.get(tank)
                    since = f"; last reading at or above it at {above:.1f}" if above is not None else ""
                    dry.append((tank, f"plant level {plant.level_pct(tank):.1f} % < {plant.min_switch_pct:g} %{since}"))
                continue
            switch = zone.levels.get(f"level_{tank}_min")
            if switch is None:
                self._counts["levels_unknown"] += 1
            elif not switch:
                dry.append((tank, f"level_{tank}_min=0 on the wire"))
        return dry

    # -- plant rules --------------------------------------------------------------------------------------

    def _judge_dry_run(self, zone_uid: str, zone: ZoneState, plant: PlantReading, at: float) -> None:
        limits = zone.limits
        mains = {rules.MAIN_PUMP} | ({limits.nc_pump[1]} if limits.nc_pump is not None else set())
        for pump in sorted(mains):
            sources = rules.source_tanks(limits, plant.valves)
            dry = pump in plant.pumps and any(plant.below_min(tank) for tank in sources)
            if not dry:
                zone.dry_since.pop(pump, None)
                zone.dry_reported.discard(pump)
                continue
            since = zone.dry_since.setdefault(pump, at)
            if at - since > limits.grace_s and pump not in zone.dry_reported:
                zone.dry_reported.add(pump)
                self._violation(PUMP_ON_SOURCE_BELOW_MIN, zone_uid, None, at,
                                f"{pump} physically running with its source below min for {at - since:.1f} s "
                                f"(grace {limits.grace_s:g} s; clean {plant.clean_level_pct:.1f} %, "
                                f"solution {plant.solution_level_pct:.1f} %)")

    def _judge_nc_pump_plant(self, zone_uid: str, zone: ZoneState, plant: PlantReading, at: float) -> None:
        limits = zone.limits
        if limits.nc_pump is None or limits.max_recirc_off_s is None:
            return
        if limits.nc_pump[1] in plant.pumps:
            zone.nc_off_since, zone.nc_reported = None, False
            return
        if zone.nc_off_since is None:
            zone.nc_off_since = at
        self._judge_nc_off(zone_uid, zone, zone.nc_off_since, at, "physically")

    def _nc_wire(self, record: CommandRecord, *, on: bool, at: float) -> None:
        """Track the NC pump from DONE commands, for a zone without plant readings."""
        zone = self._zone(record.zone)
        if zone.limits.nc_pump != (record.node, record.channel):
            return
        zone.nc_reported = False  # a new on or off window: judged afresh
        if on:
            zone.nc_wire_off = None
            self._nc_wire_zones.discard(record.zone)
        else:
            hold = duration_s(record.command) if record.command.cmd == "set_relay" else None
            zone.nc_wire_off = (at, at + hold if hold is not None else None)
            self._nc_wire_zones.add(record.zone)

    def _judge_nc_off(self, zone_uid: str, zone: ZoneState, since: float, at: float, how: str) -> None:
        limit = zone.limits.max_recirc_off_s
        if limit is None or zone.nc_reported or zone.estop_since is not None:
            return  # an emergency stop legitimately stops the NC pump until it is cleared
        start = max(since, zone.estop_cleared_at) if zone.estop_cleared_at is not None else since
        if at - start > limit:
            zone.nc_reported = True
            node_uid, channel = zone.limits.nc_pump or ("", "")
            self._violation(NC_PUMP_OFF_TOO_LONG, zone_uid, node_uid, at,
                            f"NC pump {channel} {how} off for {at - start:.1f} s (limit {limit:g} s)")

    def _judge_marks(self, zone_uid: str, zone: ZoneState, plant: PlantReading | None, at: float) -> None:
        grace = zone.limits.grace_s
        for pending in [pending for pending in zone.marks if at >= pending.at + grace]:
            if pending.found_at is None and plant is not None:
                pending.found, pending.found_at = rules.left_running(zone.limits, plant), at
            if pending.found_at is None or (pending.found and pending.liftable
                                            and at < pending.found_at + grace * WIRE_LAG_SHARE):
                continue  # no reading yet, or a start that lifts it may still be on its way to the tap
            zone.marks.remove(pending)
            if pending.found:
                self._violation(LEFT_RUNNING_AFTER_STOP, zone_uid, None, pending.found_at,
                                f"{pending.found_at - pending.at:.1f} s after {pending.kind} at {pending.at:.1f}: "
                                f"{', '.join(pending.found)}")

    def _lift_marks(self, zone: ZoneState, at: float) -> None:
        lag = zone.limits.grace_s * WIRE_LAG_SHARE
        zone.marks = [pending for pending in zone.marks if not (
            pending.liftable and at >= pending.at and (pending.found_at is None or at < pending.found_at + lag))]

    def _emergency_stop(self, zone: ZoneState, at: float) -> None:
        if zone.estop_since is not None:
            return  # the same stop reported again (another node, or the campaign's mark)
        zone.estop_since = at
        zone.marks.append(StopMark(kind="emergency_stop", at=at, liftable=False))

    def _tick(self, at: float) -> None:
        """Time-based rules on wire knowledge alone (zones with plant readings are judged on those), and the
        verdicts on stops that have waited out the wire's lag."""
        for zone_uid, zone in self._zones.items():
            if zone.marks:
                self._judge_marks(zone_uid, zone, None, at)
        for zone_uid in list(self._nc_wire_zones):  # only these: _tick runs on every publish
            zone = self._zones[zone_uid]
            if zone.plant is not None or zone.nc_wire_off is None:
                continue
            since, reverts_at = zone.nc_wire_off
            if reverts_at is not None and at >= reverts_at:
                zone.nc_wire_off, zone.nc_reported = None, False  # the timed off window ended: back on
                self._nc_wire_zones.discard(zone_uid)
                continue
            self._judge_nc_off(zone_uid, zone, since, at, "commanded")

    # -- helpers ------------------------------------------------------------------------------------------

    def _zone(self, zone_uid: str) -> ZoneState:
        zone = self._zones.get(zone_uid)
        if zone is None:
            zone = self._zones[zone_uid] = ZoneState(limits=ZoneLimits())
        return zone

    def _node(self, node_uid: str) -> NodeState:
        node = self._nodes.get(node_uid)
        if node is None:
            node = self._nodes[node_uid] = NodeState()
        return node

    def _violation(self, rule: str, zone_uid: str, node_uid: str | None, at: float, detail: str, *,
                   cmd_id: str | None = None) -> Violation:
        violation = Violation(rule=rule, zone_uid=zone_uid, node_uid=node_uid, at=at, detail=detail, cmd_id=cmd_id)
        self.violations.append(violation)
        self._counts["violations"] += 1
        self._counts[f"violations.{rule}"] += 1
        log.warning("safety violation %s in zone %s: %s", rule, zone_uid, detail, extra={
            "event": "observer_violation", "rule": rule, "zone_id": zone_uid, "node_uid": node_uid,
            "cmd_id": cmd_id})
        return violation
