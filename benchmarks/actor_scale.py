"""Spawn time, RSS, threads and GC pauses per actor: pooled and thread actors vs plain pykka.

Variants (every phase, variant x size, runs in a fresh interpreter):

- ``pool``: pooled children (``ChildSpec(..., execution=Execution.POOL)``) of a dynamic supervisor
  ``/zones`` under the root, started in batches of 1,000 with ``system.ask("/zones",
  StartChildren(...))`` (returns once every child's ``on_start`` ran); the system's worker pool
  (``PoolSettings()``: 4 workers). Sizes up to 100,000.
- ``pool, gc frozen``: the same with :func:`hydrovisor.runtime.gc_tuning.install` (a slow full
  collection freezes its survivors) and :func:`gc_tuning.freeze` after the spawns, as production
  should run it (largest size only).
- ``pool, gc frozen, no child_started line``: the same again with the supervisor's
  ``child_started`` INFO line (one per child) filtered out: what a batch start costs without it
  (largest size only).
- ``pool, one by one``: pooled, one ``StartChild`` ask per child (sizes <= 10,000).
- ``thread``: every child a thread (``SupervisedActor`` on its own ``ThreadingActor`` thread), one
  ``StartChild`` ask per child, which returns once the child's ``on_start`` ran (sizes <= 10,000).
- ``pykka``: ``Idle.start()`` x N on plain ``pykka.ThreadingActor`` (returns once the thread runs;
  it does not wait for ``on_start``) (sizes <= 10,000).

RSS and thread count are deltas from just before the phase's first spawn (after the tree / loop
are up). Also: the GC pauses *during* the spawns (``gc.callbacks``: count and longest of the full,
generation-2 collections), one full ``gc.collect()`` after them with the heap unfrozen and again
after ``gc_tuning.freeze()`` (what the next automatic full collection would stop every thread for),
the process CPU while idle for 2 s with every actor alive (supervisor liveness ticks), and the time
to stop everything. Thread stacks are left at the platform default (``--stack-kib`` for a what-if
run); ``SupervisedActor`` runs on daemon threads, plain pykka on non-daemon ones
(``--daemon-baseline`` evens that out).

Targets (issue 14): 100,000 pooled actors in RSS < 1 GiB (goal < 500 MB), spawned in <= 10 s.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pykka
from _stats import (
    Row,
    fmt_bytes,
    fmt_ms,
    fmt_us,
    header,
    parse_args,
    print_table,
    ratio,
    route_logs_to_devnull,
    rss_bytes,
    summarize,
    thread_count,
    upper_bound,
    vms_bytes,
)
from prometheus_client import CollectorRegistry

from hydrovisor.runtime import gc_tuning
from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.supervisors import (
    ActorSystem,
    ChildSpec,
    Execution,
    PoolSettings,
    StartChild,
    StartChildren,
    SupervisedActor,
    SupervisorFlags,
    supervisor_spec,
)

PHASE_TIMEOUT = 600.0
BATCH = 1_000  # children per StartChildren ask
TARGET_RSS = 1 << 30  # 100,000 pooled actors: < 1 GiB
GOAL_RSS = 500 * 1000 * 1000  # ... goal < 500 MB
TARGET_SPAWN_S = 10.0  # 100,000 pooled actors spawned in <= 10 s
TARGET_N = 100_000
IDLE_S = 2.0  # quick: 0.2

NO_CHILD_LOG = "pool, gc frozen, no child_started line"
VARIANTS = ("pool", "pool, gc frozen", NO_CHILD_LOG, "pool, one by one", "thread", "pykka")
THREAD_MAX = 10_000  # thread variants (and pykka) are not run above this


class Idle(SupervisedActor):
    """A supervised actor that only answers."""

    def on_receive(self, message: Any) -> Any:
        return message


class BareIdle(pykka.ThreadingActor):
    """The same on plain pykka."""

    def on_receive(self, message: Any) -> Any:
        return message


def _measure_before() -> tuple[int, int, int]:
    gc.collect()
    return rss_bytes(), thread_count(), vms_bytes()


def _cpu_s() -> float:
    t = psutil.Process().cpu_times()
    return float(t.user + t.system)


def _timed_full_collection() -> float:
    began = time.perf_counter()
    gc.collect()
    return time.perf_counter() - began


def phase_hydrovisor(n: int, variant: str, idle_s: float) -> dict[str, Any]:
    """Start ``n`` children of a dynamic supervisor (pooled or threads), measure, stop the tree."""
    route_logs_to_devnull()  # one "child_started" INFO line per spawn, as in production
    pooled = variant.startswith("pool")
    frozen = variant.startswith("pool, gc frozen")
    batched = variant in ("pool", "pool, gc frozen", NO_CHILD_LOG)
    if variant == NO_CHILD_LOG:
        logging.getLogger("hydrovisor.supervisor").addFilter(
            lambda record: getattr(record, "event", None) != "child_started")
    execution = Execution.POOL if pooled else Execution.THREAD
    pauses = gc_tuning.PauseRecorder()
    with LoopThread() as lt:
        system = ActorSystem(bridge=lt.bridge, timers=lt.timers, registry=CollectorRegistry(), pool=PoolSettings())
        system.start(
            SupervisorFlags(max_restarts=10**9, period=1.0),
            [supervisor_spec("zones", SupervisorFlags(dynamic=True, max_children=2 * n + 10))],
        )
        specs = [ChildSpec(f"z{i}", Idle.start, hang_timeout=None, execution=execution) for i in range(n)]
        rss0, threads0, vms0 = _measure_before()
        if frozen:
            gc_tuning.install()
        pauses.start()
        lat: list[float] = []
        began = time.perf_counter()
        if batched:
            for i in range(0, n, BATCH):
                t0 = time.perf_counter()
                reply = system.ask("/zones", StartChildren(tuple(specs[i:i + BATCH])), timeout=PHASE_TIMEOUT)
                if reply.failed:
                    raise RuntimeError(f"{len(reply.failed)} children failed to start: {reply.failed[0]}")
                lat.append((time.perf_counter() - t0) / len(reply.started))
        else:
            for spec in specs:
                t0 = time.perf_counter()
                system.ask("/zones", StartChild(spec), timeout=30)
                lat.append(time.perf_counter() - t0)
        spawn = time.perf_counter() - began
        pauses.stop()
        froze_s = gc_tuning.freeze().pause_s if frozen else 0.0
        if system.ask(f"/zones/z{n - 1}", "ping", timeout=30) != "ping":
            raise RuntimeError("last child does not answer")
        rss1, threads1, vms1 = rss_bytes(), thread_count(), vms_bytes()
        cpu0 = _cpu_s()
        time.sleep(idle_s)
        idle_cores = (_cpu_s() - cpu0) / idle_s
        # one full collection as the heap is (frozen or not), then unfrozen vs frozen
        as_is = _timed_full_collection()
        gc.unfreeze()
        unfrozen = _timed_full_collection()
        gc.freeze()
        after_freeze = _timed_full_collection()
        gc.unfreeze()
        paths = len(system.paths())
        began = time.perf_counter()
        stopped = system.stop(timeout=PHASE_TIMEOUT)
        stop = time.perf_counter() - began
    gc_tuning.uninstall()
    result = _result(lat, spawn, before=(rss0, threads0, vms0), after=(rss1, threads1, vms1), stop=stop,
                     stopped=stopped, paths=paths)
    result.update(
        gen2_count=pauses.count[2], gen2_max_s=pauses.max_s[2], gen2_total_s=pauses.total_s[2],
        young_total_s=pauses.total_s[0] + pauses.total_s[1], full_gc_as_is_s=as_is,
        full_gc_unfrozen_s=unfrozen, full_gc_frozen_s=after_freeze, freeze_s=froze_s, idle_cores=idle_cores,
    )
    return result


def _result(
    lat: list[float],
    spawn: float,
    *,
    before: tuple[int, int, int],
    after: tuple[int, int, int],
    stop: float,
    stopped: bool,
    paths: int,
) -> dict[str, Any]:
    """One phase's numbers; ``before``/``after`` are (RSS, threads, virtual memory)."""
    s = summarize(lat)
    tenth = max(1, len(lat) // 10)
    return {
        "first10_s": sum(lat[:tenth]) / tenth,
        "last10_s": sum(lat[-tenth:]) / tenth,
        "spawn_s": spawn,
        "p50_s": s.p50,
        "p99_s": s.p99,
        "max_s": s.max,
        "rss_delta": after[0] - before[0],
        "threads_delta": after[1] - before[1],
        "threads": after[1],
        "stop_s": stop,
        "stopped": stopped,
        "paths": paths,
        "rss_after": after[0],
        "vms_delta": after[2] - before[2],
    }


def phase_pykka(n: int, idle_s: float) -> dict[str, Any]:
    """Start ``n`` plain pykka actors, then stop them all."""
    route_logs_to_devnull()
    rss0, threads0, vms0 = _measure_before()
    pauses = gc_tuning.PauseRecorder().start()
    lat: list[float] = []
    refs: list[pykka.ActorRef[Any]] = []
    began = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        refs.append(BareIdle.start())
        lat.append(time.perf_counter() - t0)
    spawn = time.perf_counter() - began
    pauses.stop()
    if refs[-1].ask("ping", timeout=30) != "ping":
        raise RuntimeError("last actor does not answer")
    rss1, threads1, vms1 = rss_bytes(), thread_count(), vms_bytes()
    cpu0 = _cpu_s()
    time.sleep(idle_s)
    idle_cores = (_cpu_s() - cpu0) / idle_s
    unfrozen = _timed_full_collection()
    began = time.perf_counter()
    pykka.ActorRegistry.stop_all(block=True, timeout=PHASE_TIMEOUT)
    stop = time.perf_counter() - began
    result = _result(lat, spawn, before=(rss0, threads0, vms0), after=(rss1, threads1, vms1), stop=stop,
                     stopped=True, paths=n)
    result.update(gen2_count=pauses.count[2], gen2_max_s=pauses.max_s[2], gen2_total_s=pauses.total_s[2],
                  young_total_s=pauses.total_s[0] + pauses.total_s[1], full_gc_as_is_s=unfrozen,
                  full_gc_unfrozen_s=unfrozen, idle_cores=idle_cores)
    return result


def run_phase(variant: str, n: int, stack_kib: int | None, daemon: bool, idle_s: float) -> dict[str, Any]:
    """Run one phase in a fresh interpreter; returns its measurements or ``{"error": ...}``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", variant, "--n", str(n), "--idle-s", str(idle_s)]
    if stack_kib is not None:
        cmd += ["--stack-kib", str(stack_kib)]
    if daemon:
        cmd.append("--daemon-baseline")
    began = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=PHASE_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {PHASE_TIMEOUT:.0f}s"}
    wall = time.perf_counter() - began
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
        return {"error": f"exit {proc.returncode}: {tail}"}
    result: dict[str, Any] = json.loads(lines[-1])
    result["wall_s"] = wall
    return result


def rows_for(n: int, results: dict[str, dict[str, Any]]) -> list[Row]:
    """Table rows of one size."""
    rows: list[Row] = []
    for name, r in results.items():
        label = f"{n:>7,} {name}"
        if "error" in r:
            rows.append(Row(f"{label}: FAILED", r["error"][:160]))
            continue
        spawn_row = Row(f"{label}: spawn total", f"{r['spawn_s']:.3f} s")
        if n == TARGET_N and name.startswith("pool"):
            q, ok = upper_bound(r["spawn_s"], TARGET_SPAWN_S)
            spawn_row = Row(spawn_row.metric, spawn_row.value, f"<= {TARGET_SPAWN_S:.0f} s", q, ok)
        rows.append(spawn_row)
        per = "per actor" if name in ("pool, one by one", "thread", "pykka") else "per batch of 1,000, per actor"
        rows.append(Row(f"{label}: spawn {per}: mean / p50 / p99", f"{fmt_us(r['spawn_s'] / n)} / "
                        f"{fmt_us(r['p50_s'])} / {fmt_us(r['p99_s'])}"))
        rows.append(Row(f"{label}: spawn mean, first / last 10%",
                        f"{fmt_us(r['first10_s'])} / {fmt_us(r['last10_s'])}"))
        rows.append(Row(f"{label}: RSS delta total / per actor",
                        f"{fmt_bytes(r['rss_delta'])} / {fmt_bytes(r['rss_delta'] / n)}"))
        if n == TARGET_N and name.startswith("pool"):
            q, ok = upper_bound(r["rss_after"], TARGET_RSS)
            rows.append(Row(f"{label}: process RSS", fmt_bytes(r["rss_after"]), "< 1 GiB", q, ok))
            q, ok = upper_bound(r["rss_after"], GOAL_RSS)
            rows.append(Row(f"{label}: process RSS (goal)", f"{r['rss_after'] / 1e6:.0f} MB", "< 500 MB", q, ok))
        rows.append(Row(f"{label}: virtual memory per actor", fmt_bytes(r["vms_delta"] / n)))
        rows.append(Row(f"{label}: threads (delta / process)", f"{r['threads_delta']} / {r['threads']}"))
        rows.append(Row(f"{label}: gen2 GC during spawn: count / longest / total",
                        f"{r['gen2_count']} / {fmt_ms(r['gen2_max_s'])} / {r['gen2_total_s']:.2f} s"))
        if "full_gc_frozen_s" in r:
            rows.append(Row(f"{label}: full gc.collect() after spawn: unfrozen / frozen",
                            f"{fmt_ms(r['full_gc_unfrozen_s'])} / {fmt_ms(r['full_gc_frozen_s'])}"))
        else:
            rows.append(Row(f"{label}: full gc.collect() after spawn", fmt_ms(r["full_gc_unfrozen_s"])))
        if r.get("freeze_s"):
            rows.append(Row(f"{label}: gc_tuning.freeze() (young collection + freeze)", fmt_ms(r["freeze_s"])))
        rows.append(Row(f"{label}: idle CPU, all alive", f"{r['idle_cores']:.3f} cores"))
        stopped = "" if r["stopped"] else " (NOT all stopped in time)"
        rows.append(Row(f"{label}: stop all", f"{r['stop_s']:.3f} s{stopped}"))
    base = results.get("pykka", {})
    for name in ("pool", "thread"):
        hv = results.get(name, {})
        if not hv or not base or "error" in hv or "error" in base:
            continue
        rows.append(Row(f"{n:>7,}: spawn time {name} / pykka", f"{ratio(hv['spawn_s'], base['spawn_s']):.2f}x"))
        rows.append(Row(f"{n:>7,}: RSS per actor {name} / pykka",
                        f"{ratio(hv['rss_delta'], base['rss_delta']):.2f}x"))
        rows.append(Row(f"{n:>7,}: stop time {name} / pykka", f"{ratio(hv['stop_s'], base['stop_s']):.2f}x"))
    return rows


def variants_for(n: int, largest: int) -> list[str]:
    """Which variants run at size ``n``."""
    chosen = ["pool"]
    if n == largest:
        chosen += ["pool, gc frozen", NO_CHILD_LOG]
    if n <= THREAD_MAX:
        chosen += ["pool, one by one", "thread", "pykka"]
    return chosen


def run(quick: bool, stack_kib: int | None, sizes_arg: str | None, daemon: bool) -> None:
    sizes = (200,) if quick else (1_000, 10_000, 100_000)
    idle_s = IDLE_S / 10 if quick else IDLE_S
    if sizes_arg:
        sizes = tuple(int(x) for x in sizes_arg.split(","))
    header(f"actor scale: {', '.join(f'{n:,}' for n in sizes)} actors, one interpreter per phase", quick)
    print(f"   thread stack size: {f'{stack_kib} KiB' if stack_kib else 'platform default'}")
    print(f"   pykka baseline threads: {'daemon' if daemon else 'non-daemon (pykka default)'}")
    rows: list[Row] = []
    for i, n in enumerate(sizes):
        order = variants_for(n, max(sizes))
        if i % 2:
            order.reverse()  # alternate, so a load spike does not always hit the same variant
        results = {name: run_phase(name, n, stack_kib, daemon, idle_s) for name in order}
        rows += rows_for(n, {name: results[name] for name in VARIANTS if name in results})
    print_table("actor scale (fresh process per phase; RSS/threads are deltas from before the spawns)", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phase", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--idle-s", type=float, default=IDLE_S, help=argparse.SUPPRESS)
    parser.add_argument("--stack-kib", type=int, help="threading.stack_size() in KiB (default: as is)")
    parser.add_argument(
        "--daemon-baseline",
        action="store_true",
        help="baseline actors on daemon threads, like SupervisedActor (CPython 3.11 keeps a list of "
        "non-daemon threads' shutdown locks and scans it at every Thread.start)",
    )
    parser.add_argument("--sizes", help="comma-separated actor counts (default: 1000,10000,100000; quick: 200)")
    args = parse_args(__doc__ or "", parser)
    if args.stack_kib:
        threading.stack_size(args.stack_kib * 1024)
    if args.daemon_baseline:
        BareIdle.use_daemon_thread = True
    if args.phase:
        result = (phase_pykka(args.n, args.idle_s) if args.phase == "pykka"
                  else phase_hydrovisor(args.n, args.phase, args.idle_s))
        print(json.dumps(result))
        sys.stdout.flush()
        sys.exit(0)
    run(args.quick, args.stack_kib, args.sizes, args.daemon_baseline)
    sys.exit(0)


if __name__ == "__main__":
    logging.captureWarnings(True)
    main()
