"""The independent safety observer (issue 12, "Proven safe").

It watches the MQTT traffic between hydrovisor and the nodes and the simulator's physical plant, and flags
every unsafe actuation. It is independent of the automation by construction: it imports nothing from
``hydrovisor.workflows``, ``zones``, ``actors``, ``zoneplane``, ``commands``, ``http``, ``app`` (nor
``hydrovisor.protocol``): it parses the wire JSON itself and restates the plant's hydraulics itself
(``tests/observer/test_independence.py`` holds it to that). ``hydrovisor.sim`` is used for type hints only.

Modules: ``wire`` (topics, payloads), ``model`` (rule codes, ``ZoneLimits``, ``PlantReading``,
``Violation``), ``rules`` (pure predicates), ``observer`` (``SafetyObserver``, the pure core), ``plant``
(``plant_reading``, ``PlantSampler``), ``tap`` (``MqttTap``).

Rules (``Violation.rule``):

- ``pump_on_source_below_min``: a main-pump start (``set_relay`` on, ``run_pump``) while its source tank is
  below min (two tanks: the tank whose supply valve is open; single tank: the solution tank; the plant's
  true level, else the last ``level_*_min`` on the wire); or the pump physically running from a tank below
  min for longer than ``grace_s``.
- ``dose_without_flags``: a ``dose`` when the node's latest PH/EC reading is missing, older than
  ``flags_fresh_s``, or lacks ``flow_active`` / ``corrections_allowed`` / ``stable`` all true (an absent
  ``stable`` counts as true only beside the other two present and true: the firmware omits it when stable).
- ``start_without_confirmed_stop``: a start (``set_relay`` on, ``run_pump``, ``dose``) on a node with an
  earlier stop (``set_relay`` off, any channel) still unanswered, or answered other than DONE with no later
  stop of that channel answered DONE.
- ``interlock_violation``: ``pump_main`` started with no pump path open according to the valve states
  confirmed on the wire (DONE ``set_relay``, ``state`` snapshots, ``storage_state`` event snapshots).
- ``nc_pump_off_too_long``: the NC recirculation pump off (physically; commanded off with DONE when there
  is no plant reading) longer than ``max_recirc_off_s`` (not counted during an emergency stop).
- ``left_running_after_stop``: ``grace_s`` after a workflow failure/cancellation or an emergency stop,
  a pump still runs or a valve is open in the plant (the single-tank NC pump excepted), unless a new start
  was sent since (workflow marks only; a start heard within ``WIRE_LAG_SHARE`` x ``grace_s`` after that
  reading included: the node acts on it before the tap hears it).
- ``start_during_estop``: a start between an emergency stop and ``mark(zone, "estop_cleared")``.

Wiring for a campaign: one ``SafetyObserver``; ``configure_zone`` per zone; a ``PlantSampler`` over the
zones' shared ``WaterPhysics`` and an ``MqttTap`` on the broker, both on the plant's clock
(``physics.clock.monotonic``), the tap with ``before_command=sampler.sample_now``; ``mark`` what the HTTP
side learns; at the end ``stop()`` both, ``check(clock())``, and assert ``observer.violations == []``.
"""

from hydrovisor.observer.model import (
    DOSE_WITHOUT_FLAGS,
    INTERLOCK_VIOLATION,
    LEFT_RUNNING_AFTER_STOP,
    NC_PUMP_OFF_TOO_LONG,
    PUMP_ON_SOURCE_BELOW_MIN,
    RULES,
    START_DURING_ESTOP,
    START_WITHOUT_CONFIRMED_STOP,
    PlantReading,
    Violation,
    ZoneLimits,
)
from hydrovisor.observer.observer import CommandSeen, SafetyObserver
from hydrovisor.observer.plant import PlantSampler, plant_reading
from hydrovisor.observer.tap import MqttTap

__all__ = [
    "DOSE_WITHOUT_FLAGS",
    "INTERLOCK_VIOLATION",
    "LEFT_RUNNING_AFTER_STOP",
    "NC_PUMP_OFF_TOO_LONG",
    "PUMP_ON_SOURCE_BELOW_MIN",
    "RULES",
    "START_DURING_ESTOP",
    "START_WITHOUT_CONFIRMED_STOP",
    "CommandSeen",
    "MqttTap",
    "PlantReading",
    "PlantSampler",
    "SafetyObserver",
    "Violation",
    "ZoneLimits",
    "plant_reading",
]
