"""Fixtures of the scheduler tests that need a running instance: the workflow tests' instance and plant zones."""

from __future__ import annotations

from tests.app.conftest import Running, node_factory, process, start_app  # noqa: F401 - fixtures
from tests.workflows.conftest import plant_instance, plant_zone  # noqa: F401 - fixtures
