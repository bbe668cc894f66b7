"""Timing and behaviour knobs of a simulated node, and the config of a node already set up in the field."""

from __future__ import annotations

import math

import msgspec

from hydrovisor.protocol import validate_segment

__all__ = ["FieldConfig", "NodeOptions"]


class NodeOptions(msgspec.Struct, frozen=True, kw_only=True):
    """How a simulated node behaves. Durations are real seconds unless said otherwise.

    - ``keep_alive_s``: MQTT keep-alive sent in CONNECT (firmware default 30).
    - ``heartbeat_interval_s`` (firmware 15), ``status_interval_s`` (retained ``ONLINE``, firmware 60),
      ``telemetry_interval_s``: the poll interval of every sensor channel (one message per channel each time).
    - ``time_request_retry_s``: re-ask the time this often until answered.
    - ``reconnect_delay_s``: wait before reconnecting after a lost connection or a refused CONNECT.
    - ``restart_delay_s``: how long a ``restart{}`` keeps the node away.
    - ``time_scale``: real seconds per simulated second for actuator runs and physics
      (``run_pump{duration_ms:2500}`` takes 2.5 s times ``time_scale``; 0.01 makes it 25 ms).
    - ``sensor_stabilize_s``: simulated seconds after ``activate_sensor_mode`` until pH/EC readings are stable.
    - ``trust_local_clock``: consider the clock synced at boot (real firmware never does; for load tests
      against a bare broker with nobody answering time requests).
    - ``omit_stable_when_true``: firmware omits ``stable`` when the reading is stable; False always sends it.
    - ``echo_secret``: ``config_report`` echoes ``node_secret`` like the firmware's full stored config.
    """

    keep_alive_s: int = 30
    heartbeat_interval_s: float = 15.0
    status_interval_s: float = 60.0
    telemetry_interval_s: float = 5.0
    time_request_retry_s: float = 10.0
    reconnect_delay_s: float = 2.0
    restart_delay_s: float = 1.0
    connect_timeout_s: float = 10.0
    time_scale: float = 1.0
    sensor_stabilize_s: float = 10.0
    trust_local_clock: bool = False
    omit_stable_when_true: bool = True
    echo_secret: bool = True
    fw_version: str = "sim-2.0.0"
    hardware_revision: str = "sim-rev-a"

    def __post_init__(self) -> None:
        if isinstance(self.keep_alive_s, bool) or not isinstance(self.keep_alive_s, int) or not (
            0 <= self.keep_alive_s <= 65535
        ):
            raise ValueError("NodeOptions.keep_alive_s must be an integer in [0, 65535]")
        for name in ("heartbeat_interval_s", "status_interval_s", "telemetry_interval_s", "time_request_retry_s",
                     "connect_timeout_s", "time_scale"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"NodeOptions.{name} must be a positive number, not {value!r}")
        for name in ("reconnect_delay_s", "restart_delay_s", "sensor_stabilize_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"NodeOptions.{name} must be a number >= 0, not {value!r}")


class FieldConfig(msgspec.Struct, frozen=True, kw_only=True):
    """What a node already configured in the field has stored: it boots straight into its namespace.

    ``repr`` masks the secret.
    """

    gh_uid: str
    zone_uid: str
    node_uid: str
    node_secret: str

    def __post_init__(self) -> None:
        for what, value in (("gh_uid", self.gh_uid), ("zone_uid", self.zone_uid), ("node_uid", self.node_uid)):
            problem = validate_segment(value, what, strict=True)
            if problem is not None:
                raise ValueError(problem.detail)
        if not self.node_secret:
            raise ValueError("FieldConfig.node_secret must not be empty")

    def __repr__(self) -> str:
        return (f"FieldConfig(gh_uid={self.gh_uid!r}, zone_uid={self.zone_uid!r}, node_uid={self.node_uid!r}, "
                "node_secret=<redacted>)")
