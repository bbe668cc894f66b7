"""Fault tests of the scheduler (issue 13, DOMAIN §5): ``kill -9`` during dispatch loses no task and executes
none twice; tasks left ``running`` by a dead process are resumed or failed ``task_recovered_after_restart`` after
a restart, and counted; two instances on one database dispatch through exactly one leader, and the other takes
over when the leader goes away.

Reconciliation is exact: every posted task is read back from the database, and every command is counted three
ways (rows in ``commands``, payloads that reached the simulated node, times the node acted on it).

The ``kill -9`` tests share one ``hydrovisor run`` subprocess (embedded PostgreSQL in its data dir, command
timeout patched to 6 s) and one run of the kill scenario (:func:`kill_run`), judged by two tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.sim import Faults
from tests.app.conftest import Running
from tests.helpers import http, wait_until
from tests.scheduler.server import LightZone, Server, db_dsn, fetch, post_task, spawn_ready, tail

TERMINAL = frozenset({"completed", "failed", "expired", "rejected"})
COMMAND_TIMEOUT_S = 6.0  # the subprocess's command timeout (the product's 30 s would only make the test wait)
REPLY_DELAY_S = 1.5  # the light node holds each reply (ACK, then DONE): a task stays running ~3 s


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    """An event loop thread for the simulated nodes; amqtt's reconnect noise around a kill muted."""
    amqtt_log = logging.getLogger("amqtt")
    level = amqtt_log.level
    amqtt_log.setLevel(logging.CRITICAL)
    with LoopThread() as thread:
        yield thread
    amqtt_log.setLevel(level)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A running ``hydrovisor run`` subprocess on fixed ports; terminated and its PostgreSQL reaped after."""
    srv = Server(tmp_path_factory.mktemp("sched-faults") / "data", 1.0, COMMAND_TIMEOUT_S, "WARNING")
    try:
        spawn_ready(srv)
        yield srv
    finally:
        srv.terminate(30)
        srv.reap_postgres()


def metric(base_url: str, name: str) -> dict[str, float]:
    """Samples of ``name`` on ``/metrics``: label text (``""`` without labels) -> value."""
    reply = http("GET", base_url + "/metrics")
    assert reply.status == 200, reply.raw
    found: dict[str, float] = {}
    for line in reply.raw.decode().splitlines():
        if line.startswith((name + "{", name + " ")):
            key, _, value = line.rpartition(" ")
            found[key[len(name):]] = float(value)
    return found


def tasks_of(dsn: str, zone_uid: str) -> list[dict[str, Any]]:
    return asyncio.run(fetch(dsn, "SELECT id, correlation_id, parent_correlation_id, status, decision, reason_code, "
                                  "message, cmd_id, started_at, expires_at FROM tasks WHERE zone_uid = $1", zone_uid))


def commands_of(dsn: str, zone_uid: str) -> list[dict[str, Any]]:
    return asyncio.run(fetch(dsn, "SELECT cmd_id, trace_id, status FROM commands WHERE zone_uid = $1", zone_uid))


def all_terminal(dsn: str, zone_uid: str, timeout: float) -> list[dict[str, Any]]:
    def settled() -> list[dict[str, Any]] | None:
        rows = tasks_of(dsn, zone_uid)
        return rows if rows and all(r["status"] in TERMINAL for r in rows) else None
    found: list[dict[str, Any]] = wait_until(settled, timeout=timeout, interval=0.2, what="every task terminal")
    return found


def root(correlation_id: str) -> str:
    return correlation_id.split(":retry", maxsplit=1)[0]


@dataclass
class KillRun:
    """What :func:`kill_run` observed."""

    posted: dict[str, dict[str, Any]]  # correlation id -> the task as posted
    at_kill: dict[str, dict[str, Any]]  # correlation id -> its row right after the kill
    restarted_at: dt.datetime
    final: dict[str, dict[str, Any]]  # correlation id -> its final row (retries included)
    commands: list[dict[str, Any]]
    delivered: Counter[str]
    executed: Counter[str]
    recoveries: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)

    def running_at_kill(self) -> set[str]:
        return {cid for cid, t in self.at_kill.items() if t["status"] == "running"}

    def actuated_roots(self) -> dict[str, set[str]]:
        """Correlation root -> the cmd_ids the node acted on for it."""
        trace = {c["cmd_id"]: c["trace_id"] or "" for c in self.commands}
        roots: dict[str, set[str]] = {}
        for cmd_id in self.executed:
            roots.setdefault(root(trace.get(cmd_id, "?")), set()).add(cmd_id)
        return roots

    def summary(self) -> str:
        running = self.running_at_kill()
        outcomes = Counter((r["status"], r["reason_code"]) for r in self.final.values())
        retries = sum(1 for r in self.final.values() if r["parent_correlation_id"])
        twice = {r: ids for r, ids in self.actuated_roots().items() if len(ids) > 1}
        return (f"posted {len(self.posted)}, rows {len(self.final)} (retries {retries}); at the kill: running "
                f"{len(running)}, accepted {sum(1 for t in self.at_kill.values() if t['status'] == 'accepted')}; "
                f"final outcomes {dict(outcomes)}; recoveries metric {self.recoveries}; commands: rows "
                f"{len(self.commands)} {dict(Counter(c['status'] for c in self.commands))}, "
                f"delivered {sum(self.delivered.values())} ({len(self.delivered)} ids), "
                f"executed {sum(self.executed.values())} ({len(self.executed)} ids); roots actuated under two "
                f"cmd_ids {len(twice)}; timings {self.timings}")


@pytest.fixture(scope="module")
def kill_run(server: Server, loop: LoopThread) -> KillRun:
    """40 lighting tasks (set_pwm, never skipped) due over 4 s, half of them expiring 6 s after their due time;
    ``kill -9`` once 10 are running; dead until every short-lived task has expired (so recovery meets both
    cases); restarted on the same data dir; then wait until every task is terminal."""
    began = time.monotonic()
    zone = LightZone(loop, server.base_url, server.mqtt_port, "zn-kill", faults=Faults(delay_reply_s=REPLY_DELAY_S))
    zone.start()
    try:
        posted: dict[str, dict[str, Any]] = {}
        for i in range(40):
            due_in = 1.0 + i * 0.1
            expires_in = 120.0 if i % 2 == 0 else due_in + 6.0
            task = post_task(server.base_url, zone.zone_uid, "lighting",
                             {"state": "on", "mode": "pwm", "pwm_level": 10 + i}, due_in=due_in,
                             expires_in=expires_in)
            posted[task["correlation_id"]] = task
        short_expiry = max(dt.datetime.fromisoformat(t["expires_at"]) for t in posted.values()
                           if dt.datetime.fromisoformat(t["expires_at"]) - dt.datetime.fromisoformat(t["due_at"])
                           < dt.timedelta(seconds=60))

        def ten_running() -> bool:
            reply = http("GET", f"{server.base_url}/api/v1/tasks?zone_uid={zone.zone_uid}&status=running")
            return len(reply.json()["data"]) >= 10

        wait_until(ten_running, timeout=20, interval=0.05, what="10 tasks running")
        server.kill9()
        killed = time.monotonic()
        dsn = db_dsn(server.data_dir)  # the embedded PostgreSQL outlives the kill
        at_kill = {t["correlation_id"]: t for t in tasks_of(dsn, zone.zone_uid)}
        time.sleep(max(0.0, (short_expiry - dt.datetime.now(dt.UTC)).total_seconds() + 0.2))  # dead meanwhile
        restarted_at = dt.datetime.now(dt.UTC)
        dead_s = time.monotonic() - killed
        restart_s = spawn_ready(server)
        final = all_terminal(dsn, zone.zone_uid, timeout=60)
        return KillRun(
            posted=posted, at_kill=at_kill, restarted_at=restarted_at,
            final={r["correlation_id"]: r for r in final}, commands=commands_of(dsn, zone.zone_uid),
            delivered=zone.delivered.copy(), executed=zone.executed.copy(),
            recoveries=metric(server.base_url, "hydrovisor_task_recoveries_total"),
            timings={"dead_s": round(dead_s, 1), "restart_s": round(restart_s, 1),
                     "kill_to_all_terminal_s": round(time.monotonic() - killed, 1),
                     "total_s": round(time.monotonic() - began, 1)})
    except BaseException:
        print(tail(server))
        raise
    finally:
        zone.stop()


@pytest.mark.slow
def test_kill_9_during_dispatch_loses_no_task_and_resumes_or_fails_the_running_ones(kill_run: KillRun) -> None:
    run = kill_run
    summary = run.summary()
    print(summary)
    lost = set(run.posted) - set(run.final)
    assert not lost, f"lost tasks {sorted(lost)}; {summary}"
    assert all(r["status"] in TERMINAL for r in run.final.values()), summary
    running = run.running_at_kill()
    alive = {cid for cid in running if run.at_kill[cid]["expires_at"] > run.restarted_at}
    assert alive and running - alive, f"the kill must find running tasks of both kinds; {summary}"
    # expired while dead: failed task_recovered_after_restart, their command not sent again
    for cid in running - alive:
        row = run.final[cid]
        assert (row["status"], row["reason_code"]) == ("failed", "task_recovered_after_restart"), (row, summary)
    # alive: resumed, i.e. executed again under the same correlation id: never recovered-failed, never a second
    # commands row for that correlation id, its cmd_id the one it had before the kill
    for cid in alive:
        row = run.final[cid]
        assert row["reason_code"] != "task_recovered_after_restart", (row, summary)
        assert row["cmd_id"] is not None and row["cmd_id"] == (run.at_kill[cid]["cmd_id"] or row["cmd_id"]), row
        assert [c["cmd_id"] for c in run.commands if c["trace_id"] == cid] == [row["cmd_id"]], (row, summary)
    assert run.recoveries == {'{outcome="resumed"}': len(alive), '{outcome="failed"}': len(running - alive)}, summary
    # never accepted and expired while dead: expired, never sent
    for cid, row in run.final.items():
        if cid in run.at_kill and run.at_kill[cid]["status"] == "accepted" and row["expires_at"] <= run.restarted_at:
            assert row["status"] == "expired" and row["cmd_id"] is None, (row, summary)
    # one row per cmd_id, one cmd_id per correlation id, the node acted on each cmd_id at most once and only
    # on commands the database knows
    per_cmd = Counter(c["cmd_id"] for c in run.commands)
    assert max(per_cmd.values()) == 1, summary
    per_cid = Counter(c["trace_id"] for c in run.commands)
    assert max(per_cid.values()) == 1, summary
    assert not {k: v for k, v in run.executed.items() if v > 1}, summary
    assert set(run.executed) <= set(per_cmd), summary
    assert not {k: v for k, v in run.delivered.items() if v > 1}, f"a command reached the node twice; {summary}"
    for row in run.final.values():
        if row["status"] == "completed":
            assert run.executed[row["cmd_id"]] == 1, (row, summary)


@pytest.mark.slow
def test_kill_9_a_resumed_task_is_not_actuated_twice(kill_run: KillRun) -> None:
    """A task running at the kill has its command out and acted on by the node, whose DONE goes to a dead broker.
    Resumed after the restart it finds its command (same cmd_id, not published again) SENT, and the adopted command
    actor stores TIMEOUT at its deadline: the node may have acted, so the task fails ``command_outcome_unknown``
    for an operator instead of a retry (a new cmd_id the node would execute a second time; it did, before)."""
    run = kill_run
    summary = run.summary()
    twice = {r: sorted(ids) for r, ids in run.actuated_roots().items() if len(ids) > 1}
    assert not twice, f"task roots the node actuated under two cmd_ids: {twice}; {summary}"
    for cid in run.running_at_kill():
        row = run.final[cid]
        assert (row["status"], row["reason_code"]) in {("completed", "lighting_done"),
                                                       ("failed", "task_recovered_after_restart"),
                                                       ("failed", "command_outcome_unknown")}, (row, summary)
        if row["reason_code"] == "command_outcome_unknown":
            assert row["decision"] == "fail", (row, summary)


@pytest.mark.slow
def test_running_tasks_left_by_a_dead_process_are_resumed_or_failed_after_restart(server: Server,
                                                                                  loop: LoopThread) -> None:
    """Six tasks accepted far ahead of their due time; the server is killed and, in its database, three are made
    ``running`` and alive (as if claimed by the dead process before it sent anything) and three ``running`` and
    expired. After the restart: the alive ones are resumed and complete (their command sent once), the expired ones
    are failed ``task_recovered_after_restart`` without a command, and the recoveries are counted."""
    zone = LightZone(loop, server.base_url, server.mqtt_port, "zn-recover")
    zone.start()
    try:
        posted = [post_task(server.base_url, zone.zone_uid, "lighting",
                            {"state": "on", "mode": "pwm", "pwm_level": 20 + i}, due_in=3600.0, expires_in=7200.0)
                  for i in range(6)]
        alive, dead = [t["id"] for t in posted[:3]], [t["id"] for t in posted[3:]]
        server.kill9()
        dsn = db_dsn(server.data_dir)
        now = dt.datetime.now(dt.UTC)
        asyncio.run(fetch(dsn, "UPDATE tasks SET status = 'running', due_at = $2, started_at = $2 "
                               "WHERE id = ANY($1::text[])", alive, now - dt.timedelta(seconds=5)))
        asyncio.run(fetch(dsn, "UPDATE tasks SET status = 'running', due_at = $2, started_at = $3, expires_at = $4 "
                               "WHERE id = ANY($1::text[])", dead, now - dt.timedelta(seconds=60),
                          now - dt.timedelta(seconds=50), now - dt.timedelta(seconds=10)))
        restart_s = spawn_ready(server)
        final = {r["id"]: r for r in all_terminal(dsn, zone.zone_uid, timeout=30)}
        commands = commands_of(dsn, zone.zone_uid)
        recoveries = once_counted(lambda: metric(server.base_url, "hydrovisor_task_recoveries_total"),
                                  {'{outcome="resumed"}': 3.0, '{outcome="failed"}': 3.0})
        summary = (f"final {[(r['status'], r['reason_code']) for r in final.values()]}; commands {commands}; "
                   f"executed {dict(zone.executed)}; recoveries {recoveries}; restart {restart_s:.1f} s")
        print(summary)
        assert len(final) == 6, summary  # no retry: every resumed task found its node online
        for task_id in alive:
            row = final[task_id]
            assert (row["status"], row["reason_code"]) == ("completed", "lighting_done"), (row, summary)
            assert zone.executed[row["cmd_id"]] == 1 and zone.delivered[row["cmd_id"]] == 1, (row, summary)
        for task_id in dead:
            row = final[task_id]
            assert (row["status"], row["reason_code"]) == ("failed", "task_recovered_after_restart"), (row, summary)
            assert row["cmd_id"] is None and "after a restart" in row["message"], (row, summary)
        assert sorted(c["trace_id"] for c in commands) == sorted(final[i]["correlation_id"] for i in alive), summary
        assert recoveries == {'{outcome="resumed"}': 3.0, '{outcome="failed"}': 3.0}, summary
    except BaseException:
        print(tail(server))
        raise
    finally:
        zone.stop()


# -- two instances on one database -------------------------------------------------------------------------


def leader_gauge(instance: Running) -> float:
    return metric(instance.base_url, "hydrovisor_scheduler_leader")[""]


def terminals(instance: Running) -> float:
    """Tasks this instance's scheduler finalised (its own registry)."""
    return sum(metric(instance.base_url, "hydrovisor_tasks_terminal_total").values())


