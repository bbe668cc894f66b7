"""Spawn time, RSS and threads per actor at 1k and 10k actors: supervised vs plain pykka.

hydrovisor: a dynamic supervisor ``/zones`` (``max_children=20000``) under the root; children
are started one by one with ``system.ask("/zones", StartChild(ChildSpec(...)))``, which returns
once the child's ``on_start`` ran (the supervisor waits for it). Every child is a thread.
baseline: ``Idle.start()`` x N on plain ``pykka.ThreadingActor`` (returns once the thread runs;
it does not wait for ``on_start``).

Every phase (variant x size) runs in a fresh interpreter, so memory freed by an earlier phase
cannot be reused by a later one; RSS and thread count are measured as the delta from just before
the phase's first spawn (after the tree / loop are up). Phases alternate (hv, pykka, pykka, hv).
The stop time of the whole population is reported too. Thread stacks are left at the platform
default (``threading.stack_size()`` = 0 -> 8 MiB of *virtual* memory per thread, of which only
the touched pages count in RSS); ``--stack-kib`` sets it for a what-if run. ``SupervisedActor``
runs on daemon threads, plain pykka on non-daemon ones; ``--daemon-baseline`` evens that out.

No target was given in the issue: the table compares with the baseline only.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

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
    vms_bytes,
)
from prometheus_client import CollectorRegistry

from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.supervisors import (
    ActorSystem,
    ChildSpec,
    StartChild,
    SupervisedActor,
    SupervisorFlags,
    supervisor_spec,
)

PHASE_TIMEOUT = 300.0


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


def phase_hydrovisor(n: int) -> dict[str, Any]:
    """Start ``n`` children of a dynamic supervisor, then stop the tree."""
    route_logs_to_devnull()  # one "child_started" INFO line per spawn, as in production
    with LoopThread() as lt:
        system = ActorSystem(bridge=lt.bridge, timers=lt.timers, registry=CollectorRegistry())
        system.start(
            SupervisorFlags(max_restarts=10**9, period=1.0),
            [supervisor_spec("zones", SupervisorFlags(dynamic=True, max_children=20000))],
        )
        rss0, threads0, vms0 = _measure_before()
        lat: list[float] = []
        began = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            system.ask("/zones", StartChild(ChildSpec(f"z{i}", Idle.start, hang_timeout=None)), timeout=30)
            lat.append(time.perf_counter() - t0)
        spawn = time.perf_counter() - began
        if system.ask(f"/zones/z{n - 1}", "ping", timeout=30) != "ping":
            raise RuntimeError("last child does not answer")
        gc.collect()
        rss1, threads1, vms1 = rss_bytes(), thread_count(), vms_bytes()
        paths = len(system.paths())
        began = time.perf_counter()
        stopped = system.stop(timeout=PHASE_TIMEOUT)
        stop = time.perf_counter() - began
    return _result(lat, spawn, before=(rss0, threads0, vms0), after=(rss1, threads1, vms1), stop=stop,
                   stopped=stopped, paths=paths)



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

def phase_pykka(n: int) -> dict[str, Any]:
    """Start ``n`` plain pykka actors, then stop them all."""
    route_logs_to_devnull()
    rss0, threads0, vms0 = _measure_before()
    lat: list[float] = []
    refs: list[pykka.ActorRef[Any]] = []
    began = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        refs.append(BareIdle.start())
        lat.append(time.perf_counter() - t0)
    spawn = time.perf_counter() - began
    if refs[-1].ask("ping", timeout=30) != "ping":
        raise RuntimeError("last actor does not answer")
    gc.collect()
    rss1, threads1, vms1 = rss_bytes(), thread_count(), vms_bytes()
    began = time.perf_counter()
    pykka.ActorRegistry.stop_all(block=True, timeout=PHASE_TIMEOUT)
    stop = time.perf_counter() - began
    return _result(lat, spawn, before=(rss0, threads0, vms0), after=(rss1, threads1, vms1), stop=stop,
                   stopped=True, paths=n)


def run_phase(variant: str, n: int, stack_kib: int | None, daemon: bool) -> dict[str, Any]:
    """Run one phase in a fresh interpreter; returns its measurements or ``{"error": ...}``."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", variant, "--n", str(n)]
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
        if "error" in r:
            rows.append(Row(f"{n:>6} actors, {name}: FAILED", r["error"][:160]))
            continue
        rows.append(Row(f"{n:>6} actors, {name}: spawn total", f"{r['spawn_s']:.3f} s"))
        rows.append(Row(f"{n:>6} actors, {name}: spawn per actor (mean)", fmt_us(r["spawn_s"] / n)))
        rows.append(
            Row(
                f"{n:>6} actors, {name}: spawn p50 / p99 / max",
                f"{fmt_us(r['p50_s'])} / {fmt_us(r['p99_s'])} / {fmt_ms(r['max_s'])}",
            )
        )
        rows.append(
            Row(
                f"{n:>6} actors, {name}: spawn mean, first / last 10%",
                f"{fmt_us(r['first10_s'])} / {fmt_us(r['last10_s'])}",
            )
        )
        rows.append(Row(f"{n:>6} actors, {name}: RSS delta total", fmt_bytes(r["rss_delta"])))
        rows.append(Row(f"{n:>6} actors, {name}: RSS per actor", fmt_bytes(r["rss_delta"] / n)))
        rows.append(Row(f"{n:>6} actors, {name}: virtual memory per actor", fmt_bytes(r["vms_delta"] / n)))
        rows.append(
            Row(f"{n:>6} actors, {name}: threads (delta / process)", f"{r['threads_delta']} / {r['threads']}")
        )
        stopped = "" if r["stopped"] else " (NOT all stopped in time)"
        rows.append(Row(f"{n:>6} actors, {name}: stop all", f"{r['stop_s']:.3f} s{stopped}"))
    hv, pk = results.get("hydrovisor", {}), results.get("pykka", {})
    if "error" not in hv and "error" not in pk and hv and pk:
        rows.append(
            Row(
                f"{n:>6} actors: spawn time hydrovisor / pykka", f"{ratio(hv['spawn_s'], pk['spawn_s']):.2f}x"
            )
        )
        rows.append(
            Row(
                f"{n:>6} actors: RSS per actor hydrovisor / pykka",
                f"{ratio(hv['rss_delta'], pk['rss_delta']):.2f}x",
            )
        )
        rows.append(
            Row(f"{n:>6} actors: stop time hydrovisor / pykka", f"{ratio(hv['stop_s'], pk['stop_s']):.2f}x")
        )
    return rows


