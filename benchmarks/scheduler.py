"""The scheduler at scale: N zones with a minute schedule, dispatch lag from due time, and the CPU it costs.

A real hydrovisor instance runs in this process (``hydrovisor_instance`` through ``zones.py``'s ``_instance``:
dev mode, embedded PostgreSQL in a temporary data dir). Over HTTP: one greenhouse and N zones (``zones.py``'s
``create_zones``, default settings: no schedule), the idle CPU of that, then every zone's settings replaced
(``PUT /api/v1/zones/{uid}/settings``) by a **minute schedule**: lighting windows ``[m, m+1)`` on every other
minute, so each zone has one lighting change (on or off) due at every minute boundary, all zones at the same
instant (the worst case: the whole fleet's lights switch together).

The zones have **no light node**: each task goes the executor's real path for lighting (the zone row, then
the zone actor asked for its observed state over the bridge) and ends ``failed`` / ``fail`` /
``no_device_for_task`` (no retry). What is measured is the scheduler itself: planning (``plan_zone`` + one
``enqueue`` per task), the claim by due time in SQL (``due_tasks``), one task actor per task, the executor up
to its device check, and the outcome stored (``finish``) with its timeline entries. A real command round trip to
1,000 light nodes is not part of it.

Then it runs for ``--minutes`` (3) and prints, from the ``tasks`` table (every task due in the window):

- tasks planned (created), dispatched, terminal by status / decision / reason;
- **dispatch lag** from ``due_at`` to ``started_at`` (the dispatcher's clock when its claim step began; the
  target, p99 <= 1 s, is checked on it), to the ``running`` timeline entry (database clock, just after the
  claim committed), to the executor's start (time taken in this process) and to ``finished_at``;
- tasks executed twice: ``TaskExecutor.execute`` is wrapped to count its calls per correlation id (must be 0),
  plus, from the table, correlation ids with more than one task row and tasks with more than one ``running``
  entry;
- the server's CPU (this process, in cores = CPU seconds per wall second) and PostgreSQL's (the postmaster
  and its children, via psutil), with and without the schedules, and the process RSS;
- where the time goes: ``SchedulerPlane.plan`` per step, ``tasks.enqueue`` per task, ``tasks.due_tasks`` per
  claim and ``SchedulerPlane.run`` per task (wrapped; counts, p50 / p99 / max, total busy seconds).

Tasks planned *late* (the zone's first planning step requests the occurrence of the current minute that is
still valid with ``due_at`` = the planning time) are reported apart from those planned ahead; the headline
lag is over the ahead ones due inside the measured window. The script prints numbers and asserts nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from _instance import cpu_seconds, metric_sum, post_created, postgres_procs
from _stats import Row, fmt_bytes, fmt_ms, header, parse_args, print_table, route_logs_to_devnull, summarize
from zones import GH, NOISY_LOGGERS, ZonesInstance, _instance, _post_all, safe_scrape, zone_uid

TARGET_P99_S = 1.0  # dispatch lag p99 from due time (issue 13)
MAX_WINDOWS = 48  # hydrovisor.zones.settings.MAX_SCHEDULE_WINDOWS: one window = an "on" and an "off" minute
SETTLE_S = 30.0  # after the window: wait at most this long for the window's tasks to end


# what the server does, recorded from inside it ------------------------------------------------------------


@dataclass
class Probe:
    """Durations of the scheduler's steps and the executor's starts, recorded by wrappers (loop thread)."""

    steps: dict[str, list[float]] = field(default_factory=lambda: {"plan": [], "enqueue": [], "due_tasks": [],
                                                                    "dispatch": [], "dispatch_step": [], "run": []})
    claimed: list[int] = field(default_factory=list)  # tasks per due_tasks call
    executed: Counter[str] = field(default_factory=Counter)  # correlation id -> execute() calls
    exec_started: dict[str, float] = field(default_factory=dict)  # correlation id -> first execute(), epoch s
    lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self) -> None:
        """Wrap the measured functions (before the instance starts, so every call goes through them)."""
        from hydrovisor.scheduler.actors import DispatcherActor  # noqa: PLC0415 - imported after logging setup
        from hydrovisor.scheduler.plane import SchedulerPlane  # noqa: PLC0415
        from hydrovisor.store.repos import tasks  # noqa: PLC0415
        from hydrovisor.tasks.executor import TaskExecutor  # noqa: PLC0415

        probe = self

        def timed(name: str, fn: Callable[..., Any], after: Callable[[Any], None] | None = None) -> Any:
            async def wrapper(*args: Any, **kwargs: Any) -> Any:
                began = time.perf_counter()
                try:
                    result = await fn(*args, **kwargs)
                finally:
                    probe.steps[name].append(time.perf_counter() - began)
                if after is not None:
                    after(result)
                return result
            return wrapper

        SchedulerPlane.plan = timed("plan", SchedulerPlane.plan)  # type: ignore[method-assign]
        SchedulerPlane.dispatch = timed("dispatch", SchedulerPlane.dispatch)  # type: ignore[method-assign]
        SchedulerPlane.run = timed("run", SchedulerPlane.run)  # type: ignore[method-assign]
        # the dispatcher's whole step: plane.dispatch, then one StartChild ask per claimed task, in turn
        DispatcherActor._dispatch = timed("dispatch_step", DispatcherActor._dispatch)  # type: ignore[method-assign]
        # plane.py calls them as ``tasks.enqueue`` / ``tasks.due_tasks``: patching the module attribute is enough
        tasks.enqueue = timed("enqueue", tasks.enqueue)
        tasks.due_tasks = timed("due_tasks", tasks.due_tasks,
                                lambda claimed: probe.claimed.append(len(claimed)))
        original_execute = TaskExecutor.execute

        async def execute(executor: Any, order: Any) -> Any:
            at = time.time()
            with probe.lock:
                probe.executed[order.correlation_id] += 1
                probe.exec_started.setdefault(order.correlation_id, at)
            return await original_execute(executor, order)

        TaskExecutor.execute = execute  # type: ignore[method-assign,assignment]


class SchedulerInstance(ZonesInstance):
    """The instance under test plus the queries of this script."""

    def rows(self, query: str, *args: Any) -> list[Any]:
        """All rows of ``query`` through the instance's pool."""
        result: list[Any] = self.loop.run(self._query(query, args, one=False), timeout=120)
        return result


