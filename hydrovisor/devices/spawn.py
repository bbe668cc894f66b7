"""Child specs of node actors and starting them on demand."""

from __future__ import annotations

from hydrovisor.actors.node import NodeActor
from hydrovisor.devices.plane import DevicePlane
from hydrovisor.supervisors import ActorSystem, ChildSpec, DuplicateChild, Execution, Restart, StartChild

NODES = "/nodes"


def node_path(uid: str) -> str:
    """Stable path of a node's actor."""
    return f"{NODES}/{uid}"


def node_spec(uid: str, plane: DevicePlane) -> ChildSpec:
    """A node actor: permanent (it is the node's state), rebuilt from its row on restart; pooled (it
    never blocks: thousands of nodes share the worker pool's threads)."""
    return ChildSpec(uid, lambda ctx: NodeActor.start(ctx, uid=uid, plane=plane), restart=Restart.PERMANENT,
                     execution=Execution.POOL)


def registered_nodes(plane: DevicePlane) -> list[ChildSpec]:
    """Specs of every node in the registry view (the ``/nodes`` supervisor starts them all)."""
    return [node_spec(uid, plane) for uid in plane.registry.uids()]


async def ensure_node_actor(system: ActorSystem, plane: DevicePlane, uid: str) -> None:
    """Start ``/nodes/<uid>`` unless it runs already (call on the loop)."""
    try:
        await system.bridge.ask(NODES, StartChild(node_spec(uid, plane)), within=15.0)
    except DuplicateChild:
        return
