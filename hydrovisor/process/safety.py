"""Which commands SAFE_MODE lets through: the ones that can only make things safer.

Allowed: fail-safe OFF (``set_relay`` to off, ``set_pwm`` to 0, ``light_off``) and the commands that
only read (``state``, ``report_config``). Everything else — pumps, dosing, relays on, calibration,
restarts — is new actuation and is refused while the system is in SAFE_MODE or FATAL.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

READ_ONLY = frozenset({"state", "report_config"})
_OFF_VALUES = (0, False, "0", "off", "OFF", "Off", "false")


def allowed_in_safe_mode(cmd: str, params: Mapping[str, Any]) -> bool:
    """True for a fail-safe OFF or read-only command."""
    if cmd in READ_ONLY or cmd == "light_off":
        return True
    if cmd == "set_relay":
        state = params.get("state")
        return not isinstance(state, float) and state in _OFF_VALUES and "duration_ms" not in params
    if cmd == "set_pwm":
        value = params.get("value")
        return isinstance(value, int | float) and not isinstance(value, bool) and value == 0
    return False
