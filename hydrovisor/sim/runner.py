"""``hydrovisor sim``: run a fleet of simulated nodes against a broker until Ctrl-C or ``--duration``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import time
from typing import TextIO

from hydrovisor import exitcodes
from hydrovisor.sim.fleet import FleetStats, SimFleet
from hydrovisor.sim.options import NodeOptions
from hydrovisor.sim.profiles import ALL_SIM_NODE_TYPES
from hydrovisor.sim.transport import broker_uri, redact_uri

__all__ = ["parse_types", "run", "status_line"]


def parse_types(text: str) -> tuple[str, ...]:
    """``ph,ec,...`` → a tuple of node types; raises ``ValueError`` for unknown ones."""
    types = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [t for t in types if t not in ALL_SIM_NODE_TYPES]
    if not types or unknown:
        raise ValueError(f"node types must be a comma-separated subset of {','.join(ALL_SIM_NODE_TYPES)}")
    return types


def status_line(stats: FleetStats, elapsed_s: float, telemetry_rate: float) -> str:
    """One human-readable status line."""
    return (f"[sim {elapsed_s:6.0f}s] nodes {stats.connected}/{stats.nodes} connected, {stats.synced} synced, "
            f"{stats.bound} bound | telemetry {stats.telemetry_sent} ({telemetry_rate:.1f}/s) | "
            f"heartbeats {stats.heartbeats_sent} | commands {stats.commands_answered}/{stats.commands_received} "
            f"answered | connect failures {stats.connect_failures}")


def _fleet(args: argparse.Namespace) -> SimFleet:
    """The fleet the arguments describe; raises ``ValueError`` for invalid ones."""
    if args.nodes < 1:
        raise ValueError("--nodes must be at least 1")
    if args.status_every <= 0 or (args.duration is not None and args.duration <= 0):
        raise ValueError("--status-every and --duration must be positive")
    options = NodeOptions(
        telemetry_interval_s=args.telemetry_interval, heartbeat_interval_s=args.heartbeat_interval,
        keep_alive_s=args.keep_alive, trust_local_clock=args.trust_local_clock,
    )
    return SimFleet.create(args.broker, args.nodes, types=parse_types(args.types), username=args.username,
                           password=args.password, options=options, seed=args.seed,
                           start_concurrency=args.concurrency)


async def _main(args: argparse.Namespace, fleet: SimFleet, out: TextIO) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)
    started = time.monotonic()
    print(f"hydrovisor sim: {args.nodes} nodes ({args.types}) -> {redact_uri(broker_uri(args.broker, None, None))}",
          file=out, flush=True)
    await fleet.start(wait=False)
    deadline = started + args.duration if args.duration is not None else None
    last_sent, last_at = 0, started
    try:
        while not stop.is_set():
            wait = args.status_every
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            now = time.monotonic()
            stats = fleet.stats()
            rate = (stats.telemetry_sent - last_sent) / max(now - last_at, 1e-9)
            last_sent, last_at = stats.telemetry_sent, now
            print(status_line(stats, now - started, rate), file=out, flush=True)
            if deadline is not None and now >= deadline:
                break
    finally:
        await fleet.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
    print(f"hydrovisor sim: stopped; {status_line(fleet.stats(), time.monotonic() - started, 0.0)}",
          file=out, flush=True)
    return exitcodes.OK


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run the ``sim`` sub-command with parsed ``args``, status lines to ``out`` (stdout); returns the exit code."""
    try:
        fleet = _fleet(args)
    except ValueError as exc:
        print(f"hydrovisor sim: {exc}", file=sys.stderr)
        return exitcodes.CONFIG
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # amqtt warns on every dropped connection; with hundreds of nodes that drowns the status lines.
    logging.getLogger("amqtt").setLevel(logging.ERROR)
    return asyncio.run(_main(args, fleet, out if out is not None else sys.stdout))
