"""A zone's settings document (DOMAIN §4): typed, validated, every field with its default.

``ZoneSettings()`` is a valid document: every default is the DOMAIN §4 value. :func:`parse_settings` turns
untrusted input (an HTTP body, a stored JSON document) into a :class:`ZoneSettings` or a list of
:class:`FieldError` naming the JSON path of each bad value; it never raises. :func:`resolve_devices` binds
every role to a node channel: the explicit ``devices`` first, then the zone's node channels by name.

Pure: no I/O, no clock. The store keeps the documents and their versions; the zone actor gets the parsed
Struct.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from typing import Annotated, Any, Literal

import msgspec

from hydrovisor.protocol.topics import MAX_CHANNEL_LEN, validate_segment
from hydrovisor.protocol.vocabulary import is_valid_node_uid
from hydrovisor.zones.roles import Role

# Bounds keep absurd values (a 10-year timeout, 10^9 windows) out of the workflows; the safety bounds are
# one-sided on purpose: settings may make the DOMAIN §4 rules stricter, never looser.
Seconds = Annotated[int, msgspec.Meta(ge=1, le=7 * 86400)]
Minutes = Annotated[int, msgspec.Meta(ge=1, le=7 * 1440)]
Days = Annotated[int, msgspec.Meta(ge=1, le=366)]
Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0.0)]

CatchUpPolicy = Literal["skip", "replay_limited", "replay_all"]
"""What the scheduler does with the occurrences it missed while down (DOMAIN §5)."""

MAX_SCHEDULE_WINDOWS = 48
MAX_SCHEDULE_TIMES = 96
"""Explicit irrigation times a day at most: one every 15 minutes; a denser schedule is an interval."""
MAX_ERRORS = 50
""":func:`parse_settings` reports at most this many errors (a hostile body must not make a huge 422)."""

_HHMM = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PH_RANGE = (0.0, 14.0)
_ROLE_VALUES = frozenset(role.value for role in Role)


# Every Struct: immutable, unknown keys refused (a typo must not pass silently), keyword-only.
class DeviceRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One node channel: where a role lives."""

    node_uid: str
    channel: str


