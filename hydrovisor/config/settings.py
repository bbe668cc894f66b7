"""Typed settings. Every default lives here; ``hydrovisor config`` prints the effective values."""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

from hydrovisor.broker.limits import BrokerLimits
from hydrovisor.supervisors.pool import PoolSettings

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


class ActorSettings(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The worker pool that runs pooled actors (``ChildSpec.execution``: node, zone, command actors)."""

    workers: Annotated[int, msgspec.Meta(ge=1, le=256)] = 4  # core worker threads
    turn_messages: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 32  # messages per turn, then the actor yields
    # extra workers started while core ones wait in a blocking call or are stuck in one turn (non-strict mode)
    max_spare_workers: Annotated[int, msgspec.Meta(ge=0, le=1024)] = 16
    stuck_after_s: PositiveFloat = 2.0  # a turn running longer is stuck: incident, spare worker, stack dumped
    # a blocking call (ask, bridge wait) in a pooled handler raises instead of being compensated;
    # unset: strict unless env is production (HYDROVISOR_STRICT_BLOCKING=1/0 overrides)
    strict_blocking: bool | None = None

    def strict(self, env: Environment) -> bool:
        """Whether blocking calls on pool workers raise (``strict_blocking``, else all but production)."""
        return env is not Environment.PRODUCTION if self.strict_blocking is None else self.strict_blocking

    def pool(self, env: Environment) -> PoolSettings:
        """The actor system's worker pool from these settings."""
        return PoolSettings(workers=self.workers, turn_messages=self.turn_messages,
                            max_spare_workers=self.max_spare_workers, stuck_after=self.stuck_after_s,
                            strict=self.strict(env))


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
    # the greenhouse's IANA time zone: schedules (recirculation windows, water changes) are in its local time
    timezone: str = "UTC"
    # notifications: command status changes are POSTed to every URL (empty: acknowledged, not sent)
    webhook_urls: list[str] = []
    http: HttpSettings = HttpSettings()
    mqtt: MqttSettings = MqttSettings()
    database: DatabaseSettings = DatabaseSettings()
    supervision: SupervisionSettings = SupervisionSettings()
    actors: ActorSettings = ActorSettings()
    system: SystemSettings = SystemSettings()
