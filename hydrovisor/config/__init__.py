"""Configuration: typed settings, TOML file, ``HYDROVISOR_*`` overrides, validation (exit 77)."""

from hydrovisor.config import exposure
from hydrovisor.config.loader import ConfigError, load_settings, public_view
from hydrovisor.config.settings import Environment, LogFormat, Settings

__all__ = ["ConfigError", "Environment", "LogFormat", "Settings", "exposure", "load_settings", "public_view"]
