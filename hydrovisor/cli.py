"""``hydrovisor run | tree | config``."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from hydrovisor import exitcodes
from hydrovisor.config import ConfigError, Settings, load_settings, public_view
from hydrovisor.logs import configure_logging


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return load_settings(args.config)
    except ConfigError as exc:
        print(f"hydrovisor: configuration error: {exc}", file=sys.stderr)
        raise SystemExit(exitcodes.CONFIG) from None


def cmd_run(args: argparse.Namespace) -> int:
    """Run the control plane until SIGTERM/SIGINT."""
    settings = _settings(args)
    configure_logging(settings.log_format, settings.log_level)
    from hydrovisor.app import Hydrovisor  # noqa: PLC0415 - keep `hydrovisor config` light

    return asyncio.run(Hydrovisor(settings).serve())


def cmd_config(args: argparse.Namespace) -> int:
    """Print the effective settings (secrets masked) and exit."""
    print(json.dumps(public_view(_settings(args)), indent=2, default=str))
    return exitcodes.OK


def _render(node: dict[str, Any], prefix: str = "", last: bool = True, top: bool = True) -> list[str]:
    failure = node.get("last_failure")
    bits = [node["state"], f"restarts={node['restarts_total']}", f"mailbox={node['mailbox_depth']}"]
    if node.get("strategy"):
        cap = node.get("max_children")
        bits.insert(0, f"dynamic max={cap}" if cap else str(node["strategy"]))
    if failure:
        bits.append(f"last_failure={failure['reason']!r}")
    label = node["path"] if top else node["id"]
    line = f"{prefix}{'' if top else ('└── ' if last else '├── ')}{label}  [{node['kind']}] " + " ".join(bits)
    lines = [line]
    children = node.get("children", [])
    child_prefix = prefix if top else prefix + ("    " if last else "│   ")
    for i, child in enumerate(children):
        lines += _render(child, child_prefix, i == len(children) - 1, top=False)
    return lines


def cmd_tree(args: argparse.Namespace) -> int:
    """Print the live actor tree of a running instance."""
    url = args.url.rstrip("/") + "/api/v1/actors" + (f"/{args.path.strip('/')}" if args.path else "")
    request = urllib.request.Request(url)
    token = args.token or os.environ.get("HYDROVISOR_ADMIN_TOKEN") or os.environ.get("HYDROVISOR_API_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.load(response)
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        print(f"hydrovisor tree: {url} answered {exc.code}: {detail}", file=sys.stderr)
        return exitcodes.RECOVERABLE
    except (urllib.error.URLError, OSError) as exc:
        print(f"hydrovisor tree: cannot reach {url}: {exc}", file=sys.stderr)
        return exitcodes.RECOVERABLE
    if args.json:
        print(json.dumps(body["data"], indent=2))
    else:
        print("\n".join(_render(body["data"])))
    return exitcodes.OK


def cmd_sim(args: argparse.Namespace) -> int:
    """Run simulated ESP32 nodes against a broker until Ctrl-C or --duration."""
    from hydrovisor.sim.runner import run as run_sim  # noqa: PLC0415 - amqtt only when simulating

    return run_sim(args)


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="hydrovisor", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the control plane (embedded PostgreSQL + broker by default)")
    run.add_argument("--config", type=Path, help="TOML settings file (default: $HYDROVISOR_CONFIG)")
    run.set_defaults(func=cmd_run)
    config = sub.add_parser("config", help="print the effective settings, secrets masked")
    config.add_argument("--config", type=Path)
    config.set_defaults(func=cmd_config)
    tree = sub.add_parser("tree", help="print the live actor tree of a running instance")
    tree.add_argument("path", nargs="?", help="subtree path, e.g. /store")
    tree.add_argument("--url", default="http://127.0.0.1:8080", help="base URL of the instance")
    tree.add_argument("--token", help="bearer token (default: $HYDROVISOR_ADMIN_TOKEN or _API_TOKEN)")
    tree.add_argument("--json", action="store_true", help="raw JSON instead of the drawing")
    tree.set_defaults(func=cmd_tree)
    sim = sub.add_parser("sim", help="simulate ESP32 nodes (Protocol 2.0) against an MQTT broker")
    sim.add_argument("--nodes", type=int, default=50, help="number of nodes (default 50)")
    sim.add_argument("--broker", default="mqtt://127.0.0.1:1883", help="broker URL (mqtt:// or mqtts://)")
    sim.add_argument("--types", default="ph,ec,irrig,climate,light,water_sensor",
                     help="comma-separated node types, assigned round-robin")
    sim.add_argument("--telemetry-interval", type=float, default=5.0, help="sensor poll interval, seconds")
    sim.add_argument("--heartbeat-interval", type=float, default=15.0, help="heartbeat interval, seconds")
    sim.add_argument("--keep-alive", type=int, default=30, help="MQTT keep-alive, seconds")
    sim.add_argument("--username", help="MQTT username ({hardware_id} is replaced per node); none by default")
    sim.add_argument("--password", help="MQTT password")
    sim.add_argument("--duration", type=float, help="stop after this many seconds (default: until Ctrl-C)")
    sim.add_argument("--status-every", type=float, default=5.0, help="status line interval, seconds")
    sim.add_argument("--seed", type=int, default=0, help="seed for hardware ids, physics and faults")
    sim.add_argument("--concurrency", type=int, default=64, help="CONNECTs in flight at most")
    sim.add_argument("--trust-local-clock", action="store_true",
                     help="do not wait for a time response before sending telemetry (no server answering)")
    sim.set_defaults(func=cmd_sim)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Console entry point; the exit code is the process's."""
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))