# the schedule -----------------------------------------------------------------------------------------------


def minute_windows(start: dt.datetime, minutes: float) -> list[dict[str, str]]:
    """Lighting windows ``[m, m+1)`` every other minute from ``start``'s minute, enough to cover ``minutes``
    more (plus margin) — one change (on, then off) at every minute boundary. At most ``MAX_WINDOWS``."""
    first = start.replace(second=0, microsecond=0)
    count = min(MAX_WINDOWS, math.ceil(minutes / 2) + 2)
    out = []
    for k in range(count):
        on = first + dt.timedelta(minutes=2 * k)
        off = on + dt.timedelta(minutes=1)
        out.append({"from": on.strftime("%H:%M"), "to": off.strftime("%H:%M")})
    return out


def create_zones(instance: SchedulerInstance, zones: int, windows: list[dict[str, str]]) -> float:
    """One greenhouse and ``zones`` zones created with the lighting minute schedule as their settings (version
    1: a zone's first planning step has no cursor yet); seconds taken."""
    settings = {"lighting": {"enabled": True, "mode": "relay", "windows": windows}}
    began = time.monotonic()
    post_created(instance.base_url + "/api/v1/greenhouses", {"uid": GH, "name": "scheduler bench"})
    _post_all(instance.base_url + "/api/v1/zones", [{"greenhouse_uid": GH, "uid": zone_uid(z), "name": zone_uid(z),
                                                    "settings": settings} for z in range(zones)])
    return time.monotonic() - began


# the run -----------------------------------------------------------------------------------------------------


@dataclass
class Result:
    zones: int
    minutes: float
    window: tuple[dt.datetime, dt.datetime] | None = None
    setup: dict[str, float] = field(default_factory=dict)
    cores: dict[str, float] = field(default_factory=dict)
    rss: dict[str, int] = field(default_factory=dict)
    tasks: list[Any] = field(default_factory=list)
    running_at: dict[str, dt.datetime] = field(default_factory=dict)  # task id -> first "running" entry
    running_entries: Counter[str] = field(default_factory=Counter)  # task id -> "running" entries
    rows_per_correlation: int = 0
    unfinished: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    state: str = ""


