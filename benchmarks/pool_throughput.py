"""Tell throughput over many actors and ask latency from the loop: pooled vs thread actors, one run.

Both populations live in one ``ActorSystem``: ``/pool`` (N pooled children, the system's worker
pool, ``PoolSettings()``: 4 workers, ``--workers`` to change it) and ``/threads`` (N children on
their own ``ThreadingActor`` threads, i.e. one OS thread each), both dynamic supervisors started
with ``StartChildren``.

(a) tell throughput: the main thread sends M tells round-robin over the N paths with
    ``system.tell(path, i)``; the rate is M / (first tell -> the M-th handled, seen by a shared
    counter). Threads get fewer tells (their rate is ~100x lower); the variants alternate in
    rounds (pool, threads, threads, pool). The pool's turns and messages per turn are shown.
(b) ask latency from the event loop: sequential ``await bridge.ask(path, "ping")`` to random
    actors of each population, alternating blocks of 50; p50 / p99 / max.

Targets (issue 14): tell throughput over 10,000 actors >= 50x the thread actors';
ask p99 from the loop <= the thread actors'.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import random
import sys
import threading
import time
from typing import Any

from _stats import (
    Row,
    fmt_rate,
    fmt_us,
    header,
    parse_args,
    print_table,
    ratio,
    route_logs_to_devnull,
    summarize,
    thread_count,
)
from prometheus_client import CollectorRegistry

from hydrovisor.runtime import gc_tuning
from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.supervisors import (
    ActorContext,
    ActorSystem,
    ChildSpec,
    Execution,
    PoolSettings,
    StartChildren,
    SupervisedActor,
    SupervisorFlags,
    supervisor_spec,
)

TARGET_TELL_RATIO = 50.0
BATCH = 1_000
ASK_BLOCK = 50


class Tally:
    """Counts handled tells across all actors; ``done`` is set when ``target`` were handled."""

    def __init__(self) -> None:
        self._count = itertools.count(1)
        self.target = 0
        self.done = threading.Event()

    def arm(self, target: int) -> None:
        self._count = itertools.count(1)
        self.target = target
        self.done.clear()

    def hit(self) -> None:
        if next(self._count) == self.target:  # next() on itertools.count is atomic under the GIL
            self.done.set()


TALLY = Tally()


class Counter(SupervisedActor):
    """Counts tells; answers ``ping``."""

    def __init__(self, ctx: ActorContext) -> None:
        super().__init__(ctx)
        self.count = 0

    def on_receive(self, message: Any) -> Any:
        if message == "ping":
            return "pong"
        self.count += 1
        TALLY.hit()
        return None


def spawn(system: ActorSystem, parent: str, n: int, execution: Execution) -> list[str]:
    """Start ``n`` counters under ``parent`` in batches; their paths."""
    specs = [ChildSpec(f"a{i}", Counter.start, hang_timeout=None, execution=execution) for i in range(n)]
    paths: list[str] = []
    for i in range(0, n, BATCH):
        reply = system.ask(parent, StartChildren(tuple(specs[i:i + BATCH])), timeout=600)
        if reply.failed:
            raise RuntimeError(f"{len(reply.failed)} failed to start: {reply.failed[0]}")
        paths += reply.started
    return paths


def tell_round(system: ActorSystem, paths: list[str], m: int) -> float:
    """``m`` tells round-robin over ``paths``; seconds until the last one was handled."""
    TALLY.arm(m)
    n = len(paths)
    tell = system.tell
    began = time.perf_counter()
    for i in range(m):
        tell(paths[i % n], i)
    if not TALLY.done.wait(600):
        raise RuntimeError("tells not handled within 600 s")
    return time.perf_counter() - began


async def ask_block(lt: LoopThread, paths: list[str], k: int, rng: random.Random) -> list[float]:
    """``k`` sequential asks from the loop to random actors of ``paths``."""
    lat: list[float] = []
    for _ in range(k):
        path = paths[rng.randrange(len(paths))]
        t0 = time.perf_counter()
        if await lt.bridge.ask(path, "ping", within=30) != "pong":
            raise RuntimeError("bad reply")
        lat.append(time.perf_counter() - t0)
    return lat


def run(quick: bool, n: int | None, workers: int) -> None:
    n = n or (300 if quick else 10_000)
    tells_pool = 20_000 if quick else 1_000_000
    tells_threads = 2_000 if quick else 20_000
    asks = 200 if quick else 2_000
    header(f"pool throughput: {n:,} pooled vs {n:,} thread actors; {tells_pool:,} / {tells_threads:,} tells, "
           f"{asks:,} loop asks each; {workers} pool workers", quick)
    route_logs_to_devnull()
    rng = random.Random(14)
    with LoopThread() as lt:
        system = ActorSystem(bridge=lt.bridge, timers=lt.timers, registry=CollectorRegistry(),
                             pool=PoolSettings(workers=workers))
        flags = SupervisorFlags(dynamic=True, max_children=n)
        system.start(SupervisorFlags(max_restarts=10**9, period=1.0),
                     [supervisor_spec("pool", flags), supervisor_spec("threads", flags)])
        t0 = time.perf_counter()
        pool_paths = spawn(system, "/pool", n, Execution.POOL)
        pool_spawn = time.perf_counter() - t0
        t0 = time.perf_counter()
        thread_paths = spawn(system, "/threads", n, Execution.THREAD)
        thread_spawn = time.perf_counter() - t0
        gc_tuning.freeze()  # after the bulk spawns, as production does
        threads = thread_count()
        populations = {"pool": pool_paths, "threads": thread_paths}
        budget = {"pool": tells_pool, "threads": tells_threads}
        for paths in populations.values():  # warm up: every actor handled one message
            tell_round(system, paths, len(paths))
        tell_s = dict.fromkeys(populations, 0.0)
        turns0, messages0, _ = system.pool.totals()
        for name in ("pool", "threads", "threads", "pool"):
            tell_s[name] += tell_round(system, populations[name], budget[name] // 2)
        turns1, messages1, _ = system.pool.totals()
        ask_lat: dict[str, list[float]] = {name: [] for name in populations}
        for _ in range(2):  # warm up
            for paths in populations.values():
                lt.run(ask_block(lt, paths, 10, rng))
        for block in range(max(1, asks // ASK_BLOCK)):
            order = ("pool", "threads") if block % 2 == 0 else ("threads", "pool")
            for name in order:
                ask_lat[name] += lt.run(ask_block(lt, populations[name], ASK_BLOCK, rng), timeout=600)
        t0 = time.perf_counter()
        system.stop(timeout=600)
        stop_s = time.perf_counter() - t0
        gc.unfreeze()

    rate = {name: budget[name] / tell_s[name] for name in populations}
    rows = [
        Row(f"spawn {n:,} pooled / {n:,} thread actors (batches of {BATCH:,})",
            f"{pool_spawn:.2f} s / {thread_spawn:.2f} s"),
        Row("process threads with both populations alive", f"{threads}"),
        Row(f"tell throughput over {n:,} pooled actors ({tells_pool:,} tells)", fmt_rate(rate["pool"])),
        Row(f"tell throughput over {n:,} thread actors ({tells_threads:,} tells)", fmt_rate(rate["threads"])),
    ]
    r = ratio(rate["pool"], rate["threads"])
    rows.append(Row("tell throughput pool / threads", f"{r:.1f}x", f">= {TARGET_TELL_RATIO:.0f}x",
                    TARGET_TELL_RATIO / r if r else float("nan"), r >= TARGET_TELL_RATIO))
    turns, messages = turns1 - turns0, messages1 - messages0
    rows.append(Row("pool during the tell rounds: turns / messages per turn",
                    f"{turns:,} / {messages / turns if turns else float('nan'):.1f}"))
    stats = {name: summarize(values) for name, values in ask_lat.items()}
    for name, s in stats.items():
        rows.append(Row(f"ask from the loop (bridge.ask), {name}: p50 / p99 / max",
                        f"{fmt_us(s.p50)} / {fmt_us(s.p99)} / {fmt_us(s.max)}"))
    q = ratio(stats["pool"].p99, stats["threads"].p99)
    rows.append(Row("ask p99 from the loop, pool / threads", f"{q:.2f}x", "<= 1.00x", q, q <= 1.0))
    rows.append(Row("ask p50 from the loop, pool / threads", f"{ratio(stats['pool'].p50, stats['threads'].p50):.2f}x"))
    rows.append(Row("stop both populations", f"{stop_s:.2f} s"))
    print_table(f"pooled vs thread actors, {n:,} each, one process", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--actors", type=int, help="actors per population (default 10,000; quick 300)")
    parser.add_argument("--workers", type=int, default=PoolSettings().workers,
                        help=f"pool worker threads (default: PoolSettings' {PoolSettings().workers})")
    args = parse_args(__doc__ or "", parser)
    run(args.quick, args.actors, args.workers)
    sys.exit(0)


if __name__ == "__main__":
    main()
