"""Crash -> new incarnation answering: supervised restart vs a hand-rolled pykka restart.

hydrovisor: a permanent child of the one_for_one root supervisor (intensity 10**9 per 1 s).
Each sample is ``system.tell(path, "crash")`` followed at once by ``system.ask(path, "ping")``;
the ask waits in the path's shared mailbox and is answered by the new incarnation. The sample is
the time from the tell to the reply.

baseline: bare pykka. A ``ThreadingActor`` whose ``on_failure`` sets a ``threading.Event``; the
main thread tells ``crash``, waits for the event, starts a new actor and asks ``ping``. Same
clock: tell to reply.

Both variants log like production (hydrovisor's text formatter at INFO, written to /dev/null):
hydrovisor logs the traceback plus three supervisor reports per restart, pykka logs the
traceback. The same pair is measured again with logging disabled, to show what logging costs.
Variants run interleaved in small blocks so load spikes of the shared machine hit all of them.

Targets (issue): p99 <= 2 ms and p99 <= 1.5x the baseline.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import pykka
from _stats import (
    Row,
    fmt_ms,
    header,
    logging_disabled,
    parse_args,
    print_table,
    ratio,
    route_logs_to_devnull,
    summarize,
    upper_bound,
)
from prometheus_client import CollectorRegistry

from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.supervisors import ActorSystem, ChildSpec, SupervisedActor, SupervisorFlags

PATH = "/crashy"
TARGET_P99 = 0.002  # seconds
TARGET_RATIO = 1.5
STALL = 0.003  # a sample this slow waited for the GIL / a CPU (switch interval is 5 ms)


class Crashy(SupervisedActor):
    """Crashes on ``"crash"``, answers anything else."""

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("benchmark crash")
        return "pong"


class BareCrashy(pykka.ThreadingActor):
    """The baseline actor: signals its own death through an event."""

    def __init__(self, failed: threading.Event) -> None:
        super().__init__()
        self._failed = failed

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("benchmark crash")
        return "pong"

    def on_failure(self, *_: Any) -> None:
        self._failed.set()


def hydrovisor_sampler(system: ActorSystem) -> Callable[[], float]:
    """One crash/restart/answer cycle through the supervision tree."""

    def sample() -> float:
        began = time.perf_counter()
        system.tell(PATH, "crash")
        reply = system.ask(PATH, "ping", timeout=5)
        elapsed = time.perf_counter() - began
        if reply != "pong":
            raise RuntimeError(f"unexpected reply {reply!r}")
        return elapsed

    return sample


class PykkaRestarter:
    """The baseline: one crash/restart/answer cycle done by hand with bare pykka."""

    def __init__(self) -> None:
        self._failed = threading.Event()
        self._ref = BareCrashy.start(self._failed)

    def sample(self) -> float:
        self._failed.clear()
        began = time.perf_counter()
        self._ref.tell("crash")
        if not self._failed.wait(5):
            raise RuntimeError("baseline actor did not fail")
        self._ref = BareCrashy.start(self._failed)
        reply = self._ref.ask("ping", timeout=5)
        elapsed = time.perf_counter() - began
        if reply != "pong":
            raise RuntimeError(f"unexpected reply {reply!r}")
        return elapsed

    def stop(self) -> None:
        self._ref.stop()


def run(quick: bool, switch_interval: float | None) -> None:
    n = 60 if quick else 2000
    block = 10 if quick else 25
    warmup = 10 if quick else 50
    header(f"restart latency: crash -> new incarnation answers, {n} samples per variant", quick)
    if switch_interval is not None:
        sys.setswitchinterval(switch_interval)
    print(f"   sys.getswitchinterval() = {sys.getswitchinterval() * 1000:.2f} ms")
    route_logs_to_devnull()
    with LoopThread() as lt:
        registry = CollectorRegistry()
        system = ActorSystem(bridge=lt.bridge, timers=lt.timers, registry=registry)
        system.start(
            SupervisorFlags(max_restarts=10**9, period=1.0),
            [ChildSpec(PATH.lstrip("/"), Crashy.start, hang_timeout=None)],
        )
        base = PykkaRestarter()
        variants: dict[str, tuple[Callable[[], float], bool]] = {
            "hydrovisor": (hydrovisor_sampler(system), False),
            "pykka": (base.sample, False),
            "hydrovisor, logging off": (hydrovisor_sampler(system), True),
            "pykka, logging off": (base.sample, True),
        }
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for fn, quiet in variants.values():
            with logging_disabled(quiet):
                for _ in range(warmup):
                    fn()
        names = list(variants)
        rounds = 0
        while any(len(s) < n for s in samples.values()):
            order = names if rounds % 2 == 0 else names[::-1]
            for name in order:
                fn, quiet = variants[name]
                with logging_disabled(quiet):
                    samples[name].extend(fn() for _ in range(min(block, n - len(samples[name]))))
            rounds += 1
        restarts = registry.get_sample_value(
            "hydrovisor_actor_restarts_total", {"path": PATH, "reason": "crash"}
        )
        system.stop()
        base.stop()

    stats = {name: summarize(values) for name, values in samples.items()}
    hv, pk = stats["hydrovisor"], stats["pykka"]
    hv_q, pk_q = stats["hydrovisor, logging off"], stats["pykka, logging off"]
    rows: list[Row] = []
    for name, s in stats.items():
        rows.append(Row(f"{name}: p50", fmt_ms(s.p50)))
        rows.append(Row(f"{name}: p99", fmt_ms(s.p99)))
        rows.append(Row(f"{name}: max", fmt_ms(s.max)))
        slow = sum(1 for v in samples[name] if v > STALL) / len(samples[name])
        rows.append(Row(f"{name}: samples > {STALL * 1000:.0f} ms", f"{slow * 100:.1f} %"))
    r, ok = upper_bound(hv.p99, TARGET_P99)
    rows.append(Row("hydrovisor p99 (absolute)", fmt_ms(hv.p99), f"<= {fmt_ms(TARGET_P99)}", r, ok))
    rel = ratio(hv.p99, pk.p99)
    rows.append(
        Row(
            "p99 hydrovisor / pykka",
            f"{rel:.2f}x",
            f"<= {TARGET_RATIO}x",
            rel / TARGET_RATIO,
            rel <= TARGET_RATIO,
        )
    )
    rows.append(Row("p50 hydrovisor / pykka", f"{ratio(hv.p50, pk.p50):.2f}x"))
    rel_q = ratio(hv_q.p99, pk_q.p99)
    rows.append(Row("p99 hydrovisor / pykka, logging off", f"{rel_q:.2f}x"))
    rows.append(Row("p50 hydrovisor / pykka, logging off", f"{ratio(hv_q.p50, pk_q.p50):.2f}x"))
    rows.append(Row("hydrovisor p50 spent in logging", fmt_ms(hv.p50 - hv_q.p50)))
    rows.append(Row("restarts counted by hydrovisor_actor_restarts_total", f"{restarts or 0:.0f}"))
    print_table("restart latency (tell crash -> reply from the new incarnation)", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--switch-interval",
        type=float,
        help="sys.setswitchinterval() in seconds for this run (default: Python's 0.005)",
    )
    args = parse_args(__doc__ or "", parser)
    run(args.quick, args.switch_interval)
    sys.exit(0)


if __name__ == "__main__":
    main()
