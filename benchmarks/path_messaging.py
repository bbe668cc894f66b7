"""Stable-path messaging vs raw pykka refs: tell throughput and ask round trips.

hydrovisor: ``system.tell(path, msg)`` / ``system.ask(path, msg)`` to a ``SupervisedActor``
(path resolved at every send, message queued in the path's shared mailbox) on its own thread.
pool: the same to a pooled ``SupervisedActor`` (``execution=Execution.POOL``, the system's worker
pool): the put that makes its idle mailbox non-empty queues a turn on the run queue.
baseline: ``ref.tell(msg)`` / ``ref.ask(msg)`` on a plain ``pykka.ThreadingActor``.

(a) tell throughput: a burst of tells, then one ask that returns only once every tell was
    handled; rate = burst size / (time from the first tell to the flush reply). The rate of the
    send loop alone (until the last tell returned) is shown too.
(b) ask round trips: sequential asks from the main thread; rate and per-ask latency.
(c) enqueue cost alone: the receiver is parked in a handler (waiting on an event, so it does
    not compete for the GIL) while the main thread sends a burst; time per tell. This isolates
    the sender-side cost of path resolution + envelope + mailbox from thread-scheduling noise.

The work is split in rounds and the variants alternate (ABBA) so load on the shared machine
hits all. Target (issue): hydrovisor costs at most 1.3x the raw pykka path (the thread actor; the
pooled one is shown beside it, without a target).
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pykka
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
)
from prometheus_client import CollectorRegistry

from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.supervisors import ActorSystem, ChildSpec, Execution, PoolSettings, SupervisedActor, SupervisorFlags

PATH = "/sink"
POOL_PATH = "/psink"
FLUSH = "flush"
TARGET_OVERHEAD = 1.3


class Sink(SupervisedActor):
    """Counts tells; answers an ask with the count."""

    def __init__(self, ctx: Any) -> None:
        super().__init__(ctx)
        self.count = 0

    def on_receive(self, message: Any) -> Any:
        if message == FLUSH:
            return self.count
        if isinstance(message, threading.Event):
            message.wait()
            return None
        self.count += 1
        return None


class BareSink(pykka.ThreadingActor):
    """The same actor on plain pykka."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_receive(self, message: Any) -> Any:
        if message == FLUSH:
            return self.count
        if isinstance(message, threading.Event):
            message.wait()
            return None
        self.count += 1
        return None


Tell = Callable[[Any], None]
Ask = Callable[[Any], Any]


def tell_burst(tell: Tell, ask: Ask, n: int) -> tuple[float, float]:
    """Send ``n`` tells then flush; returns (send-loop seconds, end-to-end seconds)."""
    before = ask(FLUSH)
    began = time.perf_counter()
    for i in range(n):
        tell(i)
    sent = time.perf_counter()
    after = ask(FLUSH)
    done = time.perf_counter()
    if after - before != n:
        raise RuntimeError(f"lost tells: {after - before} of {n} handled")
    return sent - began, done - began


def enqueue_burst(tell: Tell, ask: Ask, n: int) -> float:
    """Seconds to send ``n`` tells while the receiver is parked in a handler."""
    gate = threading.Event()
    before = ask(FLUSH)
    tell(gate)
    messages = list(range(n))
    began = time.perf_counter()
    for m in messages:
        tell(m)
    elapsed = time.perf_counter() - began
    gate.set()
    if ask(FLUSH) - before != n:
        raise RuntimeError("lost tells")
    return elapsed


def ask_run(ask: Ask, n: int) -> tuple[float, list[float]]:
    """``n`` sequential asks; returns (total seconds, per-ask seconds)."""
    lat: list[float] = []
    began = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        ask(FLUSH)
        lat.append(time.perf_counter() - t0)
    return time.perf_counter() - began, lat


def target_row(what: str, hv: list[float], pk: list[float]) -> Row:
    """Median over rounds of the per-round time ratio: one noisy round cannot decide it."""
    ratios = sorted(ratio(a, b) for a, b in zip(hv, pk, strict=True))
    mid = statistics.median(ratios)
    spread = f"(rounds: {ratios[0]:.2f} .. {ratios[-1]:.2f})"
    return Row(
        f"{what} cost hydrovisor / pykka, median round",
        f"{mid:.2f}x {spread}",
        f"<= {TARGET_OVERHEAD}x",
        mid / TARGET_OVERHEAD,
        mid <= TARGET_OVERHEAD,
    )


def info_row(what: str, pool: list[float], pk: list[float]) -> Row:
    """The pooled actor against the same baseline (median round), without a target."""
    ratios = sorted(ratio(a, b) for a, b in zip(pool, pk, strict=True))
    return Row(f"{what} cost pool / pykka, median round",
               f"{statistics.median(ratios):.2f}x (rounds: {ratios[0]:.2f} .. {ratios[-1]:.2f})")


