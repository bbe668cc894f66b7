"""Typed settings. Every default lives here; ``hydrovisor config`` prints the effective values."""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from hydrovisor.broker.limits import BrokerLimits

Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]


class Environment(enum.StrEnum):
    """``production`` refuses to start without an API token."""

    DEVELOPMENT = "development"
    PRODUCTION = "production"


class LogFormat(enum.StrEnum):
    """Human text lines or one JSON object per line."""

    TEXT = "text"
    JSON = "json"


class HttpSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """HTTP API listener and request limits."""

    # unset: 127.0.0.1 while no API token is configured, else 0.0.0.0 (config/exposure.py)
    host: str | None = None
    port: Port = 8080
    max_body_bytes: PositiveInt = 1024 * 1024


class MqttSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Embedded MQTT broker listener."""

    # unset: 127.0.0.1 in dev mode (anonymous devices), else 0.0.0.0 (config/exposure.py)
    host: str | None = None
    port: Port = 1883
    # a device PUBLISH/SUBSCRIBE larger than this closes its connection (Protocol 2.0 messages are < 4 KiB)
    max_packet_bytes: Annotated[int, msgspec.Meta(ge=1024, le=16 * 1024 * 1024)] = 256 * 1024
    # unstored (so unacknowledged) messages before the broker stops reading: per device, and in all
    inflight_per_client: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 100
    inflight_total: PositiveInt = 20_000
    inflight_total_bytes: PositiveInt = 64 * 1024 * 1024

    def limits(self) -> BrokerLimits:
        """The broker's bounds from these settings."""
        return BrokerLimits(max_packet_bytes=self.max_packet_bytes, inflight_per_client=self.inflight_per_client,
                            inflight_total=self.inflight_total, inflight_total_bytes=self.inflight_total_bytes)


class DatabaseSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """PostgreSQL: ``url`` unset starts the embedded server in ``<data_dir>/pg``."""

    url: str | None = None
    pool_min: PositiveInt = 1
    pool_max: PositiveInt = 10
    connect_timeout: PositiveFloat = 5.0
    health_interval: PositiveFloat = 5.0


class SupervisionSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Root intensity and the caps of the dynamic subtrees."""

    max_restarts: Annotated[int, msgspec.Meta(ge=0)] = 5
    period: PositiveFloat = 10.0
    max_nodes: PositiveInt = 10_000
    max_zones: PositiveInt = 1_000
    max_commands: PositiveInt = 2_000
    hang_timeout: PositiveFloat = 30.0
    liveness_interval: PositiveFloat = 1.0


class SystemSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The system state machine and the loop guard (DOMAIN §6)."""

    degraded_after: PositiveInt = 3  # consecutive errors: RUNNING -> DEGRADED
    safe_mode_after: PositiveInt = 5  # consecutive errors: -> SAFE_MODE
    recovery_cycles: PositiveInt = 3  # good cycles: SAFE_MODE -> RECOVERING, then -> RUNNING
    safe_mode_ttl: PositiveFloat = 900.0  # a SAFE_MODE episode longer than this is FATAL (exit 10)
    cycle_interval: PositiveFloat = 5.0  # one health evaluation cycle
    loop_stall_threshold: PositiveFloat = 2.0  # the loop ran nothing for this long: a stall
    guard_interval: PositiveFloat = 0.1  # how often the guard pings the loop
    fatal_exit_grace: PositiveFloat = 5.0  # FATAL with a stalled loop: exit hard after this long
    incidents_kept: PositiveInt = 200


class Settings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Everything ``hydrovisor run`` needs; decoded from TOML + ``HYDROVISOR_*`` variables."""

    env: Environment = Environment.DEVELOPMENT
    data_dir: str = "data"
    api_token: str | None = None
    admin_token: str | None = None
    dev_mode: bool = False
    # lets a listener that needs no credentials bind beyond loopback (warned at every start)
    allow_remote_dev: bool = False
    chaos_enabled: bool = False
    log_format: LogFormat = LogFormat.TEXT
    log_level: str = "INFO"
    debug_loop: bool = False
    shutdown_timeout: PositiveFloat = 20.0
    loop_lag_interval: PositiveFloat = 0.25
    # clock seconds per real second for every timer, the zone logic and the simulator (zones/clock.py):
    # > 1 runs a simulated day in minutes (tests, development); production refuses anything but 1.0
    time_scale: PositiveFloat = 1.0
    # notifications: command status changes are POSTed to every URL (empty: acknowledged, not sent)
    webhook_urls: list[str] = []
    http: HttpSettings = HttpSettings()
    mqtt: MqttSettings = MqttSettings()
    database: DatabaseSettings = DatabaseSettings()
    supervision: SupervisionSettings = SupervisionSettings()
    system: SystemSettings = SystemSettings()
