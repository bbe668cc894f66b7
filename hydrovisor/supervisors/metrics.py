"""Prometheus metrics of the tree: the counters supervisors bump (:class:`ActorCounters`) and the
gauges computed at scrape time from the cells, asking no actor (:class:`TreeCollector`).

Children of dynamic supervisors (one per node, zone or command) share the label ``<supervisor>/*``
so a fleet of thousands does not become thousands of series.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hydrovisor.supervisors.errors import NoSuchActor
from hydrovisor.supervisors.exit import ExitReason
from hydrovisor.supervisors.path_registry import ROOT, PathRegistry

if TYPE_CHECKING:
    from hydrovisor.supervisors.actor_system import ActorSystem


class ActorCounters:
    """``hydrovisor_actor_{restarts,dropped_messages,stale_messages}_total``, labelled by :meth:`series`."""

    def __init__(self, paths: PathRegistry, registry: CollectorRegistry | None = None) -> None:
        self._paths = paths
        self.restarts = prometheus_client.Counter(
            "hydrovisor_actor_restarts_total",
            "Restarts performed by supervisors, by child path and exit kind.",
            ["path", "reason"],
            registry=registry,
        )
        self.dropped_messages = prometheus_client.Counter(
            "hydrovisor_actor_dropped_messages_total",
            "Messages still queued when their path stopped for good (asks failed with actor_stopped).",
            ["path"],
            registry=registry,
        )
        self.stale_messages = prometheus_client.Counter(
            "hydrovisor_actor_stale_messages_total",
            "Messages an incarnation sent itself (piped results, timers) that arrived after it was replaced; "
            "dropped unhandled.",
            ["path"],
            registry=registry,
        )

    def count_restart(self, path: str, reason: ExitReason) -> None:
        """Bump ``hydrovisor_actor_restarts_total{path,reason}``."""
        self.restarts.labels(path=self.series(path), reason=reason.kind.value).inc()

    def count_stale(self, path: str) -> None:
        """Bump ``hydrovisor_actor_stale_messages_total{path}``."""
        self.stale_messages.labels(path=self.series(path)).inc()

    def count_dropped(self, path: str, n: int) -> None:
        """Add ``n`` to ``hydrovisor_actor_dropped_messages_total{path}``."""
        self.dropped_messages.labels(path=self.series(path)).inc(n)

    def series(self, path: str) -> str:
        """Metric label of ``path``: children of a dynamic supervisor share ``<supervisor>/*``, so one
        series per node or command does not grow without bound."""
        if path == ROOT:
            return path
        parent = path.rsplit("/", 1)[0] or ROOT
        cell = self._paths.get(parent)
        if cell is not None and cell.flags is not None and cell.flags.dynamic:
            return f"{parent.rstrip('/')}/*"
        return path


class TreeCollector(Collector):
    """Actor counts by kind/state, mailbox depth per path, abandoned threads."""

    def __init__(self, system: ActorSystem) -> None:
        self._system = system

    def collect(self) -> Iterator[GaugeMetricFamily]:
        counts: Counter[tuple[str, str]] = Counter()
        depth: Counter[str] = Counter()
        for path in self._system.paths():
            try:
                cell = self._system.cell(path)
            except NoSuchActor:
                continue
            counts[(cell.spec.kind, cell.state.value)] += 1
            depth[self._system.series(path)] += len(cell.mailbox)
        actors = GaugeMetricFamily("hydrovisor_actors", "Live actor paths by kind and state.",
                                   labels=["kind", "state"])
        for (kind, state), n in sorted(counts.items()):
            actors.add_metric([kind, state], n)
        yield actors
        mailbox = GaugeMetricFamily("hydrovisor_actor_mailbox_depth", "Messages waiting per path.",
                                    labels=["path"])
        for label, n in sorted(depth.items()):
            mailbox.add_metric([label], n)
        yield mailbox
        yield GaugeMetricFamily("hydrovisor_abandoned_threads",
                                "Hung actor threads given up on (Python cannot kill a thread).",
                                value=self._system.abandoned_threads)
