"""``[actors]``: the worker pool's size and limits, and whether a blocking call in a pooled handler
raises (strict) — by default everywhere but production, ``HYDROVISOR_STRICT_BLOCKING`` overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from hydrovisor.config import ConfigError, Environment, load_settings, public_view
from hydrovisor.config.settings import ActorSettings
from hydrovisor.supervisors import PoolSettings

TOKEN = "a-long-enough-token-123"
PRODUCTION = {"HYDROVISOR_ENV": "production", "HYDROVISOR_API_TOKEN": TOKEN}


def test_defaults_build_the_pool_settings() -> None:
    settings = load_settings(environ={})
    assert settings.actors == ActorSettings(workers=4, turn_messages=32, max_spare_workers=16, stuck_after_s=2.0,
                                            strict_blocking=None)
    assert settings.actors.pool(settings.env) == PoolSettings(workers=4, turn_messages=32, max_spare_workers=16,
                                                              stuck_after=2.0, strict=True)
    assert public_view(settings)["actors"]["strict_blocking"] is None


@pytest.mark.parametrize(
    ("environ", "strict"),
    [
        ({}, True),  # development
        (PRODUCTION, False),  # production compensates with spare workers
        ({**PRODUCTION, "HYDROVISOR_STRICT_BLOCKING": "1"}, True),
        ({"HYDROVISOR_STRICT_BLOCKING": "0"}, False),
        ({"HYDROVISOR_STRICT_BLOCKING": "off"}, False),
        ({**PRODUCTION, "HYDROVISOR_STRICT_BLOCKING": ""}, False),  # empty: unset, the default of the env
    ],
)
def test_strict_blocking_defaults_by_env_and_the_variable_overrides(environ: dict[str, str], strict: bool) -> None:
    settings = load_settings(environ=environ)
    assert settings.actors.pool(settings.env).strict is strict


def test_strict_blocking_from_the_file_and_the_variable_over_it(tmp_path: Path) -> None:
    path = tmp_path / "h.toml"
    path.write_text("[actors]\nworkers = 8\nturn_messages = 5\nmax_spare_workers = 0\nstuck_after_s = 0.5\n"
                    "strict_blocking = false\n")
    settings = load_settings(path, environ={})
    assert settings.actors.pool(Environment.DEVELOPMENT) == PoolSettings(
        workers=8, turn_messages=5, max_spare_workers=0, stuck_after=0.5, strict=False)
    assert load_settings(path, environ={"HYDROVISOR_STRICT_BLOCKING": "yes"}).actors.strict(Environment.DEVELOPMENT)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("[actors]\nworkers = 0\n", "Expected `int` >= 1 - at `$.actors.workers`"),
        ("[actors]\nworkers = 10000\n", "Expected `int` <= 256 - at `$.actors.workers`"),
        ("[actors]\nturn_messages = 0\n", "at `$.actors.turn_messages`"),
        ("[actors]\nmax_spare_workers = -1\n", "Expected `int` >= 0 - at `$.actors.max_spare_workers`"),
        ("[actors]\nstuck_after_s = 0\n", "Expected `float` > 0.0 - at `$.actors.stuck_after_s`"),
        ("[actors]\nstrict_blocking = \"sometimes\"\n", "at `$.actors.strict_blocking`"),
        ("[actors]\nworker = 3\n", "unknown field `worker`"),
        ("[actors]\nstuck_after_s = 30\n", "actors.stuck_after_s must be less than supervision.hang_timeout"),
    ],
)
def test_bad_actor_settings_are_one_clear_config_error(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "h.toml"
    path.write_text(content)
    with pytest.raises(ConfigError) as error:
        load_settings(path, environ={})
    assert fragment in str(error.value)


def test_a_bad_strict_blocking_variable_names_itself() -> None:
    with pytest.raises(ConfigError, match="HYDROVISOR_STRICT_BLOCKING='maybe' is not a boolean"):
        load_settings(environ={"HYDROVISOR_STRICT_BLOCKING": "maybe"})
