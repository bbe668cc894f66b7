"""The observer judges the automation, so it must share no code with it: every import of
``hydrovisor/observer`` (read from the source, ``TYPE_CHECKING`` blocks and function bodies included) is the
standard library, msgspec, amqtt, the observer itself or the simulator's plant model; and importing the
package at run time loads no other hydrovisor module at all."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "hydrovisor" / "observer"
FORBIDDEN = ("hydrovisor.workflows", "hydrovisor.zones", "hydrovisor.actors", "hydrovisor.zoneplane",
             "hydrovisor.commands", "hydrovisor.http", "hydrovisor.app")
ALLOWED_HYDROVISOR = ("hydrovisor.observer", "hydrovisor.sim")
ALLOWED_THIRD_PARTY = frozenset({"msgspec", "amqtt"})


def imports_of(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """Every module ``source`` (the code of ``module``) imports, relative imports resolved."""
    found: list[str] = []
    package = module if is_package else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.append(target)
            # `from hydrovisor import zones` (or `from .. import zones`) imports hydrovisor.zones
            found.extend(f"{target}.{alias.name}" for alias in node.names if target == "hydrovisor")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
            name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                found.append(str(node.args[0].value))
    return found


def problems(source: str, module: str, *, is_package: bool = False) -> list[str]:
    """The imports of ``module`` that break the observer's independence."""
    bad: list[str] = []
    for name in imports_of(source, module, is_package=is_package):
        top = name.split(".")[0]
        if name.startswith(FORBIDDEN) or name in {"hydrovisor.zones", "hydrovisor.app"}:
            bad.append(f"{module}: imports {name} (automation code)")
        elif top == "hydrovisor":
            if name != "hydrovisor" and not name.startswith(ALLOWED_HYDROVISOR):
                bad.append(f"{module}: imports {name} (only hydrovisor.observer / hydrovisor.sim allowed)")
        elif top not in sys.stdlib_module_names and top not in ALLOWED_THIRD_PARTY:
            bad.append(f"{module}: imports {name} (not stdlib, msgspec or amqtt)")
    return bad


def modules() -> list[tuple[str, bool, str]]:
    """``(module name, is a package, source)`` of every file of the observer package."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parents[1]).with_suffix("").parts)
        is_package = path.name == "__init__.py"
        found.append((name.removesuffix(".__init__"), is_package, path.read_text(encoding="utf-8")))
    return found


def test_the_observer_imports_nothing_from_the_automation() -> None:
    found = modules()
    assert len(found) >= 5, found  # the walk really found the package
    bad = [problem for name, is_package, source in found
           for problem in problems(source, name, is_package=is_package)]
    assert bad == []


@pytest.mark.parametrize("line", [
    "from hydrovisor.zones.clock import Clock",
    "import hydrovisor.workflows.two_tank",
    "from hydrovisor import zones",
    "from hydrovisor.commands import submit",
    "import hydrovisor.http.routes as r",
    "from hydrovisor.app import Hydrovisor",
    "from hydrovisor.protocol import topics",
    "from ..zoneplane import plane",
    "from .. import actors",
    "import importlib; importlib.import_module('hydrovisor.actors.zone')",
    "import requests",
    "if TYPE_CHECKING:\n    from hydrovisor.zones.safety import can_run_pump",
    "def f():\n    from hydrovisor.zones import settings",
])
def test_the_check_catches_forbidden_imports(line: str) -> None:
    """The checker itself: a forbidden import in any form is reported (so the test above cannot pass by
    looking at nothing)."""
    assert problems(line, "hydrovisor.observer.rules") != []


def test_allowed_imports_pass_the_check() -> None:
    source = ("import asyncio\nimport msgspec\nfrom amqtt.client import MQTTClient\n"
              "from hydrovisor.sim.physics import WaterPhysics\nfrom . import wire\nfrom .model import Violation\n")
    assert problems(source, "hydrovisor.observer.rules") == []
    assert problems("from .model import Violation\nfrom . import wire\n", "hydrovisor.observer",
                    is_package=True) == []
    assert problems("from .. import zones\n", "hydrovisor.observer", is_package=True) != []


def test_importing_the_observer_loads_no_other_hydrovisor_module() -> None:
    code = ("import sys, hydrovisor.observer; "
            "print('\\n'.join(sorted(m for m in sys.modules if m.startswith('hydrovisor'))))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=PACKAGE.parents[1]).stdout.split()
    assert "hydrovisor.observer" in loaded
    assert [name for name in loaded if name != "hydrovisor" and not name.startswith("hydrovisor.observer")] == []
