"""The recorder pipeline: the clip, the events it publishes, the recorder state machine, and the
audio loop (runner) that owns it."""

from edge import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "clip": ("Clip",),
    "events": ("EventBus", "State", "StateChanged", "DetectionEvent", "RecordingStarted",
               "RecordingStopped", "ActivationEnded", "ClipReady", "ClipUploaded", "MuteChanged",
               "UnmuteRefused", "CancelPressed", "HardwareFault"),
    "recorder": ("Recorder", "RecorderStats"),
    "runner": ("Runner",),
    "daemon": ("Daemon",),
})
