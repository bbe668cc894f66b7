"""What zone actors need from the rest of the process: storage, the node view, the clock."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg

from hydrovisor.devices.registry import NodeRegistry
from hydrovisor.store.database import Database
from hydrovisor.zones.clock import Clock

# a database call, given the pool on the loop (actors never touch the pool themselves)
DbCall = Callable[[asyncpg.Pool], Coroutine[Any, Any, Any]]


@dataclass(frozen=True)
class ZonePlane:
    """Dependencies of zone actors, built once by the app."""

    db: Database
    registry: NodeRegistry
    clock: Clock
    liveness_interval: float = 1.0
    hang_timeout: float | None = 30.0
    # zone seconds before a zone retries its failed database writes (time-based detections need no polling:
    # the zone actor arms a timer for its state's next deadline, ZoneState.next_deadline)
    tick_interval: float = 1.0
    # (zone uid, topology): starts an actor for each running workflow of a zone without one, and its water
    # cycle if single-tank; a zone actor calls it after every load of its snapshot, so neither a process
    # restart nor a zone subtree restart leaves a workflow unattended, and a topology change takes effect
    adopt: Callable[[str, str], Coroutine[Any, Any, None]] | None = None
