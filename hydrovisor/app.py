"""Build, start and stop one hydrovisor instance on the current event loop.

Start order: infrastructure (PostgreSQL, migrations, broker) -> actor tree -> HTTP.
Stop order is the reverse, within ``shutdown_timeout``. A root escalation (the tree gave up)
ends the process with exit code 10; infrastructure that cannot start gives exit code 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector

from hydrovisor import exitcodes
from hydrovisor.actors.health_probe import HealthBoard
from hydrovisor.actors.telemetry_writer import WriterMetrics
from hydrovisor.broker import DeviceDirectory, EmbeddedBroker
from hydrovisor.broker.errors import BrokerUnavailable
from hydrovisor.broker.receipts import ReceiptBook
from hydrovisor.chaos.engine import ChaosEngine, ChaosTargets
from hydrovisor.commands.outage_stops import OutageStops
from hydrovisor.commands.plane import CommandPlane, publish_counter
from hydrovisor.commands.submit import CommandSubmitter
from hydrovisor.commands.waiters import CommandWaiters
from hydrovisor.config import Settings, exposure
from hydrovisor.devices.credentials import sync_binding
from hydrovisor.devices.ingest import TelemetryCounters
from hydrovisor.devices.loading import load_registry
from hydrovisor.devices.plane import DevicePlane
from hydrovisor.devices.registry import NodeRegistry, NodeView
from hydrovisor.devices.router import DeviceRouter
from hydrovisor.devices.telemetry_store import TelemetryStore
from hydrovisor.http.app import build_http_app
from hydrovisor.process.control import SystemControl
from hydrovisor.process.sd_notify import SdNotifier
from hydrovisor.runtime import gc_tuning
from hydrovisor.runtime.affinity import LoopAffinity
from hydrovisor.runtime.bridge import Bridge
from hydrovisor.runtime.loop_lag import LoopLagMonitor
from hydrovisor.runtime.timers import TimerService
from hydrovisor.scheduler.metrics import TaskMetrics
from hydrovisor.scheduler.plane import SchedulerPlane
from hydrovisor.services import Services
from hydrovisor.store.database import Database
from hydrovisor.store.embedded_pg import EmbeddedPostgres
from hydrovisor.store.errors import StoreError
from hydrovisor.store.migrations import apply_migrations
from hydrovisor.supervisors import ActorSystem, ExitReason, PoolCollector, SupervisionError, TreeCollector
from hydrovisor.tasks.executor import TaskExecutor
from hydrovisor.tasks.leadership import Leadership
from hydrovisor.tree import build_tree, root_flags
from hydrovisor.workflows.plane import WorkflowPlane
from hydrovisor.workflows.runtime import WorkflowRuntime
from hydrovisor.zoneplane.plane import ZonePlane
from hydrovisor.zoneplane.runtime import ZoneRuntime
from hydrovisor.zones.clock import clock_for_scale

log = logging.getLogger("hydrovisor.app")


class StartupError(Exception):
    """A component could not start; ``code`` names it, the process exits with code 2."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Hydrovisor:
    """One instance. ``await start()``, later ``await stop()``; or ``await serve()`` for both."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.services: Services | None = None
        self.http_port: int | None = None
        self._embedded: EmbeddedPostgres | None = None
        self._dsn = ""  # the database's DSN once the store started (the scheduler's leadership connects with it)
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._exit_code = exitcodes.OK
        self._router: DeviceRouter | None = None
        self._serving = False

    async def start(self) -> Services:
        """Bring everything up in order; on failure undo what started and raise StartupError."""
        began = time.monotonic()
        loop = asyncio.get_running_loop()
        settings = self.settings
        affinity = LoopAffinity(loop, debug=settings.debug_loop)
        timers = TimerService(loop, affinity)
        bridge = Bridge(loop, affinity)
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        db = Database()
        directory = DeviceDirectory()
        nodes_view = NodeRegistry()
        http_listener, mqtt_listener = self._listeners()
        broker = EmbeddedBroker(mqtt_listener.host, mqtt_listener.port, dev_mode=settings.dev_mode,
                                directory=directory, limits=settings.mqtt.limits(), registry=registry)
        system = ActorSystem(bridge=bridge, timers=timers, registry=registry, on_root_exit=self._root_exited,
                             pool=settings.actors.pool(settings.env))
        registry.register(TreeCollector(system))
        registry.register(PoolCollector(system.pool))
        clock = clock_for_scale(settings.time_scale)  # one clock: zones, time responses, command signatures
        zone_plane = ZonePlane(db=db, registry=nodes_view, clock=clock,
                               liveness_interval=settings.supervision.liveness_interval,
                               hang_timeout=settings.supervision.hang_timeout,
                               adopt=lambda uid, topology: services.workflows.adopt(uid, topology))  # noqa: PLW0108
        zones = ZoneRuntime(system, zone_plane, registry)

        def binding_changed(view: NodeView) -> None:
            sync_binding(directory, nodes_view, view)
            zones.reload_all()  # a node joined or left a zone: its channels' roles move with it

        plane = DevicePlane(db=db, registry=nodes_view, transport=broker, on_binding_changed=binding_changed,
                            on_liveness=zones.node_liveness, on_channels_changed=zones.reload, clock=clock)
        health = HealthBoard(registry)
        control = SystemControl(settings, loop=loop, registry=registry, system=system, health=health,
                                notifier=SdNotifier.from_env(), on_fatal=self._fatal,
                                related=lambda: services.chaos.active_ids())  # noqa: PLW0108 - bound later
        system.on_failure(control.child_failed)
        control.watch_pool(system.pool)  # stuck turns -> pool_turn_stuck incidents; dumps name each worker's actor
        telemetry_counters = TelemetryCounters(registry)
        commands_plane = CommandPlane(db=db, registry=nodes_view, transport=broker, waiters=CommandWaiters(loop),
                                      publishes=publish_counter(registry), clock=clock)
        commands_plane.on_stored(zones.command_stored)
        receipts = ReceiptBook()
        router = DeviceRouter(plane, system, registry, telemetry=telemetry_counters, commands=commands_plane,
                              receipts=receipts, zones=zones)
        chaos = ChaosEngine(ChaosTargets(
            system=system, kick_broker=broker.kick, end_kick=broker.end_kick, silence_node=router.silence,
            node_exists=lambda uid: nodes_view.get(uid) is not None,
            db_outage=self._db_outage if settings.database.url is None else None), control.incidents)
        submitter = CommandSubmitter(db=db, control=control, zones=zones, plane=commands_plane, system=system,
                                     outage_stops=OutageStops(commands_plane, registry))
        workflows = WorkflowRuntime(system, WorkflowPlane(
            db=db, clock=clock, submitter=submitter, last_heard=nodes_view.last_seen,
            hang_timeout=settings.supervision.hang_timeout), zones,
            timezone=settings.timezone)
        services = Services(
            settings=settings, registry=registry, bridge=bridge, system=system, db=db, broker=broker,
            directory=directory, health=health,
            loop_lag=LoopLagMonitor(loop, settings.loop_lag_interval, registry), devices=plane,
            telemetry=telemetry_counters, writer_metrics=WriterMetrics(registry), commands=commands_plane,
            control=control, chaos=chaos, receipts=receipts, zone_plane=zone_plane, zones=zones,
            submitter=submitter, workflows=workflows,
            telemetry_store=TelemetryStore(lambda: db.pool, receipts, telemetry_counters),
            scheduler=SchedulerPlane(
                db=db, leadership=Leadership(lambda: self._dsn, registry),
                executor=TaskExecutor(db=db, zones=zones, workflows=workflows, submitter=submitter),
                metrics=TaskMetrics.register(registry), timezone=settings.timezone))
        self.services = services
        self._router = router
        broker.on_message = router.on_message
        try:
            services.loop_lag.start()
            await self._start_store(db)
            await load_registry(db, nodes_view, directory, plane.boot_rows)
            await self._start_broker(broker)
            self._router.start()
            await self._start_tree(services)
            await services.scheduler.leadership.start()  # contends for the dispatch lock in the background
            control.start()  # the tree is up: from now on a failing check is a real error
            await self._start_http(services, http_listener)
        except BaseException:
            await self.stop()
            raise
        control.notifier.ready(f"{control.state.value}: http {self.http_port}, mqtt {broker.port}")
        log.info("hydrovisor ready: http %s:%s (%s), mqtt %s:%s (%s)", http_listener.host, self.http_port,
                 exposure.http_access(settings), mqtt_listener.host, broker.port,
                 "anonymous devices admitted (dev mode)" if settings.dev_mode else "device credentials required",
                 extra={
            "event": "ready", "http_port": self.http_port, "mqtt_port": broker.port,
            "http_host": http_listener.host, "mqtt_host": mqtt_listener.host,
            "http_access": exposure.http_access(settings),
            "startup_ms": round((time.monotonic() - began) * 1000),
            "database": "external" if settings.database.url else "embedded",
        })
        return services

    def _listeners(self) -> tuple[exposure.Listener, exposure.Listener]:
        """Where HTTP and MQTT bind; settings built without the loader are checked here too."""
        problem = exposure.problem(self.settings)
        if problem is not None:
            raise StartupError("config_invalid", problem)
        listeners = exposure.listeners(self.settings)
        for listener in listeners:
            if listener.exposed:  # allowed by the opt-in; it must not go unnoticed
                log.warning("%s listens on %s without credentials (%s): anyone who reaches it is admitted "
                            "(%s=1)", listener.name.upper(), listener.host, listener.open_because,
                            exposure.OPT_IN_VARIABLE, extra={
                                "event": "listener_exposed", "listener": listener.name, "host": listener.host})
        return listeners

    async def _start_store(self, db: Database) -> None:
        dsn = self.settings.database.url
        try:
            if dsn is None:
                self._embedded = EmbeddedPostgres(Path(self.settings.data_dir))
                dsn = await asyncio.to_thread(self._embedded.start)
            self._dsn = dsn
            cfg = self.settings.database
            await db.connect(dsn, min_size=cfg.pool_min, max_size=cfg.pool_max,
                             connect_timeout=cfg.connect_timeout)
            applied = await apply_migrations(db.pool)
        except StoreError as exc:
            raise StartupError(exc.code, str(exc)) from exc
        log.info("schema up to date", extra={"event": "migrations", "applied": applied})

    async def _start_broker(self, broker: EmbeddedBroker) -> None:
        try:
            await broker.start()
        except (BrokerUnavailable, OSError) as exc:
            raise StartupError("broker_start_failed", f"MQTT broker failed to start: {exc}") from exc

    async def _start_tree(self, services: Services) -> None:
        async def db_check() -> None:
            await services.db.ping(timeout=2.0)

        async def broker_check() -> None:
            if not services.broker.is_running:
                raise BrokerUnavailable("broker is not running")

        children = build_tree(self.settings, services, db_check=db_check, broker_check=broker_check)
        try:
            # start() blocks until every child's on_start ran; those may need the loop
            await asyncio.to_thread(services.system.start, root_flags(self.settings), children)
        except SupervisionError as exc:
            raise StartupError(exc.code, str(exc)) from exc

    async def _start_http(self, services: Services, listener: exposure.Listener) -> None:
        app = build_http_app(services)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, listener.host, listener.port)
        try:
            await site.start()
        except OSError as exc:
            raise StartupError("http_start_failed", f"HTTP server failed to start: {exc}") from exc
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else self.settings.http.port

    async def stop(self) -> None:
        """Stop in reverse order; safe to call after a partial start and more than once."""
        services = self.services
        if services is not None:
            services.control.stopping()
            await services.chaos.stop()  # every fault restores what it broke before the rest stops
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        if services is not None:
            # ingress first, so that the tree (the telemetry writer flushes) drains what was accepted
            await services.broker.stop()
            if self._router is not None:
                await self._router.stop()
            await services.scheduler.leadership.stop()  # another instance may dispatch from now on
            await services.workflows.stop()
            await asyncio.to_thread(services.system.stop, self.settings.shutdown_timeout)
            await services.db.close()
            services.loop_lag.stop()
            services.control.stop()
        if self._embedded is not None:
            embedded, self._embedded = self._embedded, None
            await asyncio.to_thread(embedded.stop)

    def _root_exited(self, reason: ExitReason) -> None:
        """Called from the root supervisor's thread when the whole tree gave up."""
        if not reason.abnormal:
            return
        log.critical("supervision tree escalated to the root: %s", reason,
                     extra={"event": "fatal", "reason": str(reason)})
        services = self.services
        if services is not None:
            services.control.report_fatal(f"supervision tree escalated to the root: {reason}", "root_supervisor")

    def _fatal(self) -> None:
        """FATAL (from any thread): stop gracefully with exit code 10; when :meth:`serve` owns the process,
        the loop guard exits hard if the loop cannot (an embedding host decides for itself)."""
        services = self.services
        if services is None:
            return
        if self._serving:
            services.control.guard.arm_fatal_exit(grace=self.settings.system.fatal_exit_grace,
                                                  deadline=self.settings.shutdown_timeout + 10)
        with contextlib.suppress(RuntimeError):  # the loop is closed: the process is exiting anyway
            services.bridge.loop.call_soon_threadsafe(self.request_exit, exitcodes.CRITICAL)

    async def _db_outage(self, duration: float) -> None:
        """Chaos: the embedded PostgreSQL is really gone for ``duration`` s, then back."""
        embedded = self._embedded
        if embedded is None:
            raise RuntimeError("the embedded PostgreSQL is not running")
        log.critical("embedded PostgreSQL stopped for %.1fs (chaos db_outage)", duration,
                     extra={"event": "chaos_db_down", "duration": duration})
        await asyncio.to_thread(embedded.stop)
        try:
            await asyncio.sleep(duration)
        finally:
            if self._embedded is embedded:  # not while the instance is shutting down
                await asyncio.to_thread(embedded.start)
                log.warning("embedded PostgreSQL started again (chaos db_outage over)",
                            extra={"event": "chaos_db_up"})

    def request_exit(self, code: int) -> None:
        """Ask :meth:`serve` to shut down and return ``code`` (call on the loop)."""
        self._exit_code = max(self._exit_code, code)
        self._stopping.set()

    async def serve(self) -> int:
        """Run until SIGTERM/SIGINT or a fatal escalation; returns the process exit code."""
        loop = asyncio.get_running_loop()
        self._serving = True
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_exit, exitcodes.OK)
        # the process owns the collector (not start(): tests run many apps in one interpreter): a
        # full collection over 100,000 long-lived actors pauses every thread for ~1 s unfrozen
        gc_tuning.install()
        try:
            await self.start()
        except StartupError as exc:
            log.error("startup failed: %s", exc, extra={"event": "startup_failed", "code": exc.code})
            return exitcodes.RECOVERABLE
        frozen = gc_tuning.freeze()  # the boot's actors (every node, zone, pending command) live long
        log.info("heap frozen after boot in %.1f ms", frozen.pause_s * 1e3,
                 extra={"event": "gc_frozen", "collected": frozen.collected})
        await self._stopping.wait()
        log.info("shutting down", extra={"event": "stopping", "exit_code": self._exit_code})
        try:
            await asyncio.wait_for(self.stop(), self.settings.shutdown_timeout + 5)
        except TimeoutError:
            log.error("shutdown exceeded its deadline", extra={"event": "shutdown_timeout"})
            if self._embedded is not None:
                await asyncio.to_thread(self._embedded.stop)
            return max(self._exit_code, exitcodes.RECOVERABLE)
        log.info("stopped", extra={"event": "stopped", "exit_code": self._exit_code})
        return self._exit_code
