"""Failure modes a simulated node can be told to exhibit (one ``Faults`` value per node).

Every probability is drawn per occasion from the node's seeded RNG, so a run with the same seed
and the same traffic misbehaves the same way. ``Faults()`` is a well-behaved node.
"""

from __future__ import annotations

import math

import msgspec

__all__ = ["Faults"]

_PROBABILITIES = ("drop_reply", "duplicate_reply", "contradictory_terminal", "overcurrent", "no_flow", "bad_json")


class Faults(msgspec.Struct, frozen=True, kw_only=True):
    """How a node misbehaves. Probabilities are in [0, 1]; durations in real seconds.

    - ``drop_reply``: each ``command_response`` publish is silently skipped with this probability.
    - ``delay_reply_s`` (+ uniform ``delay_jitter_s``): wait before each ``command_response``.
    - ``duplicate_reply``: each ``command_response`` is published twice with this probability.
    - ``contradictory_terminal``: a ``DONE`` is followed by a second ``ACK`` and a ``BUSY`` (field simulators
      do this; the first terminal is final).
    - ``overcurrent``: a pump start (``run_pump``, ``dose``, ``set_relay`` on) trips: the node answers
      ``ERROR`` with ``error_code=overcurrent`` and ``details{current_ma, threshold_ma}``, and publishes the
      same as an ``error`` report (``level ERROR, component=<channel>``).
    - ``no_flow``: a pump run moves no water: the command still ends ``DONE`` (the node cannot tell) but
      ``FLOW_RATE`` reads 0 and the tank level does not change — the server must notice.
    - ``stuck_relays``: channels whose relay is welded: once on, the load stays on whatever the node is told
      (``set_relay`` off and the end of a ``run_pump`` still answer ``DONE``; current and flow go on).
    - ``frozen_sensors``: sensor channels whose telemetry repeats the first value they published.
    - ``inconsistent_levels``: tanks (``clean``, ``solution``) whose switches read ``max=1, min=0`` (telemetry,
      events and snapshots alike).
    - ``offline_every_s``: mean time between offline windows (exponentially distributed; None = never).
      In a window the node drops its TCP connection without DISCONNECT (the broker fires the LWT), stays
      away ``offline_duration_s`` and reconnects.
    - ``bad_json``: a telemetry, heartbeat or command_response payload is corrupted (not valid JSON).
    - ``uptime_timestamps``: telemetry ``ts`` is the device uptime in seconds instead of Unix time.
    - ``errors_in_details``: ``error_code``/``error_message`` go inside ``details`` (simulator style)
      instead of top level (firmware style).
    """

    drop_reply: float = 0.0
    delay_reply_s: float = 0.0
    delay_jitter_s: float = 0.0
    duplicate_reply: float = 0.0
    contradictory_terminal: float = 0.0
    overcurrent: float = 0.0
    no_flow: float = 0.0
    offline_every_s: float | None = None
    offline_duration_s: float = 5.0
    bad_json: float = 0.0
    uptime_timestamps: bool = False
    errors_in_details: bool = False
    stuck_relays: tuple[str, ...] = ()
    frozen_sensors: tuple[str, ...] = ()
    inconsistent_levels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise ValueError(f"Faults.{name} must be a probability in [0, 1], not {value!r}")
        for name in ("delay_reply_s", "delay_jitter_s", "offline_duration_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"Faults.{name} must be a finite number >= 0, not {value!r}")
        if self.offline_every_s is not None and not (math.isfinite(self.offline_every_s) and self.offline_every_s > 0):
            raise ValueError("Faults.offline_every_s must be a positive number or None")
        unknown = sorted(set(self.inconsistent_levels) - {"clean", "solution"})
        if unknown:
            raise ValueError(f"Faults.inconsistent_levels names tanks clean/solution, not {unknown}")