def once_counted(read: Callable[[], Any], expected: Any) -> Any:
    """``read()`` once it equals ``expected``, or whatever it is after 5 s: a counter moves just after the stored
    outcome a test waited for."""
    with contextlib.suppress(AssertionError):
        wait_until(lambda: read() == expected, timeout=5, interval=0.05)
    return read()


def the_leader(instances: list[Running], timeout: float = 10.0) -> tuple[Running, Running]:
    """(leader, follower) once exactly one gauge is 1 and the other 0."""
    def one() -> tuple[Running, Running] | None:
        gauges = [leader_gauge(i) for i in instances]
        if sorted(gauges) != [0.0, 1.0]:
            return None
        return (instances[0], instances[1]) if gauges[0] == 1.0 else (instances[1], instances[0])
    found: tuple[Running, Running] = wait_until(one, timeout=timeout, interval=0.05, what="exactly one leader")
    return found


def post_ventilation(instance: Running, zone_uid: str, count: int, due_in: float) -> list[str]:
    """``count`` ventilation tasks (no zone has a fan role: each ends failed ``no_device_for_task`` at once, an
    execution with no node needed, so it shows which instance ran it); their ids."""
    return [post_task(instance.base_url, zone_uid, "ventilation", {"state": "on"}, due_in=due_in,
                      expires_in=120.0)["id"] for _ in range(count)]


