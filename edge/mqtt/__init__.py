"""Field testing over MQTT: the device's topics, commands and Home Assistant discovery.

Importing this package imports no paho: the daemon pays for MQTT only when
``[mqtt] enabled = true``.
"""

from edge import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "device": ("MqttPlugin",),
    "topics": ("DeviceTopics", "BrokerSettings"),
    "client": ("MqttConnection",),
})
