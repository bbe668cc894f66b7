"""Prometheus metrics of the worker pool, computed at scrape time from the pool's own counters.

Nothing here is labelled per actor or per worker: the pool's size is bounded by its settings, the
actors it runs are not. Messages per turn is ``rate(hydrovisor_pool_messages_total) /
rate(hydrovisor_pool_turns_total)``; the turn latency histogram has buckets only (the pool counts
turns per bucket, not their total time), ``hydrovisor_pool_turns_total`` is its count.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from hydrovisor.supervisors.pool import TURN_BUCKETS, WorkerPool


class PoolCollector(Collector):
    """``hydrovisor_pool_*``: run queue, workers (core/spare/busy), turns, messages, turn latency,
    blocking calls compensated, spare cap reached, stuck turns."""

    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool

    def collect(self) -> Iterator[Metric]:
        pool = self._pool
        workers = pool.workers()
        spare = pool.spare_workers()
        # a spare worker that is retiring is already counted out (not spare) but still listed: cap at the size
        core = min(sum(1 for w in workers if not w.spare), pool.settings.workers)
        busy = sum(1 for w in workers if w.actor is not None)
        turns, messages, latency = pool.totals()

        yield GaugeMetricFamily("hydrovisor_pool_run_queue_depth",
                                "Pooled actors with messages waiting for a worker.", value=pool.queue_depth())
        by_kind = GaugeMetricFamily("hydrovisor_pool_workers",
                                    "Worker threads: core (the configured size) and spare (covering blocked or "
                                    "stuck workers).", labels=["kind"])
        by_kind.add_metric(["core"], core)
        by_kind.add_metric(["spare"], spare)
        yield by_kind
        yield GaugeMetricFamily("hydrovisor_pool_busy_workers", "Workers running a turn right now.", value=busy)

        cumulative = 0
        buckets: list[tuple[str, float]] = []
        for bound, n in zip((*TURN_BUCKETS, None), latency, strict=True):
            cumulative += n
            buckets.append((repr(bound) if bound is not None else "+Inf", cumulative))
        histogram = HistogramMetricFamily("hydrovisor_pool_turn_seconds",
                                          "Duration of one turn (up to turn_messages messages of one actor).")
        histogram.add_metric([], buckets, sum_value=None)
        yield histogram

        yield CounterMetricFamily("hydrovisor_pool_turns", "Turns run by the pool's workers.", value=turns)
        yield CounterMetricFamily("hydrovisor_pool_messages", "Messages handled in pooled turns.", value=messages)
        yield CounterMetricFamily("hydrovisor_pool_blocking_compensated",
                                  "Blocking calls on pool workers covered by a spare worker (non-strict mode).",
                                  value=pool.blocking_compensated)
        yield CounterMetricFamily("hydrovisor_pool_spare_cap_reached",
                                  "Times a blocked or stuck worker got no spare: max_spare_workers were running.",
                                  value=pool.spare_cap_reached)
        yield CounterMetricFamily("hydrovisor_pool_stuck_turns",
                                  "Turns that ran past stuck_after (seen by the pool's watchdog).",
                                  value=pool.stuck_turns)
