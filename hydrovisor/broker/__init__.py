"""The embedded MQTT broker the greenhouse nodes connect to, and its device authentication."""

from hydrovisor.broker.auth import DeviceAuthenticator, DeviceAuthPlugin
from hydrovisor.broker.embedded import EmbeddedBroker
from hydrovisor.broker.errors import BrokerError, BrokerNotRunning, BrokerStartFailed, BrokerUnavailable

__all__ = [
    "BrokerError",
    "BrokerNotRunning",
    "BrokerStartFailed",
    "BrokerUnavailable",
    "DeviceAuthPlugin",
    "DeviceAuthenticator",
    "EmbeddedBroker",
]