def run(quick: bool, stack_kib: int | None, sizes_arg: str | None, daemon: bool) -> None:
    sizes = (100, 500) if quick else (1_000, 10_000)
    if sizes_arg:
        sizes = tuple(int(x) for x in sizes_arg.split(","))
    header(f"actor scale: {' and '.join(f'{n:,}' for n in sizes)} actors, one interpreter per phase", quick)
    print(f"   thread stack size: {f'{stack_kib} KiB' if stack_kib else 'platform default'}")
    print(f"   pykka baseline threads: {'daemon' if daemon else 'non-daemon (pykka default)'}")
    rows: list[Row] = []
    for i, n in enumerate(sizes):
        order = ["hydrovisor", "pykka"] if i % 2 == 0 else ["pykka", "hydrovisor"]
        results = {name: run_phase(name, n, stack_kib, daemon) for name in order}
        rows += rows_for(n, {name: results[name] for name in ("hydrovisor", "pykka")})
    print_table("actor scale (fresh process per phase; RSS/threads are deltas from before the spawns)", rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phase", choices=["hydrovisor", "pykka"], help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("--stack-kib", type=int, help="threading.stack_size() in KiB (default: as is)")
    parser.add_argument(
        "--daemon-baseline",
        action="store_true",
        help="baseline actors on daemon threads, like SupervisedActor (CPython 3.11 keeps a list of "
        "non-daemon threads' shutdown locks and scans it at every Thread.start)",
    )
    parser.add_argument("--sizes", help="comma-separated actor counts (default: 1000,10000; quick: 100,500)")
    args = parse_args(__doc__ or "", parser)
    if args.stack_kib:
        threading.stack_size(args.stack_kib * 1024)
    if args.daemon_baseline:
        BareIdle.use_daemon_thread = True
    if args.phase:
        result = (phase_hydrovisor if args.phase == "hydrovisor" else phase_pykka)(args.n)
        print(json.dumps(result))
        sys.stdout.flush()
        sys.exit(0)
    run(args.quick, args.stack_kib, args.sizes, args.daemon_baseline)
    sys.exit(0)


if __name__ == "__main__":
    main()