class Band(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A target with its tolerated range (``min <= target <= max``)."""

    # no defaults: a band is meaningful only as a whole, and pH and EC need different values
    target: float
    min: float
    max: float


class Targets(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """pH (unitless) and EC (mS/cm) targets."""

    ph: Band = Band(target=5.8, min=5.5, max=6.2)
    ec: Band = Band(target=1.6, min=1.2, max=2.0)


class RecircWindow(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A daily window (``from``..``to``, local ``HH:MM``, may wrap past midnight) with the recirculation
    pump's duty cycle in it: the fraction of the time it runs (the rest are OFF windows, DOMAIN §4)."""

    start: str = msgspec.field(name="from")
    end: str = msgspec.field(name="to")
    duty_cycle: Fraction = 1.0


class Recirc(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Recirculation through the NC pump; ``enabled=False`` means automation never touches its relay."""

    enabled: bool = True
    schedule: Annotated[list[RecircWindow], msgspec.Meta(max_length=MAX_SCHEDULE_WINDOWS)] = []
    max_recirc_off_minutes: Annotated[int, msgspec.Meta(ge=1, le=1440)] = 30


class WaterChange(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """When the solution is drained and replaced: by schedule, by age, or by EC drift."""

    enabled: bool = False
    interval_days: Days = 7
    time_of_day: str = "03:00"
    max_solution_age_days: Days = 14
    trigger_by_ec_drift: bool = False
    ec_drift_threshold: PositiveFloat = 0.5


class WaterCycle(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The water cycle (DOMAIN §4): recirculation and water changes."""

    mode: Literal["auto", "manual"] = "auto"
    recirc: Recirc = Recirc()
    water_change: WaterChange = WaterChange()


class TimeWindow(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A daily window ``from``..``to`` (local ``HH:MM``, ``to`` excluded, wraps past midnight when
    ``to < from``)."""

    start: str = msgspec.field(name="from")
    end: str = msgspec.field(name="to")


class Irrigation(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Irrigation runs of ``duration_s``: at each of ``times`` and every ``interval_minutes``.

    The interval counts wall-clock minutes from the start of ``window`` (midnight without one) up to its
    end, every day; ``interval_minutes: null`` means the explicit ``times`` only. A time that is both in
    ``times`` and on the interval grid runs once.
    """

    enabled: bool = False
    duration_s: Seconds = 60
    interval_minutes: Minutes | None = 60
    times: Annotated[list[str], msgspec.Meta(max_length=MAX_SCHEDULE_TIMES)] = []
    window: TimeWindow | None = None


class Lighting(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Lights on at each window's ``from`` and off at its ``to``; ``pwm`` dims them to ``pwm_level`` %."""

    enabled: bool = False
    windows: Annotated[list[TimeWindow], msgspec.Meta(max_length=MAX_SCHEDULE_WINDOWS)] = []
    mode: Literal["relay", "pwm"] = "relay"
    pwm_level: Annotated[int, msgspec.Meta(ge=1, le=100)] = 100


class Ventilation(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Ventilation on at each window's ``from`` and off at its ``to``."""

    enabled: bool = False
    windows: Annotated[list[TimeWindow], msgspec.Meta(max_length=MAX_SCHEDULE_WINDOWS)] = []


class Scheduler(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """How the scheduler catches up after downtime (DOMAIN §5) and how much it dispatches per cycle."""

    catch_up: CatchUpPolicy = "replay_limited"
    max_dispatch_per_cycle: Annotated[int, msgspec.Meta(ge=1, le=100)] = 20


class Timeouts(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Stage timeouts of the workflows (DOMAIN §4 defaults for the two-tank ones)."""

    clean_fill_s: Seconds = 1200
    solution_fill_s: Seconds = 1800
    prepare_recirculation_s: Seconds = 1200
    irrigation_s: Seconds = 600
    # the single-tank water change (DOMAIN §4): drain to empty, fill to the max switch, then let it settle
    drain_s: Seconds = 1800
    fill_s: Seconds = 1800
    stabilize_s: Seconds = 300


class Correction(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """pH/EC correction (DOMAIN §4): how a dose is sized from the error, and how decisions are made.

    A decision needs ``min_samples`` readings within ``window_s`` (never one sample), none older than
    ``stale_s``; a dose is ``ml_per_unit x error`` ml (pH units, mS/cm), at most ``max_dose_ml``; the next one
    waits ``cooldown_s`` after the last DONE; ``max_no_effect`` doses in a row that move nothing stop
    corrections for ``fail_closed_s``.
    """

    window_s: Annotated[int, msgspec.Meta(ge=5, le=3600)] = 60
    min_samples: Annotated[int, msgspec.Meta(ge=2, le=100)] = 3
    stale_s: Annotated[int, msgspec.Meta(ge=5, le=300)] = 120
    ph_ml_per_unit: Annotated[float, msgspec.Meta(gt=0.0, le=500.0)] = 40.0
    ec_ml_per_unit: Annotated[float, msgspec.Meta(gt=0.0, le=500.0)] = 120.0
    max_dose_ml: Annotated[float, msgspec.Meta(gt=0.0, le=500.0)] = 20.0
    cooldown_s: Annotated[int, msgspec.Meta(ge=1, le=86400)] = 120
    max_no_effect: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    fail_closed_s: Annotated[int, msgspec.Meta(ge=60, le=7 * 86400)] = 3600
    max_rounds: Annotated[int, msgspec.Meta(ge=1, le=100)] = 10


class Safety(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The pump-safety gate's parameters (DOMAIN §4); each may only be made stricter than the default."""

    # DOMAIN §4 "no risky action on telemetry older than 300 s": shorter allowed, longer refused
    level_stale_s: Annotated[int, msgspec.Meta(ge=1, le=300)] = 300
    # "fewer than 3 failures of that pump in 30 min": a longer window or a lower count is stricter
    failure_window_s: Annotated[int, msgspec.Meta(ge=1800, le=7 * 86400)] = 1800
    max_failures: Annotated[int, msgspec.Meta(ge=1, le=3)] = 3
    # a running pump must show flow (or a level change) within this window; also the grace after a stop
    # before flow or current counts as "stuck on"
    no_flow_window_s: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 60
    # readings above these count as "flow present" (l/min) and "pump current present" (mA): a current
    # sensor reads a few tens of mA of noise with the pump off, which must not look like a stuck pump
    flow_present_min: Annotated[float, msgspec.Meta(gt=0.0)] = 0.5
    current_present_min: Annotated[float, msgspec.Meta(gt=0.0)] = 300.0
    # a pump a workflow may have on is stopped (the workflow fails closed) once its node has sent nothing
    # for this long: three firmware heartbeats (15 s apart) missed; the server is blind to that tank
    pump_node_silence_s: Annotated[int, msgspec.Meta(ge=1, le=45)] = 45


class ZoneSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One zone's settings document; ``ZoneSettings()`` is valid and holds the DOMAIN §4 defaults."""

    topology: Literal["two_tank", "single_tank"] = "two_tank"
    devices: dict[Role, DeviceRef] = {}
    targets: Targets = Targets()
    water_cycle: WaterCycle = WaterCycle()
    irrigation: Irrigation = Irrigation()
    lighting: Lighting = Lighting()
    ventilation: Ventilation = Ventilation()
    scheduler: Scheduler = Scheduler()
    timeouts: Timeouts = Timeouts()
    safety: Safety = Safety()
    correction: Correction = Correction()


class FieldError(msgspec.Struct, frozen=True, kw_only=True):
    """One bad value: its JSON path (``$.targets.ph.min``) and why."""

    path: str
    message: str


class ResolvedDevice(msgspec.Struct, frozen=True, kw_only=True):
    """A role bound to a node channel, and where the binding came from."""

    role: Role
    node_uid: str
    channel: str
    source: Literal["settings", "auto"]


# ---------------------------------------------------------------------------------------------- parsing

def parse_settings(raw: bytes | bytearray | memoryview | str | Mapping[str, Any]) -> ZoneSettings | list[FieldError]:
    """A :class:`ZoneSettings` from JSON bytes/text or an already decoded object, or the errors.

    Never raises: malformed JSON, a non-object, wrong types, unknown keys and out-of-range values all come
    back as :class:`FieldError` items (at most :data:`MAX_ERRORS`). Each top-level section is checked on
    its own so one request reports the problems of every section, not only the first; the cross-field
    rules (band order, ``HH:MM``, overlapping windows, ...) run once the structure is valid.
    """
    try:
        return _parse(raw)
    except RecursionError:  # a hostile document nested deeper than the interpreter's stack
        return [FieldError(path="$", message="document is nested too deeply")]


def _parse(raw: object) -> ZoneSettings | list[FieldError]:
    doc: object = raw
    if isinstance(raw, bytes | bytearray | memoryview | str):
        try:
            doc = msgspec.json.decode(raw)
        except msgspec.DecodeError as exc:
            return [FieldError(path="$", message=f"invalid JSON: {exc}")]
    if not isinstance(doc, Mapping):
        return [FieldError(path="$", message=f"expected an object, got {_json_type(doc)}")]

    errors: list[FieldError] = []
    fields = {field.encode_name: field for field in msgspec.structs.fields(ZoneSettings)}
    for key, value in doc.items():
        path = _child("$", key)
        field = fields.get(key) if isinstance(key, str) else None
        if field is None:
            errors.append(FieldError(path=path, message="unknown field"))
        elif field.name == "devices":
            errors.extend(_check_devices_shape(value))
        else:
            error = _convert_error(value, field.type, path)
            if error is not None:
                errors.append(error)
        if len(errors) >= MAX_ERRORS:
            return errors[:MAX_ERRORS]
    if errors:
        return errors
    try:
        settings = msgspec.convert(doc, ZoneSettings)
    except msgspec.ValidationError as exc:  # not expected after the per-section pass; kept so it never raises
        return [_field_error(exc, "$")]
    errors = list(_cross_field(settings))
    return errors[:MAX_ERRORS] if errors else settings


def _check_devices_shape(value: object) -> list[FieldError]:
    # checked key by key so the path names the role (msgspec would say ``$.devices[...]``)
    if not isinstance(value, Mapping):
        return [FieldError(path="$.devices", message=f"expected an object, got {_json_type(value)}")]
    errors = []
    for key, ref in value.items():
        path = _child("$.devices", key)
        if not isinstance(key, str) or key not in _ROLE_VALUES:
            errors.append(FieldError(path=path, message="unknown role"))
            continue
        error = _convert_error(ref, DeviceRef, path)
        if error is not None:
            errors.append(error)
        if len(errors) >= MAX_ERRORS:
            break
    return errors


def _convert_error(value: object, type_: Any, path: str) -> FieldError | None:
    try:
        msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        return _field_error(exc, path)
    return None


_AT = " - at `"
_IN = "` in `"
_NAMED_FIELD = re.compile(r"(?:unknown|missing required) field `(.*)`$")


def _field_error(exc: msgspec.ValidationError, base: str) -> FieldError:
    """msgspec's message (``Expected `int`, got `str` - at `$.x.y```) split into a path and a message."""
    text = str(exc)
    message, sep, where = text.rpartition(_AT)
    if not sep:
        message, where = text, "$`"
    where = where.removesuffix("`")
    if _IN in where:  # "Invalid enum value 'x' - at `key` in `$.d`": the problem is a key of that object
        _, _, where = where.partition(_IN)
        message = f"{message} (in a key)"
    path = base + where.removeprefix("$")
    named = _NAMED_FIELD.search(message)
    if named:  # point at the field itself, like every other error does
        path = _child(path, named.group(1))
        message = "unknown field" if "unknown" in named.group(0) else "missing required field"
    return FieldError(path=path, message=message)


def _child(path: str, key: object) -> str:
    if isinstance(key, str) and _IDENTIFIER.fullmatch(key):
        return f"{path}.{key}"
    shown = json.dumps(key) if isinstance(key, str) else repr(key)
    return f"{path}[{shown}]"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "object"
    return type(value).__name__


# ------------------------------------------------------------------------------------- cross-field rules

def _cross_field(settings: ZoneSettings) -> Iterator[FieldError]:
    yield from _non_finite(settings, "$")
    for role, ref in settings.devices.items():
        path = f"$.devices.{role.value}"
        if not is_valid_node_uid(ref.node_uid):
            yield FieldError(path=f"{path}.node_uid", message="not a node uid (^[a-z0-9][a-z0-9_-]*$, at most 64)")
        problem = validate_segment(ref.channel, "channel", strict=False)
        if problem is not None:
            yield FieldError(path=f"{path}.channel", message=problem.detail)
        elif len(ref.channel) > MAX_CHANNEL_LEN:
            yield FieldError(path=f"{path}.channel", message=f"longer than {MAX_CHANNEL_LEN} characters")
    yield from _band(settings.targets.ph, "$.targets.ph", _PH_RANGE)
    yield from _band(settings.targets.ec, "$.targets.ec", (0.0, math.inf))

    # two duty cycles (or two lighting windows) for the same minute: which one holds is a guess, so refuse
    yield from _windows(settings.water_cycle.recirc.schedule, "$.water_cycle.recirc.schedule", "schedule")
    if _minutes(settings.water_cycle.water_change.time_of_day) is None:
        yield FieldError(path="$.water_cycle.water_change.time_of_day", message="must be HH:MM (00:00..23:59)")
    if settings.irrigation.duration_s > settings.timeouts.irrigation_s:
        # the run could never complete before its own timeout
        yield FieldError(path="$.irrigation.duration_s",
                         message=f"must not exceed timeouts.irrigation_s ({settings.timeouts.irrigation_s})")
    yield from _irrigation_schedule(settings.irrigation)
    for name, section in (("lighting", settings.lighting), ("ventilation", settings.ventilation)):
        yield from _windows(section.windows, f"$.{name}.windows", "windows")
        if section.enabled and not section.windows:  # enabled yet never on: a silent no-op, refuse it
            yield FieldError(path=f"$.{name}.windows", message=f"{name} is enabled but has no window")


def _windows(windows: Sequence[TimeWindow | RecircWindow], path: str, name: str) -> Iterator[FieldError]:
    """``HH:MM`` bounds, ``from != to`` and no two windows sharing a minute."""
    seen: list[tuple[int, set[int]]] = []
    for index, window in enumerate(windows):
        item = f"{path}[{index}]"
        bounds = yield from _window_bounds(window, item)
        if bounds is None:
            continue
        covered = _window_minutes(*bounds)
        for other, other_covered in seen:
            if covered & other_covered:
                yield FieldError(path=item, message=f"overlaps {name}[{other}]")
                break
        seen.append((index, covered))


def _window_bounds(window: TimeWindow | RecircWindow, path: str) -> Generator[FieldError, None, tuple[int, int] | None]:
    """Yields the errors of one window; returns its bounds in minutes when it has none."""
    start, end = _minutes(window.start), _minutes(window.end)
    if start is None:
        yield FieldError(path=f"{path}.from", message="must be HH:MM (00:00..23:59)")
    if end is None:
        yield FieldError(path=f"{path}.to", message="must be HH:MM (00:00..23:59)")
    if start is None or end is None:
        return None
    if start == end:  # empty or the whole day? ambiguous: refuse rather than guess
        yield FieldError(path=f"{path}.to", message="must differ from 'from'")
        return None
    return start, end


def _irrigation_schedule(irrigation: Irrigation) -> Iterator[FieldError]:
    first: dict[int, int] = {}
    for index, hhmm in enumerate(irrigation.times):
        minute = _minutes(hhmm)
        if minute is None:
            yield FieldError(path=f"$.irrigation.times[{index}]", message="must be HH:MM (00:00..23:59)")
        elif minute in first:  # most likely a typo for another time: refuse rather than run once silently
            yield FieldError(path=f"$.irrigation.times[{index}]", message=f"duplicates times[{first[minute]}]")
        else:
            first[minute] = index
    if irrigation.window is not None:
        yield from _window_bounds(irrigation.window, "$.irrigation.window")
        if irrigation.interval_minutes is None:  # the window bounds the interval only, never the times
            yield FieldError(path="$.irrigation.window", message="needs interval_minutes")
    if irrigation.enabled and irrigation.interval_minutes is None and not irrigation.times:
        yield FieldError(path="$.irrigation.times", message="irrigation is enabled but has no time and no interval")


def _band(band: Band, path: str, bounds: tuple[float, float]) -> Iterator[FieldError]:
    low, high = bounds
    for name in ("min", "target", "max"):
        value = getattr(band, name)
        if math.isfinite(value) and not low <= value <= high:
            limits = f"{low:g}..{high:g}" if math.isfinite(high) else f">= {low:g}"
            yield FieldError(path=f"{path}.{name}", message=f"must be {limits}")
    if band.min > band.target:
        yield FieldError(path=f"{path}.min", message="must not exceed target")
    if band.target > band.max:
        yield FieldError(path=f"{path}.max", message="must not be below target")


def _non_finite(value: object, path: str) -> Iterator[FieldError]:
    """NaN and infinities (possible from a decoded Python object, not from JSON) are never a setting."""
    if isinstance(value, float):
        if not math.isfinite(value):
            yield FieldError(path=path, message="must be a finite number")
    elif isinstance(value, msgspec.Struct):
        for field in msgspec.structs.fields(value):
            yield from _non_finite(getattr(value, field.name), _child(path, field.encode_name))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _non_finite(item, f"{path}[{index}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _non_finite(item, _child(path, key))


def _minutes(hhmm: str) -> int | None:
    """``"HH:MM"`` as minutes after midnight, or None."""
    if not _HHMM.fullmatch(hhmm):
        return None
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


def _window_minutes(start: int, end: int) -> set[int]:
    """The minutes of the day in ``[start, end)``, wrapping past midnight when ``end < start``."""
    if start < end:
        return set(range(start, end))
    return set(range(start, 1440)) | set(range(end))


def parse_hhmm(hhmm: str) -> int | None:
    """Minutes after midnight of a valid ``"HH:MM"``, else None (for the schedules that read settings)."""
    return _minutes(hhmm)


# ------------------------------------------------------------------------------------- device resolution

def resolve_devices(
    settings: ZoneSettings, channels: Iterable[tuple[str, str]]
) -> dict[Role, ResolvedDevice] | list[FieldError]:
    """Every role bound to one node channel, or the errors.

    ``channels`` are the ``(node_uid, channel_name)`` pairs of the nodes bound to the zone. An explicit
    ``devices`` entry always wins; a role not named there is filled from the channel whose name equals
    the role (``pump_main`` -> ``<node>/pump_main``). Two candidates for one role are an error naming both
    (which pump is "the" main pump is not ours to guess), and so are two roles on one channel.
    """
    resolved: dict[Role, ResolvedDevice] = {}
    errors: list[FieldError] = []
    claimed: dict[tuple[str, str], Role] = {}
    for role, ref in sorted(settings.devices.items()):
        key = (ref.node_uid, ref.channel)
        if key in claimed:
            errors.append(FieldError(path=f"$.devices.{role.value}",
                                     message=f"{ref.node_uid}/{ref.channel} is already {claimed[key].value}"))
            continue
        claimed[key] = role
        resolved[role] = ResolvedDevice(role=role, node_uid=ref.node_uid, channel=ref.channel, source="settings")

    candidates: dict[str, list[tuple[str, str]]] = {}
    for pair in sorted(set(channels)):
        # a channel an explicit entry already uses is taken, whatever its name
        if pair not in claimed:
            candidates.setdefault(pair[1], []).append(pair)
    for role in Role:
        if role in resolved:
            continue
        found = candidates.get(role.value, [])
        if len(found) == 1:
            node_uid, channel = found[0]
            resolved[role] = ResolvedDevice(role=role, node_uid=node_uid, channel=channel, source="auto")
        elif len(found) > 1:
            names = [f"{node_uid}/{channel}" for node_uid, channel in found]
            listed = ", ".join(names[:-1]) + f" and {names[-1]}"
            errors.append(FieldError(path=f"$.devices.{role.value}",
                                     message=f"ambiguous: {listed}; name one in devices"))
    return errors if errors else resolved
