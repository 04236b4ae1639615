"""microWakeWord's audio front end: TFLite-Micro's feature generator (pymicro-features).

40 log-mel channels per 10 ms of audio (a 30 ms window), with noise reduction and
per-channel automatic gain: the same C code as on an ESP32 and in pymicro-wakeword.
It is a small compiled package with abi3 wheels for aarch64 and x86_64, imported
only when a micro model is configured.

>>> front = Frontend()
>>> front.rows(np.zeros(1280, np.int16)).shape
(6, 40)
"""

from __future__ import annotations

import numpy as np

from edge.errors import ModelError

CHUNK = 160
"""Samples per feature step (10 ms)."""
CHANNELS = 40


class Frontend:
    """Streaming features of int16 audio; one instance per stream."""

    def __init__(self) -> None:
        try:  # the package's compiled module: its MicroFrontend wrapper adds a dataclass a call
            from micro_features_cpp import create_frontend, process_samples, reset_frontend
        except ImportError as exc:
            raise ModelError("microWakeWord models need the pymicro-features package; "
                             "run `pip install pymicro-features`") from exc
        self._front = create_frontend()
        self._process, self._reset = process_samples, reset_frontend
        self._pending = b""

    def reset(self) -> None:
        self._reset(self._front)
        self._pending = b""

    def rows(self, samples: np.ndarray) -> np.ndarray:
        """The feature rows (n, 40) that ``samples`` completes, as pymicro-wakeword makes them."""
        buf = self._pending + samples.astype("<i2", copy=False).tobytes()
        out: list[list[float]] = []
        pos, step, size = 0, CHUNK * 2, len(buf)
        front, process = self._front, self._process
        while pos + step <= size:
            features, read = process(front, buf[pos:pos + step])
            if not read:
                break
            pos += read * 2
            if features:
                out.append(features)
        self._pending = buf[pos:]
        if not out:
            return np.zeros((0, CHANNELS), dtype=np.float64)
        return np.array(out, dtype=np.float64)
