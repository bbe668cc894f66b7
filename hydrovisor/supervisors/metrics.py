"""Prometheus metrics of the tree: the counters supervisors bump (:class:`ActorCounters`) and the
gauges computed at scrape time from the cells, asking no actor (:class:`TreeCollector`).

Children of dynamic supervisors (one per node, zone or command) share the label ``<supervisor>/*``,
at every level (``/zones/zn-7/zone`` is ``/zones/*/*``), so a fleet of thousands does not become
thousands of series. A scrape is one walk over the tree: no sort, no per-path label lookups.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from hydrovisor.supervisors.cell import Cell
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
        """Metric label of ``path``: every segment that is a child of a dynamic supervisor becomes ``*``
        (``/nodes/nd-1`` -> ``/nodes/*``, ``/zones/zn-7/zone`` -> ``/zones/*/*``), so one series per
        node, zone or command does not grow without bound."""
        if path == ROOT:
            return path
        parent = ROOT
        label = ""
        for segment in path.strip("/").split("/"):
            label = child_label(label, self._paths.get(parent), segment)
            parent = f"{parent.rstrip('/')}/{segment}"
        return label


def child_label(parent_label: str, parent: Cell | None, child_id: str) -> str:
    """The label of a child from its parent's (``""`` for the root): ``*`` under a dynamic supervisor."""
    dynamic = parent is not None and parent.flags is not None and parent.flags.dynamic
    return f"{parent_label.rstrip('/')}/{'*' if dynamic else child_id}"


class TreeCollector(Collector):
    """Actor counts by kind/state/execution model, mailbox depth per series label, abandoned threads.

    One walk from the root over the cells (O(n), no sort, labels derived from the parent's): cheap
    enough to scrape with 100,000 actors.
    """

    def __init__(self, system: ActorSystem) -> None:
        self._system = system

    def collect(self) -> Iterator[GaugeMetricFamily]:
        system = self._system
        cell_of = system.cell
        counts: dict[tuple[str, str, str], int] = {}
        depth: dict[str, int] = {}
        try:
            root = cell_of(ROOT)
        except NoSuchActor:
            root = None
        pending: list[tuple[Cell, str]] = []
        if root is not None:
            counts[(root.spec.kind, root.state, root.spec.execution)] = 1
            depth[ROOT] = len(root.mailbox)
            pending.append((root, ROOT))
        while pending:  # supervisors only: the leaves (most of the actors) are counted by their parent's loop
            parent, label = pending.pop()
            flags = parent.flags
            base = label.rstrip("/")
            shared = f"{base}/*" if flags is not None and flags.dynamic else None
            for child_path in parent.children:
                try:
                    child = cell_of(child_path)
                except NoSuchActor:
                    continue  # stopped between the two reads
                spec = child.spec
                key = (spec.kind, child.state, spec.execution)
                counts[key] = counts.get(key, 0) + 1
                child_series = shared or f"{base}/{spec.id}"
                depth[child_series] = depth.get(child_series, 0) + len(child.mailbox)
                if child.flags is not None:  # a supervisor (flags are set before it starts children)
                    pending.append((child, child_series))
        actors = GaugeMetricFamily("hydrovisor_actors", "Live actor paths by kind, state and execution model "
                                   "(thread: its own OS thread; pool: turns on the worker pool).",
                                   labels=["kind", "state", "execution"])
        rows = sorted((kind, str(state), str(execution), n) for (kind, state, execution), n in counts.items())
        for kind, state, execution, n in rows:
            actors.add_metric([kind, state, execution], n)
        yield actors
        mailbox = GaugeMetricFamily("hydrovisor_actor_mailbox_depth",
                                    "Messages waiting, by path (children of dynamic supervisors summed as *).",
                                    labels=["path"])
        for label, n in sorted(depth.items()):
            mailbox.add_metric([label], n)
        yield mailbox
        yield GaugeMetricFamily("hydrovisor_abandoned_threads",
                                "Hung actor threads given up on (Python cannot kill a thread).",
                                value=system.abandoned_threads)
