"""Audio in: sources of 80 ms frames of 16 kHz mono int16, the pre-roll ring buffer, WAV encoding
and the espeak-ng synthesizer used by the demo and tests."""

from edge import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "frames": ("SAMPLE_RATE", "FRAME_SAMPLES", "FRAME_S", "check_frame"),
    "sources": ("AudioSource", "FrameAssembler", "ArraySource", "PacedSource"),
    "capture": ("PyAudioSource",),
    "portaudio": ("DeviceInfo", "list_devices", "has_capture_device", "find_device"),
    "file": ("FileSource",),
    "ringbuffer": ("RingBuffer",),
    "wav": ("encode_wav",),
})
