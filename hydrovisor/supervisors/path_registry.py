"""The path registry: every live stable path (``/zones/zn-7``) and its :class:`Cell`.

A path is registered when its supervisor first starts it and unregistered when it stops for good;
its cell (and mailbox) outlive the incarnations in between.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from hydrovisor.supervisors.cell import Cell
from hydrovisor.supervisors.errors import NoSuchActor, StartFailed

if TYPE_CHECKING:
    from hydrovisor.supervisors.context import ActorContext
    from hydrovisor.supervisors.spec import ChildSpec

ROOT = "/"


class PathRegistry:
    """Paths → cells. Writes take a lock; a single lookup does not (a dict read is atomic)."""

    def __init__(self) -> None:
        self._cells: dict[str, Cell] = {}
        self._lock = threading.Lock()

    def register(self, path: str, spec: ChildSpec, *, owner: ActorContext | None = None) -> Cell:
        """Create the cell of a new path for the supervisor incarnation ``owner``.

        An abandoned owner may register nothing: its replacement owns the paths now. (It is
        abandoned before the replacement exists, so it can never overwrite the replacement's cells.)
        """
        with self._lock:
            if owner is not None and owner.abandoned.is_set():
                raise StartFailed(path, f"its supervisor {owner.path} was abandoned")
            cell = Cell(path, spec)
            self._cells[path] = cell
            return cell

    def unregister(self, path: str, cell: Cell | None = None) -> bool:
        """Forget a path that stopped for good; with ``cell``, only while ``path`` is still that cell
        (an abandoned supervisor must not unregister its replacement's child). True if removed."""
        with self._lock:
            if cell is not None and self._cells.get(path) is not cell:
                return False
            return self._cells.pop(path, None) is not None

    def get(self, path: str) -> Cell | None:
        """The cell at ``path``, or None."""
        return self._cells.get(path)

    def cell(self, path: str) -> Cell:
        """The cell at ``path``; raises :class:`NoSuchActor`."""
        cell = self._cells.get(path)
        if cell is None:
            raise NoSuchActor(path)
        return cell

    def paths(self) -> list[str]:
        """Every registered path, sorted."""
        with self._lock:
            return sorted(self._cells)
