"""Load settings: defaults <- TOML file <- ``HYDROVISOR_*`` environment variables.

Any problem (unreadable file, bad TOML, unknown key or variable, wrong type, unsafe
combination) raises :class:`ConfigError` with one message that names its source; the CLI
prints it and exits with code 77.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
import urllib.parse
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import msgspec

from hydrovisor.config import exposure
from hydrovisor.config.settings import Environment, Settings

PREFIX = "HYDROVISOR_"

# variable -> dotted settings key; the one place that names every supported variable
ENV_KEYS: dict[str, str] = {
    "HYDROVISOR_ENV": "env",
    "HYDROVISOR_DATA_DIR": "data_dir",
    "HYDROVISOR_API_TOKEN": "api_token",
    "HYDROVISOR_ADMIN_TOKEN": "admin_token",
    "HYDROVISOR_DEV_MODE": "dev_mode",
    "HYDROVISOR_ALLOW_REMOTE_DEV": "allow_remote_dev",
    "HYDROVISOR_CHAOS_ENABLED": "chaos_enabled",
    "HYDROVISOR_LOG_FORMAT": "log_format",
    "HYDROVISOR_LOG_LEVEL": "log_level",
    "HYDROVISOR_DEBUG_LOOP": "debug_loop",
    "HYDROVISOR_SHUTDOWN_TIMEOUT": "shutdown_timeout",
    "HYDROVISOR_TIME_SCALE": "time_scale",
    "HYDROVISOR_TIMEZONE": "timezone",
    "HYDROVISOR_HTTP_HOST": "http.host",
    "HYDROVISOR_HTTP_PORT": "http.port",
    "HYDROVISOR_HTTP_MAX_BODY_BYTES": "http.max_body_bytes",
    "HYDROVISOR_MQTT_HOST": "mqtt.host",
    "HYDROVISOR_MQTT_PORT": "mqtt.port",
    "HYDROVISOR_DATABASE_URL": "database.url",
    "HYDROVISOR_DATABASE_POOL_MAX": "database.pool_max",
    "HYDROVISOR_MAX_COMMANDS": "supervision.max_commands",
    "HYDROVISOR_STRICT_BLOCKING": "actors.strict_blocking",
    "HYDROVISOR_WEBHOOK_URLS": "webhook_urls",  # comma-separated
}
CONFIG_FILE_VAR = "HYDROVISOR_CONFIG"
SECRET_KEYS = frozenset({"api_token", "admin_token", "database.url", "webhook_urls"})  # URLs may embed tokens
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


class ConfigError(Exception):
    """Invalid configuration; ``str(exc)`` is the one line shown to the operator."""

    code = "config_invalid"


def load_settings(path: Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Build :class:`Settings`; ``path`` falls back to ``$HYDROVISOR_CONFIG``."""
    env = dict(os.environ if environ is None else environ)
    file_path = path or (Path(env[CONFIG_FILE_VAR]) if env.get(CONFIG_FILE_VAR) else None)
    raw: dict[str, Any] = _read_toml(file_path) if file_path else {}
    origins: dict[str, str] = {}
    for var, value in sorted(env.items()):
        if not var.startswith(PREFIX) or var == CONFIG_FILE_VAR:
            continue
        key = ENV_KEYS.get(var)
        if key is None:
            hint = difflib.get_close_matches(var, [*ENV_KEYS, CONFIG_FILE_VAR], n=1)
            suffix = f" (did you mean {hint[0]}?)" if hint else ""
            raise ConfigError(f"unknown setting {var}{suffix}")
        _set(raw, key, _env_value(var, key, value))
        origins[key] = var
    try:
        settings = msgspec.convert(raw, Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise ConfigError(_explain(exc, origins, env, file_path)) from None
    _check(settings)
    return settings


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _env_value(var: str, key: str, value: str) -> Any:
    """Environment strings to the types msgspec's lax mode does not convert itself."""
    field = key.rsplit(".", 1)[-1]
    if field == "strict_blocking" and value.strip() == "":
        return None  # tri-state: empty is unset (strict unless production), not false
    if field in {"dev_mode", "allow_remote_dev", "chaos_enabled", "debug_loop", "strict_blocking"}:
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise ConfigError(f"{var}={value!r} is not a boolean (use 1/0, true/false, yes/no, on/off)")
    if key in {"api_token", "admin_token", "database.url", "http.host", "mqtt.host"} and value == "":
        return None
    if key == "webhook_urls":
        return [url.strip() for url in value.split(",") if url.strip()]
    return value


def _set(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config key {part!r} must be a table")
        node = child
    node[leaf] = value


def _explain(
    exc: msgspec.ValidationError, origins: dict[str, str], env: dict[str, str], file_path: Path | None
) -> str:
    text = str(exc)
    location = text.rsplit("at `$.", 1)[-1].rstrip("`") if "at `$." in text else ""
    key = location.replace("[", ".").replace("]", "")
    if key in origins:
        shown = "<hidden>" if key in SECRET_KEYS else env.get(origins[key], "")
        return f"invalid {origins[key]}: {text.split(' - at ', maxsplit=1)[0]} (value {shown!r})"
    source = f"config file {file_path}" if file_path else "configuration"
    return f"invalid {source}: {text}"


def _check(settings: Settings) -> None:
    """Rules that span fields."""
    if settings.log_level.upper() not in _LOG_LEVELS:
        raise ConfigError(f"log_level must be one of {sorted(_LOG_LEVELS)}, got {settings.log_level!r}")
    if settings.env is Environment.PRODUCTION and not settings.api_token:
        raise ConfigError("HYDROVISOR_ENV=production requires HYDROVISOR_API_TOKEN (the API bearer token)")
    if settings.env is Environment.PRODUCTION and settings.dev_mode:
        raise ConfigError("HYDROVISOR_DEV_MODE (anonymous devices) is refused with HYDROVISOR_ENV=production")
    if not math.isfinite(settings.time_scale):
        raise ConfigError(f"time_scale must be a finite number > 0, got {settings.time_scale!r}")
    if settings.env is Environment.PRODUCTION and settings.time_scale != 1.0:
        # a scaled clock shortens (or stretches) every safety timeout and staleness limit: tests only
        raise ConfigError(f"HYDROVISOR_TIME_SCALE={settings.time_scale:g} is refused with HYDROVISOR_ENV=production "
                          "(only 1 is allowed)")
    try:
        zoneinfo.ZoneInfo(settings.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"timezone must be an IANA time zone such as Europe/Moscow, got {settings.timezone!r}") \
            from None
    for name in ("api_token", "admin_token"):
        token = getattr(settings, name)
        if token is not None and len(token) < 16:
            raise ConfigError(f"{name} must be at least 16 characters")
    if settings.api_token and settings.api_token == settings.admin_token:
        raise ConfigError("api_token and admin_token must differ")
    exposed = exposure.problem(settings)
    if exposed is not None:
        raise ConfigError(exposed)
    if settings.database.pool_min > settings.database.pool_max:
        raise ConfigError("database.pool_min must not exceed database.pool_max")
    system = settings.system
    if system.safe_mode_after <= system.degraded_after:
        raise ConfigError("system.safe_mode_after must be greater than system.degraded_after")
    if system.guard_interval * 2 > system.loop_stall_threshold:
        raise ConfigError("system.guard_interval must be at most half of system.loop_stall_threshold")
    if settings.actors.stuck_after_s >= settings.supervision.hang_timeout:
        # the supervisor would abandon the actor before the watchdog saw a stuck turn: no incident, no stack
        raise ConfigError("actors.stuck_after_s must be less than supervision.hang_timeout")
    for position, url in enumerate(settings.webhook_urls, start=1):
        try:
            parts = urllib.parse.urlsplit(url)
            valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # e.g. a port that is not a number
            valid = False
        if not valid:  # the URL itself is not shown: it may carry a token
            raise ConfigError(f"webhook_urls: entry {position} is not an http(s) URL with a host")


def public_view(settings: Settings) -> dict[str, Any]:
    """Settings as a dict with secrets masked, for ``hydrovisor config`` and logs."""
    data: dict[str, Any] = msgspec.to_builtins(settings)
    for dotted in SECRET_KEYS:
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        if node.get(leaf):
            node[leaf] = "<set>"
    return data

