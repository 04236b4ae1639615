"""One small exception hierarchy. Every message names the thing at fault and the fix."""


class EdgeError(Exception):
    """Base of every error edge-recorder reports to a person (no traceback is shown)."""

    exit_code = 2


class ConfigError(EdgeError):
    """A config file has an unknown key, a wrong type or an out-of-range value."""


class ModelError(EdgeError):
    """A model is missing, corrupt, or has the wrong shape."""


class AudioFormatError(EdgeError):
    """Audio has the wrong sample rate, width or channel count, or is not audio at all."""


class AudioDeviceError(EdgeError):
    """A capture device is missing, busy or gone."""


class HardwareError(EdgeError):
    """A GPIO pin, SPI bus or other hardware part cannot be used as configured."""


class UsageError(EdgeError):
    """A command line argument is wrong."""


class UploadError(EdgeError):
    """A clip could not be delivered (broker, receiver, network or TLS); it stays queued."""


class SealError(EdgeError):
    """A sealed clip cannot be opened: wrong private key, or not a sealed clip."""


class StateLockedError(EdgeError):
    """Another edge-recorder process is using the state directory."""


class PurgeError(EdgeError):
    """A purge cannot run now (the recorder is stopping)."""
