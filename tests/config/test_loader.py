"""Settings from defaults, TOML and HYDROVISOR_* variables; every bad input is one clear ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydrovisor.config import ConfigError, Environment, LogFormat, exposure, load_settings, public_view

TOKEN = "a-long-enough-token-123"


def test_defaults_without_file_or_environment() -> None:
    settings = load_settings(environ={})
    assert settings.http.port == 8080
    assert settings.mqtt.port == 1883
    assert settings.database.url is None
    assert settings.env is Environment.DEVELOPMENT
    assert settings.dev_mode is False


def test_environment_overrides_file_which_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text('log_format = "json"\n[http]\nport = 9000\nhost = "127.0.0.1"\n[mqtt]\nport = 1999\n')
    settings = load_settings(path, environ={"HYDROVISOR_HTTP_PORT": "9100", "HYDROVISOR_DEV_MODE": "yes"})
    assert settings.http.port == 9100
    assert settings.http.host == "127.0.0.1"
    assert settings.mqtt.port == 1999
    assert settings.log_format is LogFormat.JSON
    assert settings.dev_mode is True


def test_config_file_from_environment_variable(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text("[supervision]\nmax_restarts = 7\n")
    assert load_settings(environ={"HYDROVISOR_CONFIG": str(path)}).supervision.max_restarts == 7


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"HYDROVISOR_HTTP_PORT": "abc"}, "invalid HYDROVISOR_HTTP_PORT: Expected `int`"),
        ({"HYDROVISOR_MQTT_PORT": "70000"}, "invalid HYDROVISOR_MQTT_PORT: Expected `int` <= 65535"),
        ({"HYDROVISOR_DEV_MODE": "maybe"}, "HYDROVISOR_DEV_MODE='maybe' is not a boolean"),
        ({"HYDROVISOR_LOG_FORMAT": "xml"}, "invalid HYDROVISOR_LOG_FORMAT"),
        ({"HYDROVISOR_LOG_LEVEL": "LOUD"}, "log_level must be one of"),
        ({"HYDROVISOR_HTTP_PROT": "1"}, "HYDROVISOR_HTTP_PROT (did you mean HYDROVISOR_HTTP_PORT?)"),
        ({"HYDROVISOR_ENV": "production"}, "requires HYDROVISOR_API_TOKEN"),
        ({"HYDROVISOR_ENV": "production", "HYDROVISOR_API_TOKEN": TOKEN, "HYDROVISOR_DEV_MODE": "1"},
         "HYDROVISOR_DEV_MODE (anonymous devices) is refused"),
        ({"HYDROVISOR_API_TOKEN": "short"}, "api_token must be at least 16 characters"),
        ({"HYDROVISOR_API_TOKEN": TOKEN, "HYDROVISOR_ADMIN_TOKEN": TOKEN}, "must differ"),
        ({"HYDROVISOR_SHUTDOWN_TIMEOUT": "-1"}, "invalid HYDROVISOR_SHUTDOWN_TIMEOUT"),
    ],
)
def test_bad_environment_values_name_their_variable(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(environ=environ)
    assert fragment in str(error.value)


def test_secret_values_are_never_echoed_in_errors() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(environ={"HYDROVISOR_DATABASE_URL": "x", "HYDROVISOR_DATABASE_POOL_MAX": "0"})
    assert "x'" not in str(error.value) or "DATABASE_URL" not in str(error.value)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("[http\nport=1", "is not valid TOML"),
        ("[http]\nprot = 1\n", "Object contains unknown field `prot`"),
        ("[database]\npool_min = 5\npool_max = 2\n", "pool_min must not exceed"),
    ],
)
def test_bad_files_are_reported_with_their_path(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert fragment in str(error.value)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_public_view_masks_secrets() -> None:
    settings = load_settings(environ={"HYDROVISOR_API_TOKEN": TOKEN,
                                      "HYDROVISOR_DATABASE_URL": "postgresql://u:pw@h/db"})
    view = public_view(settings)
    assert view["api_token"] == "<set>"
    assert view["database"]["url"] == "<set>"
    assert TOKEN not in repr(view)
    assert view["admin_token"] is None


def test_listeners_without_credentials_bind_to_loopback_by_default() -> None:
    dev = load_settings(environ={"HYDROVISOR_DEV_MODE": "1"})
    http, mqtt = exposure.listeners(dev)
    assert (http.host, mqtt.host) == ("127.0.0.1", "127.0.0.1")
    tokenless = exposure.listeners(load_settings(environ={}))
    assert [listener.host for listener in tokenless] == ["127.0.0.1", "0.0.0.0"]  # devices need credentials
    production = load_settings(environ={"HYDROVISOR_ENV": "production", "HYDROVISOR_API_TOKEN": TOKEN})
    assert [listener.host for listener in exposure.listeners(production)] == ["0.0.0.0", "0.0.0.0"]
    assert not any(listener.exposed for listener in exposure.listeners(production))


@pytest.mark.parametrize(
    "environ",
    [
        {"HYDROVISOR_DEV_MODE": "1", "HYDROVISOR_MQTT_HOST": "0.0.0.0"},
        {"HYDROVISOR_DEV_MODE": "1", "HYDROVISOR_API_TOKEN": TOKEN, "HYDROVISOR_MQTT_HOST": "192.0.2.7"},
        {"HYDROVISOR_HTTP_HOST": "0.0.0.0"},  # no token
        {"HYDROVISOR_HTTP_HOST": "greenhouse.example"},  # a name may resolve anywhere
    ],
)
def test_a_listener_without_credentials_beyond_loopback_needs_the_opt_in(environ: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="HYDROVISOR_ALLOW_REMOTE_DEV=1") as error:
        load_settings(environ=environ)
    assert "without credentials" in str(error.value)
    allowed = load_settings(environ={**environ, "HYDROVISOR_ALLOW_REMOTE_DEV": "1"})
    assert any(listener.exposed for listener in exposure.listeners(allowed))


def test_explicit_loopback_and_credentialed_hosts_need_no_opt_in() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        load_settings(environ={"HYDROVISOR_DEV_MODE": "1", "HYDROVISOR_MQTT_HOST": host, "HYDROVISOR_HTTP_HOST": host})
    settings = load_settings(environ={"HYDROVISOR_API_TOKEN": TOKEN, "HYDROVISOR_HTTP_HOST": "0.0.0.0",
                                      "HYDROVISOR_MQTT_HOST": "0.0.0.0"})
    assert not any(listener.exposed for listener in exposure.listeners(settings))


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"HYDROVISOR_TIME_SCALE": "0"}, "invalid HYDROVISOR_TIME_SCALE: Expected `float` > 0.0"),
        ({"HYDROVISOR_TIME_SCALE": "-2"}, "invalid HYDROVISOR_TIME_SCALE"),
        ({"HYDROVISOR_TIME_SCALE": "fast"}, "invalid HYDROVISOR_TIME_SCALE: Expected `float`"),
        ({"HYDROVISOR_TIME_SCALE": "nan"}, "invalid HYDROVISOR_TIME_SCALE"),
        ({"HYDROVISOR_TIME_SCALE": "inf"}, "time_scale must be a finite number > 0"),
        ({"HYDROVISOR_ENV": "production", "HYDROVISOR_API_TOKEN": TOKEN, "HYDROVISOR_TIME_SCALE": "60"},
         "HYDROVISOR_TIME_SCALE=60 is refused with HYDROVISOR_ENV=production"),
        # slower is refused too: it stretches every staleness limit and safety timeout
        ({"HYDROVISOR_ENV": "production", "HYDROVISOR_API_TOKEN": TOKEN, "HYDROVISOR_TIME_SCALE": "0.5"},
         "HYDROVISOR_TIME_SCALE=0.5 is refused with HYDROVISOR_ENV=production"),
    ],
)
def test_time_scale_is_positive_and_real_time_in_production(environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(environ=environ)
    assert fragment in str(error.value)


def test_time_scale_defaults_to_real_time_and_scales_outside_production(tmp_path: Path) -> None:
    assert load_settings(environ={}).time_scale == 1.0
    assert load_settings(environ={"HYDROVISOR_TIME_SCALE": "60"}).time_scale == 60.0
    assert load_settings(environ={"HYDROVISOR_ENV": "production", "HYDROVISOR_API_TOKEN": TOKEN,
                                  "HYDROVISOR_TIME_SCALE": "1"}).time_scale == 1.0
    path = tmp_path / "h.toml"
    path.write_text("time_scale = 0.25\n")
    assert load_settings(path, environ={}).time_scale == 0.25
    path.write_text('env = "production"\napi_token = "a-long-enough-token-123"\ntime_scale = 2\n')
    with pytest.raises(ConfigError, match="refused with HYDROVISOR_ENV=production"):
        load_settings(path, environ={})
