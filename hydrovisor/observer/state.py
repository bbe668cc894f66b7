"""What the observer believes, per command, node and zone; filled only from what it observed itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydrovisor.observer.model import PlantReading, ZoneLimits
from hydrovisor.observer.wire import Action, Command

__all__ = ["CommandRecord", "FlagReading", "NodeState", "PendingStop", "StopMark", "ValveState", "ZoneState"]


@dataclass
class CommandRecord:
    """One command seen on the wire: where it went, whether it starts or stops something, how it was answered
    (``terminal``: the first terminal status, PROTOCOL §5)."""

    cmd_id: str
    zone: str
    node: str
    channel: str
    command: Command
    action: Action
    at: float
    acked: bool = False
    terminal: str | None = None


@dataclass
class ValveState:
    """A valve state confirmed on the wire; a timed ``set_relay`` reverts by itself at ``revert_at``."""

    open: bool
    revert_at: float | None = None

    def is_open(self, at: float) -> bool:
        """Open at ``at``, taking a timed command's revert into account."""
        if self.revert_at is not None and at >= self.revert_at:
            return not self.open
        return self.open


@dataclass
class PendingStop:
    """A stop not confirmed yet: no terminal reply (``terminal`` None) or one that was not DONE."""

    cmd_id: str
    channel: str
    at: float
    terminal: str | None = None


@dataclass
class FlagReading:
    """The dosing flags of a node's latest PH/EC reading, as received (``wire.UNSET`` when absent)."""

    at: float
    flow_active: Any
    corrections_allowed: Any
    stable: Any


@dataclass
class NodeState:
    """A node as the wire shows it: confirmed valve states, stops not confirmed yet, latest pH/EC flags."""

    valves: dict[str, ValveState] = field(default_factory=dict)
    valves_changed_at: float | None = None
    stops: dict[str, PendingStop] = field(default_factory=dict)
    flags: FlagReading | None = None

    def open_valves(self, at: float) -> set[str]:
        """The valves confirmed open at ``at``."""
        return {name for name, valve in self.valves.items() if valve.is_open(at)}


@dataclass
class StopMark:
    """A stop the zone must honour: after ``grace_s`` nothing may run (checked on the first plant reading
    due). ``liftable``: a later start command lifts it (not for an emergency stop until cleared).
    ``found``/``found_at``: what the due reading found running; it counts only if no start is seen on the
    wire within the wire's lag after it (a node can act on a start before the tap hears of it)."""

    kind: str
    at: float
    liftable: bool
    found: list[str] = field(default_factory=list)
    found_at: float | None = None


@dataclass
class ZoneState:
    """A zone: its limits, latest plant reading, level switches heard on the wire, emergency stop, pending
    stop marks and the running clocks of the time-based rules."""

    limits: ZoneLimits
    plant: PlantReading | None = None
    plant_at: float | None = None
    levels: dict[str, bool] = field(default_factory=dict)  # level switches as last heard on the wire
    estop_since: float | None = None
    estop_cleared_at: float | None = None
    marks: list[StopMark] = field(default_factory=list)
    dry_since: dict[str, float] = field(default_factory=dict)  # main pump -> physically dry since
    dry_reported: set[str] = field(default_factory=set)
    above_min_at: dict[str, float] = field(default_factory=dict)  # tank -> last reading at or above its min
    nc_off_since: float | None = None  # NC pump physically off since (plant readings)
    nc_wire_off: tuple[float, float | None] | None = None  # (off since, reverts at) from DONE commands
    nc_reported: bool = False
