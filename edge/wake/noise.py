"""Fixed pseudo-random inputs for the wake models, without importing ``numpy.random``.

``import numpy.random`` loads nine extension modules, about 7 ms of the daemon's 150 ms
start-up budget (issue 18), and the daemon never needs a random number: only inputs that
look random and are the same on every run and every machine:

* the engine's warm-up noise, which must be upstream's own (openwakeword draws
  ``np.random.randint(-1000, 1000, 64000)``; the parity tests seed it with 0): seed 0 is
  read from a stored copy of ``RandomState(0)``'s draw (a test compares the two), any other
  seed draws it from ``numpy.random`` then;
* the reference inputs of the load-time model checks (:mod:`edge.wake.golden`):
  :class:`Draws`, a counter hashed by SplitMix64's finalizer, integer arithmetic only, so
  the same numbers on x86 and ARM.

>>> Draws(7).uniform(-1.0, 1.0, (2, 3)).shape
(2, 3)
>>> warmup_noise(0)[:3]
array([ -316, -441,  653], dtype=int16)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edge.audio.frames import SAMPLE_RATE

WARMUP_SAMPLES = SAMPLE_RATE * 4
"""Upstream's warm-up: 4 s of noise."""
WARMUP_LOW, WARMUP_HIGH = -1000, 1000
_STORED = Path(__file__).with_name("warmup_noise_seed0.npy")
"""``np.random.RandomState(0).randint(-1000, 1000, 64000)`` as int16."""

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def warmup_noise(seed: int = 0) -> np.ndarray:
    """Upstream's warm-up noise as ``RandomState(seed)`` draws it: 64000 int16 samples in
    [-1000, 1000)."""
    if seed == 0:
        return np.load(_STORED)
    return draw_warmup_noise(seed)


def draw_warmup_noise(seed: int) -> np.ndarray:
    """The warm-up noise drawn by ``numpy.random`` (what the stored copy holds for seed 0)."""
    rs = np.random.RandomState(seed)
    return rs.randint(WARMUP_LOW, WARMUP_HIGH, WARMUP_SAMPLES).astype(np.int16)


class Draws:
    """A stream of fixed pseudo-random numbers: each call takes the next counters of
    ``seed``'s stream and hashes them (SplitMix64's finalizer). For reference inputs only:
    not for anything that must be unpredictable."""

    def __init__(self, seed: int) -> None:
        self._next = (seed & 0xFFFFFFFF) << 32

    def _u64(self, n: int) -> np.ndarray:
        x = np.arange(self._next, self._next + n, dtype=np.uint64) * _GOLDEN
        self._next += n
        x ^= x >> np.uint64(30)
        x *= _M1
        x ^= x >> np.uint64(27)
        x *= _M2
        x ^= x >> np.uint64(31)
        return x

    def uniform(self, low: float, high: float, shape: tuple[int, ...]) -> np.ndarray:
        """Floats (float64) in [low, high)."""
        n = int(np.prod(shape))
        unit = (self._u64(n) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53
        return (low + (high - low) * unit).reshape(shape)

    def integers(self, low: int, high: int, shape: tuple[int, ...]) -> np.ndarray:
        """Integers (int64) in [low, high); the modulo's bias is below 1e-15 for any range
        a reference input uses."""
        n = int(np.prod(shape))
        span = np.uint64(high - low)
        return ((self._u64(n) % span).astype(np.int64) + low).reshape(shape)

    def unit_normalish(self, shape: tuple[int, ...]) -> np.ndarray:
        """Zero-mean, unit-variance floats: uniform on [-sqrt(3), sqrt(3)) (no transcendental
        function, so no libm can round them differently)."""
        return self.uniform(-math.sqrt(3.0), math.sqrt(3.0), shape)
