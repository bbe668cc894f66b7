"""The water cycle's clockwork (DOMAIN §4): when the normally-closed recirculation pump is off, and when a
water change is due. Pure: local time is a parameter.

Recirculation duty: outside every schedule window the pump runs (an NC relay's fail-safe state). In a
window with ``duty_cycle`` d < 1 the pump is off at the start of every hour for ``(1 - d) x 60`` minutes,
but never longer than ``max_recirc_off_minutes`` and never the whole hour, so an off window always ends
within the limit and is followed by running time. ``enabled=False`` means automation never touches the
relay: :func:`recirc_desired` says None.
"""

from __future__ import annotations

import datetime as dt

from hydrovisor.zones.settings import Recirc, WaterChange, parse_hhmm

PERIOD_MINUTES = 60


def off_minutes(recirc: Recirc, duty_cycle: float) -> int:
    """Length of the off window at the start of each hour for ``duty_cycle``."""
    wanted = round((1.0 - duty_cycle) * PERIOD_MINUTES)
    return max(0, min(wanted, recirc.max_recirc_off_minutes, PERIOD_MINUTES - 1))


def recirc_desired(recirc: Recirc, local: dt.datetime) -> bool | None:
    """Whether the recirculation pump should run at local time ``local`` (None: not ours to touch)."""
    if not recirc.enabled:
        return None
    minute_of_day = local.hour * 60 + local.minute
    for window in recirc.schedule:
        start, end = parse_hhmm(window.start), parse_hhmm(window.end)
        if start is None or end is None:
            continue
        inside = start <= minute_of_day < end if start < end else (minute_of_day >= start or minute_of_day < end)
        if inside:
            return local.minute >= off_minutes(recirc, window.duty_cycle)
    return True


def water_change_due(change: WaterChange, local: dt.datetime, solution_started_at: dt.datetime | None,
                     ec: float | None, ec_target: float) -> str | None:
    """Why a water change is due at local time ``local`` (``solution_age``, ``schedule``, ``ec_drift``), or None.

    ``schedule``: today is at least ``interval_days`` after the day the solution started (or it never did)
    and the local time has passed ``time_of_day``. ``solution_age``: the solution is older than
    ``max_solution_age_days`` whatever the time. ``ec_drift``: EC is ``ec_drift_threshold`` or more away from
    its target (when enabled). Both datetimes are aware and in the greenhouse's time zone.
    """
    if not change.enabled:
        return None
    age = local - solution_started_at if solution_started_at is not None else None
    if age is not None and age >= dt.timedelta(days=change.max_solution_age_days):
        return "solution_age"
    at = parse_hhmm(change.time_of_day)
    past_time_of_day = at is not None and local.hour * 60 + local.minute >= at
    days_since = (local.date() - solution_started_at.date()).days if solution_started_at is not None else None
    if past_time_of_day and (days_since is None or days_since >= change.interval_days):
        return "schedule"
    if change.trigger_by_ec_drift and ec is not None and abs(ec - ec_target) >= change.ec_drift_threshold:
        return "ec_drift"
    return None
