"""The observer's integration test runs a real instance and a simulated irrigation node: the fixtures of
``tests/app`` (``start_app``, ``instance``, ``node_factory``)."""

from tests.app.conftest import instance, node_factory, start_app

__all__ = ["instance", "node_factory", "start_app"]
