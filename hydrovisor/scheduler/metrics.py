"""The scheduler's SLIs (DOMAIN §5) as Prometheus series.

Rates are not exported as gauges: a rate computed in-process resets with the process and hides the
window. The four SLIs of the issue are recording rules over these counters (``deploy/prometheus``):
``task_accept_to_terminal_latency`` from the histogram, ``task_deadline_violation_rate`` =
violations / terminals, ``task_recovery_success_rate`` = recoveries{resumed} / recoveries,
``command_effect_confirm_rate`` = effects{confirmed="true"} / effects.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


@dataclass(frozen=True)
class TaskMetrics:
    """The scheduler's series, registered once per process."""

    accept_to_terminal: Histogram
    terminals: Counter
    deadline_violations: Counter
    recoveries: Counter
    effects: Counter
    dispatch_lag: Histogram

    @classmethod
    def register(cls, registry: CollectorRegistry) -> TaskMetrics:
        """Create and register the series on ``registry``."""
        return cls(
            accept_to_terminal=Histogram(
                "hydrovisor_task_accept_to_terminal_latency_seconds",
                "Seconds from a task's acceptance to its terminal status.", ["task_type"],
                buckets=LATENCY_BUCKETS, registry=registry),
            terminals=Counter("hydrovisor_tasks_terminal_total", "Tasks that reached a terminal status.",
                              ["task_type", "status"], registry=registry),
            deadline_violations=Counter(
                "hydrovisor_task_deadline_violations_total",
                "Tasks that ended after their expires_at, or expired without being dispatched.", ["task_type"],
                registry=registry),
            recoveries=Counter("hydrovisor_task_recoveries_total",
                               "Tasks found running after a restart, by what recovery did with them.",
                               ["outcome"], registry=registry),
            effects=Counter("hydrovisor_task_command_effects_total",
                            "Tasks that submitted a command or workflow, by whether its effect was confirmed (DONE).",
                            ["confirmed"], registry=registry),
            dispatch_lag=Histogram("hydrovisor_task_dispatch_lag_seconds",
                                   "Seconds from a task's due time to its dispatch.",
                                   buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 60.0),
                                   registry=registry),
        )
