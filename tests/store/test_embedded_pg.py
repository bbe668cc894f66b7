"""EmbeddedPostgres: start, DSN, stop without leftovers, adoption after a crash, stale pidfiles."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg
import psutil
import pytest

from hydrovisor.store.embedded_pg import EmbeddedPostgres
from hydrovisor.store.errors import EmbeddedPostgresError


async def _select_one(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        value: int = await conn.fetchval("SELECT 1")
        return value
    finally:
        await conn.close()


def _family(pid: int) -> list[psutil.Process]:
    postmaster = psutil.Process(pid)
    return [postmaster, *postmaster.children(recursive=True)]


def _alive(proc: psutil.Process) -> bool:
    # A reaped-later zombie is not a server: the container's init may take seconds to reap it.
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _servers_of(pgdata: Path) -> list[psutil.Process]:
    return [
        p for p in psutil.process_iter(["name", "cmdline"])
        if p.info["name"] == "postgres" and str(pgdata.resolve()) in (p.info["cmdline"] or []) and _alive(p)
    ]


def test_dsn_is_a_unix_socket_uri_asyncpg_accepts(pg_server: EmbeddedPostgres) -> None:
    dsn = pg_server.dsn
    assert dsn.startswith("postgresql://postgres@/postgres?host=")
    assert asyncio.run(_select_one(dsn)) == 1
    assert pg_server.start() == dsn  # idempotent


def test_pid_is_the_postmaster_of_its_pgdata(pg_server: EmbeddedPostgres) -> None:
    assert pg_server.pid is not None
    assert [p.pid for p in _servers_of(pg_server.pgdata)] == [pg_server.pid]


def test_dsn_before_start_raises_with_code(data_dir: Path) -> None:
    with pytest.raises(EmbeddedPostgresError) as info:
        _ = EmbeddedPostgres(data_dir).dsn
    assert info.value.code == "embedded_pg_not_running"


def test_stop_leaves_no_postgres_process(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir)
    server.start()
    assert server.pid is not None
    family = _family(server.pid)
    assert len(family) > 1  # postmaster plus its auxiliary processes

    server.stop()

    assert not [p for p in family if _alive(p)]
    assert _servers_of(server.pgdata) == []
    assert server.pid is None
    assert not (server.pgdata / "postmaster.pid").exists()
    server.stop()  # idempotent


def test_restart_after_stop_serves_the_same_data(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir)
    asyncio.run(_create_marker(server.start()))
    server.stop()
    try:
        assert asyncio.run(_read_marker(server.start())) == "kept"
    finally:
        server.stop()


async def _create_marker(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE marker(v text); INSERT INTO marker VALUES ('kept')")
    finally:
        await conn.close()


async def _read_marker(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        value: str = await conn.fetchval("SELECT v FROM marker")
        return value
    finally:
        await conn.close()


_CRASHING_OWNER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from hydrovisor.store.embedded_pg import EmbeddedPostgres
    server = EmbeddedPostgres(Path(sys.argv[1]))
    server.start()
    print(server.pid, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_start_adopts_the_postmaster_of_a_killed_owner(data_dir: Path) -> None:
    owner = subprocess.run(
        [sys.executable, "-c", _CRASHING_OWNER, str(data_dir)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert owner.returncode == -signal.SIGKILL, owner.stderr
    orphan = psutil.Process(int(owner.stdout.split()[0]))
    assert _alive(orphan)

    server = EmbeddedPostgres(data_dir)
    try:
        dsn = server.start()
        assert server.pid == orphan.pid
        assert asyncio.run(_select_one(dsn)) == 1
    finally:
        server.stop()
    assert not _alive(orphan)


def test_start_ignores_a_pidfile_whose_pid_was_reused(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir)
    server.start()
    pidfile = server.pgdata / "postmaster.pid"
    lines = pidfile.read_text().split("\n")
    server.stop()
    # As after a container restart: the recorded pid now belongs to an unrelated live process.
    pidfile.write_text("\n".join([str(os.getpid()), *lines[1:]]))

    try:
        assert asyncio.run(_select_one(server.start())) == 1
        assert server.pid not in (None, os.getpid())
    finally:
        server.stop()


def test_failed_start_raises_with_code_and_a_retry_really_starts(data_dir: Path) -> None:
    server = EmbeddedPostgres(data_dir)
    server.start()
    server.stop()
    conf = server.pgdata / "postgresql.conf"
    good = conf.read_text()
    conf.write_text(good + "\nthis is not a setting\n")

    with pytest.raises(EmbeddedPostgresError) as info:
        server.start()
    assert info.value.code == "embedded_pg_start_failed"
    assert server.pid is None

    conf.write_text(good)
    try:
        assert asyncio.run(_select_one(server.start())) == 1
    finally:
        server.stop()
