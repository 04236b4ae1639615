"""Field testing over MQTT: the device's topics, commands and Home Assistant discovery.

Importing this package imports no paho: the daemon pays for MQTT only when
``[mqtt] enabled = true``.
"""
