"""The embedded MQTT broker the greenhouse nodes connect to: device auth, topic ACL, server plane."""

from hydrovisor.broker.directory import DeviceDirectory, DeviceIdentity, hash_password, new_secret
from hydrovisor.broker.embedded import EmbeddedBroker
from hydrovisor.broker.errors import BrokerError, BrokerNotRunning, BrokerStartFailed, BrokerUnavailable
from hydrovisor.broker.messages import DeviceMessage, MessageSink
from hydrovisor.broker.plugins import DeviceAclPlugin, DeviceAuthPlugin
from hydrovisor.broker.transport import Transport

__all__ = [
    "BrokerError",
    "BrokerNotRunning",
    "BrokerStartFailed",
    "BrokerUnavailable",
    "DeviceAclPlugin",
    "DeviceAuthPlugin",
    "DeviceDirectory",
    "DeviceIdentity",
    "DeviceMessage",
    "EmbeddedBroker",
    "MessageSink",
    "Transport",
    "hash_password",
    "new_secret",
]
