"""Configuration: one TOML file, loaded into frozen dataclasses, one per subsystem.

A leaf: nothing here imports a subsystem (only ``edge.errors``). ``schema`` is the
shape, ``load`` builds the dataclasses from TOML (each key checked against its type,
range or choices), ``validate`` then checks the rules that join several keys, and
``rules`` holds the checks subsystems apply again at run time. Checks that need a
subsystem's knowledge (pins of a hardware profile, a public key's bytes) belong to that
subsystem and run at composition (``edge.compose.config``).
"""

from edge.config.load import build, load_config, replace
from edge.config.schema import (
    MANIFEST_WAKE_WORDS,
    ActivationsConfig,
    AssistConfig,
    AudioConfig,
    BrokerConnection,
    Config,
    HardwareConfig,
    HttpsUploadConfig,
    MqttConfig,
    MqttUploadConfig,
    OutputConfig,
    RecordConfig,
    SecurityConfig,
    SttConfig,
    UploadConfig,
    WakeConfig,
    WyomingConfig,
)
from edge.config.validate import validate

__all__ = [
    "MANIFEST_WAKE_WORDS", "ActivationsConfig", "AssistConfig", "AudioConfig", "BrokerConnection",
    "Config", "HardwareConfig", "HttpsUploadConfig", "MqttConfig", "MqttUploadConfig",
    "OutputConfig", "RecordConfig", "SecurityConfig", "SttConfig", "UploadConfig", "WakeConfig",
    "WyomingConfig", "build", "load_config", "replace", "validate",
]