def run(quick: bool) -> None:
    tells, tell_rounds = (20_000, 4) if quick else (200_000, 20)
    asks, ask_rounds = (2_000, 4) if quick else (20_000, 20)
    header(f"path messaging: {tells:,} tells and {asks:,} asks per variant", quick)
    route_logs_to_devnull()
    with LoopThread() as lt:
        system = ActorSystem(bridge=lt.bridge, timers=lt.timers, registry=CollectorRegistry(), pool=PoolSettings())
        system.start(
            SupervisorFlags(max_restarts=10**9, period=1.0),
            [ChildSpec(PATH.lstrip("/"), Sink.start, hang_timeout=None),
             ChildSpec(POOL_PATH.lstrip("/"), Sink.start, hang_timeout=None, execution=Execution.POOL)],
        )
        ref = BareSink.start()

        def hv_tell(m: Any) -> None:
            system.tell(PATH, m)

        def hv_ask(m: Any) -> Any:
            return system.ask(PATH, m, timeout=30)

        def pk_ask(m: Any) -> Any:
            return ref.ask(m, timeout=30)

        def pool_tell(m: Any) -> None:
            system.tell(POOL_PATH, m)

        def pool_ask(m: Any) -> Any:
            return system.ask(POOL_PATH, m, timeout=30)

        variants: dict[str, tuple[Tell, Ask]] = {
            "hydrovisor": (hv_tell, hv_ask), "pykka": (ref.tell, pk_ask), "pool": (pool_tell, pool_ask)}
        names = list(variants)
        send_s = dict.fromkeys(names, 0.0)
        e2e_s = dict.fromkeys(names, 0.0)
        ask_s = dict.fromkeys(names, 0.0)
        ask_lat: dict[str, list[float]] = {name: [] for name in names}
        per_round_tell: dict[str, list[float]] = {name: [] for name in names}
        per_round_ask: dict[str, list[float]] = {name: [] for name in names}

        for name in names:  # warm up both paths
            tell_burst(*variants[name], 2_000)
            ask_run(variants[name][1], 500)

        chunk = tells // tell_rounds
        for r in range(tell_rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                send, e2e = tell_burst(*variants[name], chunk)
                send_s[name] += send
                e2e_s[name] += e2e
                per_round_tell[name].append(e2e)

        enqueue_s = dict.fromkeys(names, 0.0)
        chunk = tells // tell_rounds
        for r in range(tell_rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                enqueue_s[name] += enqueue_burst(*variants[name], chunk)

        chunk = asks // ask_rounds
        for r in range(ask_rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                total, lat = ask_run(variants[name][1], chunk)
                ask_s[name] += total
                per_round_ask[name].append(total)
                ask_lat[name].extend(lat)

        system.stop()
        ref.stop()

    hv, pk, pool = names
    rows: list[Row] = []
    for name in names:
        rows.append(Row(f"tell end-to-end, {name}", fmt_rate(tells / e2e_s[name])))
    for name in names:
        rows.append(Row(f"tell send loop only, {name}", fmt_rate(tells / send_s[name])))
    rows.append(Row("tell cost hydrovisor / pykka, all rounds", f"{ratio(e2e_s[hv], e2e_s[pk]):.2f}x"))
    rows.append(Row("tell cost hydrovisor / pykka, send loop", f"{ratio(send_s[hv], send_s[pk]):.2f}x"))
    rows.append(target_row("tell", per_round_tell[hv], per_round_tell[pk]))
    rows.append(info_row("tell", per_round_tell[pool], per_round_tell[pk]))
    for name in names:
        rows.append(Row(f"ask round trips, {name}", fmt_rate(asks / ask_s[name], "asks/s")))
        s = summarize(ask_lat[name])
        rows.append(Row(f"  ask latency p50 / p99, {name}", f"{fmt_us(s.p50)} / {fmt_us(s.p99)}"))
    rows.append(Row("ask cost hydrovisor / pykka, all rounds", f"{ratio(ask_s[hv], ask_s[pk]):.2f}x"))
    p50 = ratio(summarize(ask_lat[hv]).p50, summarize(ask_lat[pk]).p50)
    rows.append(Row("ask p50 latency hydrovisor / pykka", f"{p50:.2f}x"))
    rows.append(target_row("ask", per_round_ask[hv], per_round_ask[pk]))
    rows.append(info_row("ask", per_round_ask[pool], per_round_ask[pk]))
    for name in names:
        rows.append(Row(f"enqueue cost per tell (receiver parked), {name}", fmt_us(enqueue_s[name] / tells)))
    rows.append(Row("enqueue cost hydrovisor / pykka", f"{ratio(enqueue_s[hv], enqueue_s[pk]):.2f}x"))
    rows.append(Row("enqueue cost pool / pykka", f"{ratio(enqueue_s[pool], enqueue_s[pk]):.2f}x"))
    print_table("stable-path messaging vs raw pykka refs", rows)


def main() -> None:
    args = parse_args(__doc__ or "")
    run(args.quick)
    sys.exit(0)


if __name__ == "__main__":
    main()