def idle_cores(seconds: float, pg: list[psutil.Process]) -> tuple[float, float]:
    """(server, PostgreSQL) cores over ``seconds`` of sleeping here."""
    me = [psutil.Process()]
    c0, p0, t0 = cpu_seconds(me), cpu_seconds(pg), time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t0
    return (cpu_seconds(me) - c0) / wall, (cpu_seconds(pg) - p0) / wall


def run(args: argparse.Namespace, probe: Probe) -> Result:
    zones, quick = args.zones, args.quick
    res = Result(zones=zones, minutes=args.minutes)
    tmp = Path(tempfile.mkdtemp(prefix="hv-sched-"))
    with _instance(tmp / "data", zones) as base:
        instance = SchedulerInstance(base.app, base.loop, base.base_url, base.mqtt_port, base.data_dir)
        time.sleep(1.0)
        pg = postgres_procs(instance.data_dir)
        res.cores["server, idle, no zones"], res.cores["postgres, idle, no zones"] = idle_cores(
            1.0 if quick else 5.0, pg)
        res.rss["idle, no zones"] = psutil.Process().memory_info().rss
        windows = minute_windows(dt.datetime.now(dt.UTC), args.minutes + zones / 60 / 60 + 2)
        res.setup["create_s"] = create_zones(instance, zones, windows)
        print(f"   {zones} zones created in {res.setup['create_s']:.1f} s with {len(windows)} lighting windows "
              f"from {windows[0]['from']} UTC; measuring for {args.minutes:g} min")
        sys.stdout.flush()
        m0 = safe_scrape(instance.base_url)
        pg = postgres_procs(instance.data_dir)  # the pool's backends are up by now
        me = [psutil.Process()]
        start = dt.datetime.now(dt.UTC)
        c0, p0, t0 = cpu_seconds(me), cpu_seconds(pg), time.monotonic()
        time.sleep(args.minutes * 60)
        wall = time.monotonic() - t0
        c1, p1 = cpu_seconds(me), cpu_seconds(pg)
        end = dt.datetime.now(dt.UTC)
        res.window = (start, end)
        res.cores["server, schedules running"] = (c1 - c0) / wall
        res.cores["postgres, schedules running"] = (p1 - p0) / wall
        res.rss["schedules running"] = psutil.Process().memory_info().rss
        # let the window's tasks end (claimed ones finish in milliseconds; a backlog takes longer)
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            res.unfinished = int(instance.sql("SELECT count(*) FROM tasks WHERE status IN ('accepted', 'running') "
                                              "AND due_at <= $1", end))
            if res.unfinished == 0:
                break
            time.sleep(0.5)
        res.metrics = {k: metric_sum(safe_scrape(instance.base_url), k) - metric_sum(m0, k)
                       for k in ("hydrovisor_task_dispatch_lag_seconds_count",
                                 "hydrovisor_task_dispatch_lag_seconds_sum")}
        res.state = instance.system_state()
        res.tasks = instance.rows("SELECT id, correlation_id, status, decision, reason_code, scheduled_for, due_at, "
                                  "accepted_at, started_at, finished_at FROM tasks ORDER BY due_at, id")
        for row in instance.rows("SELECT task_id, at FROM task_events WHERE type = 'running' ORDER BY at, id"):
            res.running_entries[row["task_id"]] += 1
            res.running_at.setdefault(row["task_id"], row["at"])
        res.rows_per_correlation = int(instance.sql(
            "SELECT count(*) FROM (SELECT correlation_id FROM tasks GROUP BY 1 HAVING count(*) > 1) d"))
    if args.keep:
        print(f"   data dir kept: {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return res


# the report --------------------------------------------------------------------------------------------------


def _lags(pairs: list[tuple[dt.datetime, dt.datetime | None]]) -> list[float]:
    return [(later - due).total_seconds() for due, later in pairs if later is not None]


def _lag_row(name: str, lags: list[float], target: bool = False) -> Row:
    s = summarize(lags)
    value = (f"p50 {fmt_ms(s.p50)} / p90 {fmt_ms(s.p90)} / p99 {fmt_ms(s.p99)} / max {fmt_ms(s.max)} (n {s.n})"
             if lags else "no samples")
    if not target:
        return Row(name, value)
    if not lags:  # no minute boundary in the window (a quick run): nothing to judge
        return Row(name, value, f"p99 <= {TARGET_P99_S:g} s")
    return Row(name, value, f"p99 <= {TARGET_P99_S:g} s", s.p99 / TARGET_P99_S, s.p99 <= TARGET_P99_S)


def _steps_row(name: str, durations: list[float], wall: float) -> Row:
    if not durations:
        return Row(name, "no calls")
    s = summarize(durations)
    busy = sum(durations)
    return Row(name, f"{s.n} calls: p50 {fmt_ms(s.p50)} / p99 {fmt_ms(s.p99)} / max {fmt_ms(s.max)}; "
                     f"busy {busy:.1f} s ({busy / wall:.0%} of the run)")


def report(res: Result, probe: Probe, args: argparse.Namespace) -> None:
    assert res.window is not None
    start, end = res.window
    wall = (end - start).total_seconds()
    in_window = [t for t in res.tasks if start <= t["due_at"] <= end]
    ahead = [t for t in in_window if t["scheduled_for"] is None]
    late = [t for t in res.tasks if t["scheduled_for"] is not None]
    by_status = Counter(t["status"] for t in res.tasks)
    by_outcome = Counter(f"{t['status']}/{t['decision']}/{t['reason_code']}" for t in res.tasks
                         if t["finished_at"] is not None)
    dispatched = [t for t in res.tasks if t["started_at"] is not None]
    twice = sum(1 for n in probe.executed.values() if n > 1)
    running_twice = sum(1 for n in res.running_entries.values() if n > 1)
    boundaries = max(0, math.floor(end.timestamp() / 60) - math.ceil(start.timestamp() / 60) + 1)
    expected = boundaries * res.zones

    rows = [
        Row("zones x minute boundaries in the window", f"{res.zones} x {boundaries} = {expected} occurrences"),
        Row("tasks planned (rows): all / due in the window, planned ahead / planned late (first step)",
            f"{len(res.tasks)} / {len(ahead)} / {len(late)}"),
        Row("occurrences in the window planned late (a zone's planning step came after them)",
            f"{sum(1 for t in late if start <= t['scheduled_for'] <= end)}"),
        Row("tasks dispatched (started_at set), all", f"{len(dispatched)}"),
        Row("tasks by status (all)", ", ".join(f"{k} {v}" for k, v in sorted(by_status.items()))),
        Row("terminal by status/decision/reason", "; ".join(f"{k} {v}" for k, v in sorted(by_outcome.items()))),
        Row("window's tasks still accepted/running "
            f"{SETTLE_S:.0f} s after it", f"{res.unfinished}", "0", None, res.unfinished == 0),
        Row("tasks executed twice (execute() calls per correlation id > 1)", f"{twice}", "0", None, twice == 0),
        Row("correlation ids with > 1 task row / tasks with > 1 'running' entry",
            f"{res.rows_per_correlation} / {running_twice}", "0 / 0", None,
            res.rows_per_correlation == 0 and running_twice == 0),
    ]
    print_table(f"tasks ({res.zones} zones, lighting every minute, {wall / 60:.1f} min from "
                f"{start:%H:%M:%S} to {end:%H:%M:%S} UTC)", rows)

    lag_rows = [
        _lag_row("due_at -> started_at, planned ahead, due in the window",
                 _lags([(t["due_at"], t["started_at"]) for t in ahead]), target=True),
        _lag_row("due_at -> 'running' entry (db clock), same tasks",
                 _lags([(t["due_at"], res.running_at.get(t["id"])) for t in ahead])),
        _lag_row("due_at -> executor start (this process), same tasks",
                 _lags([(t["due_at"], _epoch(probe.exec_started.get(t["correlation_id"]))) for t in ahead])),
        _lag_row("due_at -> finished_at, same tasks", _lags([(t["due_at"], t["finished_at"]) for t in ahead])),
        _lag_row("due_at -> started_at, planned late (due_at = planning time)",
                 _lags([(t["due_at"], t["started_at"]) for t in late])),
        _lag_row("occurrence time -> started_at, planned late",
                 _lags([(t["scheduled_for"], t["started_at"]) for t in late])),
    ]
    count, total = res.metrics.get("hydrovisor_task_dispatch_lag_seconds_count", 0.0), res.metrics.get(
        "hydrovisor_task_dispatch_lag_seconds_sum", 0.0)
    lag_rows.append(Row("hydrovisor_task_dispatch_lag_seconds over the window: count / mean",
                        f"{count:.0f} / {fmt_ms(total / count) if count else '-'}"))
    print_table("dispatch lag", lag_rows)

    cost_rows = [Row(f"{k} (cores)", f"{v:.3f}") for k, v in res.cores.items()]
    extra = res.cores.get("server, schedules running", math.nan) - res.cores.get("server, idle, no zones", math.nan)
    cost_rows.append(Row("server cores added by the zones + schedules (running - idle, no zones)", f"{extra:.3f}"))
    cost_rows += [Row(f"RSS, {k}", fmt_bytes(v)) for k, v in res.rss.items()]
    cost_rows.append(Row("setup: zones created (with their schedule)", f"{res.setup['create_s']:.1f} s"))
    cost_rows.append(Row("system state at the end", res.state))
    print_table("cost", cost_rows)

    claimed = [n for n in probe.claimed if n]
    step_rows = [
        _steps_row("SchedulerPlane.plan (one step over the zones due for planning)", probe.steps["plan"], wall),
        _steps_row("tasks.enqueue (one per requested task)", probe.steps["enqueue"], wall),
        _steps_row("SchedulerPlane.dispatch (expire + recover + claim)", probe.steps["dispatch"], wall),
        _steps_row("tasks.due_tasks (claim + a 'running' entry per task)", probe.steps["due_tasks"], wall),
        _steps_row("DispatcherActor._dispatch (the above + a StartChild ask per task)", probe.steps["dispatch_step"],
                   wall),
        Row("tasks per non-empty claim: mean / max",
            f"{sum(claimed) / len(claimed):.1f} / {max(claimed)}" if claimed else "-"),
        _steps_row("SchedulerPlane.run (execute + finish, per task)", probe.steps["run"], wall),
    ]
    print_table("where the time goes (whole run, setup included)", step_rows)
    print("\n   executor path: lighting tasks in zones without a light node end failed/fail/no_device_for_task "
          "(zone row + zone actor ask + outcome stored); no command reaches a node.")


def _epoch(value: float | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromtimestamp(value, dt.UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--zones", type=int, default=None, help="zones (default 1000; quick 5)")
    parser.add_argument("--minutes", type=float, default=None, help="measured minutes (default 3; quick 0.1)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir (embedded PostgreSQL)")
    parser.add_argument("--max-running", type=int, default=None,
                        help="what-if: the dispatcher's cap on running tasks (Cadence.max_running, default 1,000)")
    args = parse_args(__doc__ or "", parser)
    args.zones = args.zones or (5 if args.quick else 1000)
    args.minutes = args.minutes if args.minutes is not None else (0.1 if args.quick else 3.0)
    header(f"scheduler: {args.zones} zones, a lighting change due every minute in each, for {args.minutes:g} min",
           args.quick)
    route_logs_to_devnull()
    import logging  # noqa: PLC0415

    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    if args.max_running is not None:
        import functools  # noqa: PLC0415

        from hydrovisor import tree  # noqa: PLC0415
        from hydrovisor.scheduler.actors import Cadence  # noqa: PLC0415

        tree.Cadence = functools.partial(Cadence, max_running=args.max_running)  # type: ignore[attr-defined,assignment]
        print(f"   what-if: Cadence.max_running = {args.max_running} (default {Cadence().max_running})")
    probe = Probe()
    probe.install()
    report(run(args, probe), probe, args)
    sys.exit(0)


if __name__ == "__main__":
    main()
