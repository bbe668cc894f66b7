"""Infrastructure alerts from the component probes (DOMAIN §4 ``infra_*`` codes).

A probe that sees its component go down or come back calls one of these on the loop. The broker is
in-process, so its outage is stored while it lasts (``infra_mqtt_down``, resolved when it is back).
The database cannot store its own outage: when it is back, the outage is stored as an alert already
resolved, with how long it lasted and why, so that the record exists.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg

from hydrovisor.actors.health_probe import OnChange
from hydrovisor.store.repos import events

Pool = Callable[[], asyncpg.Pool]


def broker_alerts(pool: Pool) -> OnChange:
    """``infra_mqtt_down`` while the broker probe fails."""
    async def changed(up: bool, reason: str, _seconds: float) -> None:
        if up:
            await events.resolve_alert(pool(), zone_uid=None, code="infra_mqtt_down", dedupe_key="broker")
        else:
            await events.raise_alert(pool(), zone_uid=None, node_uid=None, source="infra", code="infra_mqtt_down",
                                     alert_type="MQTT broker down", details={"reason": reason}, dedupe_key="broker",
                                     severity="critical")
    return changed


def database_alerts(pool: Pool) -> OnChange:
    """``infra_db_unreachable``, stored once the database is back (resolved, with the outage's length)."""
    async def changed(up: bool, reason: str, seconds: float) -> None:
        if not up:
            return
        code, key = "infra_db_unreachable", "database"
        await events.raise_alert(pool(), zone_uid=None, node_uid=None, source="infra", code=code,
                                 alert_type="Database unreachable", dedupe_key=key, severity="critical",
                                 details={"down_for_s": round(seconds, 1), "recovered": reason})
        await events.resolve_alert(pool(), zone_uid=None, code=code, dedupe_key=key)
    return changed