def executions(dsn: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per task: its status, reason and how many times it was claimed (``running`` events of its timeline)."""
    rows = asyncio.run(fetch(dsn, "SELECT t.id, t.status, t.reason_code, (SELECT count(*) FROM task_events e "
                                  "WHERE e.task_id = t.id AND e.type = 'running') AS claims FROM tasks t "
                                  "WHERE t.id = ANY($1::text[])", ids))
    return {r["id"]: r for r in rows}


def executed_once(dsn: str, ids: list[str], timeout: float = 15.0) -> dict[str, dict[str, Any]]:
    def done() -> dict[str, dict[str, Any]] | None:
        found = executions(dsn, ids)
        return found if len(found) == len(ids) and all(r["status"] in TERMINAL for r in found.values()) else None
    found: dict[str, dict[str, Any]] = wait_until(done, timeout=timeout, interval=0.1, what="the tasks terminal")
    wrong = {i: r for i, r in found.items() if (r["status"], r["reason_code"], r["claims"]) !=
             ("failed", "no_device_for_task", 1)}
    assert not wrong, f"not executed exactly once: {wrong}"
    return found


@pytest.mark.slow
def test_two_instances_on_one_database_dispatch_through_one_leader_and_the_other_takes_over(
        start_app: Callable[..., Running], pg_dsn: str) -> None:
    instances = [start_app(), start_app()]
    leader, follower = the_leader(instances)
    http("POST", leader.base_url + "/api/v1/greenhouses", body={"uid": "gh-2i", "name": "gh-2i"})
    reply = http("POST", leader.base_url + "/api/v1/zones", body={"greenhouse_uid": "gh-2i", "uid": "zn-2i",
                                                                   "name": "zn-2i", "settings": {}})
    assert reply.status == 201, reply.raw

    # posted to either instance, executed exactly once, by the leader
    first = post_ventilation(leader, "zn-2i", 10, 0.3) + post_ventilation(follower, "zn-2i", 10, 0.3)
    executed_once(pg_dsn, first)
    assert (once_counted(lambda: terminals(leader), 20.0), terminals(follower)) == (20.0, 0.0)
    assert (leader_gauge(leader), leader_gauge(follower)) == (1.0, 0.0)

    # the leader's lock session killed from the server: leadership lost at once, then exactly one leader again
    # (either instance: the old leader contends again at once, the other every retry_s)
    lock_pids = asyncio.run(fetch(pg_dsn, "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                                          "WHERE l.locktype = 'advisory' AND l.granted "
                                          "AND a.application_name = 'hydrovisor-leader'"))
    assert len(lock_pids) == 1, lock_pids
    lost_before = metric(leader.base_url, "hydrovisor_scheduler_leadership_changes_total")['{change="lost"}']
    killed = time.monotonic()
    asyncio.run(fetch(pg_dsn, "SELECT pg_terminate_backend($1)", lock_pids[0]["pid"]))
    wait_until(lambda: metric(leader.base_url, "hydrovisor_scheduler_leadership_changes_total")['{change="lost"}']
               > lost_before, timeout=5, interval=0.05, what="the leader noticing its lock session gone")
    lost_s = time.monotonic() - killed
    old_leader = leader
    leader, follower = the_leader(instances)
    print(f"lock session killed: loss noticed within {lost_s:.2f} s, leader again after "
          f"{time.monotonic() - killed:.2f} s ({'the same' if leader is old_leader else 'the other'} instance)")
    second = post_ventilation(follower, "zn-2i", 10, 0.3)
    executed_once(pg_dsn, second)

    # the leader stopped with work pending: the other takes over within a few seconds and runs the rest once
    before = terminals(follower)
    pending = post_ventilation(follower, "zn-2i", 10, 1.5) + post_ventilation(leader, "zn-2i", 10, 1.5)
    stopped = time.monotonic()
    leader.loop.run(leader.app.stop())
    wait_until(lambda: leader_gauge(follower) == 1.0, timeout=10, interval=0.05, what="the follower taking over")
    takeover_s = time.monotonic() - stopped
    executed_once(pg_dsn, pending)
    once_counted(lambda: terminals(follower), before + len(pending))
    print(f"takeover after the leader stopped: {takeover_s:.2f} s; the new leader finalised "
          f"{terminals(follower) - before:.0f} of {len(pending)} pending tasks")
    assert terminals(follower) - before == len(pending)
    assert takeover_s < 5.0
