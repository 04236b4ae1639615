"""The unit everything downstream of a source works in: 80 ms frames of 16 kHz mono int16.

>>> FRAME_SAMPLES, SAMPLE_RATE, FRAME_S
(1280, 16000, 0.08)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.errors import AudioFormatError

if TYPE_CHECKING:
    import numpy as np

# Only the standard library here: install.sh checks a config (which names rates) before
# any package is installed.

SAMPLE_RATE = 16000
"""Samples per second of every stream after its source."""
FRAME_SAMPLES = 1280
"""80 ms at 16 kHz: the unit everything downstream works in."""
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
"""Seconds per frame (0.08)."""


def check_frame(frame: np.ndarray) -> None:
    """Refuse anything but one frame of 16 kHz mono 16-bit PCM."""
    if frame.dtype.name != "int16" or frame.shape != (FRAME_SAMPLES,):
        raise AudioFormatError(
            f"audio frame is {frame.dtype} with shape {frame.shape}; the engine needs "
            f"16 kHz mono 16-bit PCM in frames of {FRAME_SAMPLES} samples (80 ms)"
        )
