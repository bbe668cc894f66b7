"""Prometheus view of the live tree, computed at scrape time from the cells (no actor is asked)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hydrovisor.supervisors.errors import NoSuchActor
from hydrovisor.supervisors.system import ActorSystem


class TreeCollector(Collector):
    """Actor counts by kind/state, mailbox depth per path, abandoned threads.

    Children of dynamic supervisors (one per node, zone or command) are summed under
    ``<supervisor>/*`` so a fleet of thousands does not become thousands of series.
    """

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
