"""Errors raised by the broker package; each carries a machine ``code``, ``str(exc)`` is the message."""

from __future__ import annotations


class BrokerError(Exception):
    """Base class of every broker error."""

    code = "broker_error"


class BrokerUnavailable(BrokerError):
    """The broker cannot serve devices (health checks raise this too)."""

    code = "broker_unavailable"


class BrokerStartFailed(BrokerUnavailable):
    """amqtt failed to start, or the listener could not bind."""

    code = "broker_start_failed"


class BrokerNotRunning(BrokerUnavailable):
    """An operation that needs a running broker was called before ``start`` or after ``stop``."""

    code = "broker_not_running"
