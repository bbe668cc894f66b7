"""``/nodes`` starts every registered node from the registry view already in memory (loaded by one
query at process start): a node actor's ``on_start`` waits on neither the database nor the loop, so
restarting a large fleet fits in the supervisor's start timeout whatever the database does."""

from __future__ import annotations

import threading
import time

from sup_support import MakeSystem

from hydrovisor.devices.plane import DevicePlane
from hydrovisor.devices.registry import NodeRegistry, NodeView
from hydrovisor.devices.spawn import registered_nodes
from hydrovisor.runtime.loop_thread import LoopThread
from hydrovisor.store.database import Database
from hydrovisor.supervisors import ROOT, SupervisorFlags, supervisor_spec

NODES = 50
LOOP_BLOCKED_S = 2.0


def test_node_actors_start_without_waiting_for_the_database(
    make_system: MakeSystem, loop_thread: LoopThread
) -> None:
    registry = NodeRegistry()
    for n in range(NODES):
        registry.put(NodeView(uid=f"nd-{n}", hardware_id=f"hw-{n}", zone_uid=None, gh_uid=None, validated=False))
    # a database that is not even connected: a node that asked it at start would wait for the loop
    plane = DevicePlane(db=Database(), registry=registry, transport=None,  # type: ignore[arg-type]
                        on_binding_changed=lambda _view: None)
    system = make_system(start=False)
    released = threading.Event()
    loop_thread.loop.call_soon_threadsafe(released.wait, LOOP_BLOCKED_S)  # the loop is stuck meanwhile
    try:
        started = time.monotonic()
        system.start(SupervisorFlags(), [supervisor_spec(
            "nodes", SupervisorFlags(dynamic=True), lambda: registered_nodes(plane))])
        elapsed = time.monotonic() - started
    finally:
        released.set()
    assert elapsed < LOOP_BLOCKED_S / 2
    assert len(system.cell("/nodes").children) == NODES
    assert all(system.cell(path).state.value == "running" for path in system.cell("/nodes").children)
    assert system.cell(ROOT).state.value == "running"
