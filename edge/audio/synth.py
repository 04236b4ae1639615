"""Synthesized speech from espeak-ng, for the demo, the tests and the benchmarks.

>>> pcm = speak("hey jarvis")          # int16, 16 kHz mono
>>> stream = concat([silence(1.0), pcm, silence(1.0)])
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Iterable

import numpy as np

from edge.audio.frames import SAMPLE_RATE
from edge.errors import EdgeError

WAKE_PHRASES = {
    "hey_jarvis": "hey jarvis",
    "alexa": "alexa",
    "hey_rhasspy": "hey rhasspy",
    "hey_mycroft": "hey mycroft",
}

PROSE = [
    "The committee met on Tuesday to review the budget for the coming year.",
    "Most of the afternoon was spent discussing the repairs to the old bridge.",
    "She planted tomatoes, beans and a row of sunflowers along the fence.",
    "The train to the coast leaves every hour from the second platform.",
    "After the storm, the river rose higher than anyone could remember.",
    "He read the letter twice before folding it back into the envelope.",
    "Our neighbours are painting their kitchen a pale shade of green.",
    "The museum opens a new exhibition on ancient maps next month.",
    "Please remember to switch off the lights when you leave the office.",
    "A small bakery on the corner sells bread until early evening.",
    "The children built a castle of sand that the tide soon washed away.",
    "Scientists measured the temperature of the lake every morning.",
    "The orchestra rehearsed the final movement until it sounded right.",
    "Heavy traffic delayed the delivery of fresh vegetables to the market.",
    "The library extended its opening hours during the examination period.",
    "A gentle wind carried the smell of cut grass across the field.",
]


SPEEDS = (140, 155, 170, 185)
"""Words per minute the prose generator picks from (few, so synthesis is cached)."""


def speak(text: str, voice: str = "en-us", speed: int = 160) -> np.ndarray:
    """Speak ``text`` with espeak-ng and return int16 samples at 16 kHz mono."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise EdgeError("espeak-ng is not installed; run `make setup` (or apt install espeak-ng)")
    wav = subprocess.run([exe, "-v", voice, "-s", str(speed), "--stdout", text],
                         check=True, capture_output=True).stdout
    import soundfile as sf
    import soxr

    data, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    mono = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return np.clip(np.round(mono * 32767.0), -32768, 32767).astype(np.int16)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(round(seconds * SAMPLE_RATE)), dtype=np.int16)


def pink_noise(seconds: float, dbfs: float = -50.0, seed: int = 0) -> np.ndarray:
    """Pink (1/f) noise at an RMS level of ``dbfs``, as int16."""
    n = int(round(seconds * SAMPLE_RATE))
    rng = np.random.default_rng(seed)
    spectrum = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    freqs = np.arange(n // 2 + 1, dtype=np.float64)
    freqs[0] = 1.0
    x = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    x *= (10 ** (dbfs / 20.0)) / (np.sqrt(np.mean(x**2)) or 1.0)
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int16)


def concat(parts: Iterable[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(p, dtype=np.int16) for p in parts])


def prose(seconds: float, seed: int = 0, gap_s: float = 0.4) -> np.ndarray:
    """At least ``seconds`` of ordinary synthesized prose with short pauses."""
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    total = 0
    cache: dict[str, np.ndarray] = {}
    while total < seconds * SAMPLE_RATE:
        sentence = PROSE[int(rng.integers(len(PROSE)))]
        speed = int(rng.choice(SPEEDS))
        key = f"{sentence}|{speed}"
        if key not in cache:
            cache[key] = speak(sentence, speed=speed)
        out.append(cache[key])
        out.append(silence(gap_s))
        total += len(cache[key]) + int(gap_s * SAMPLE_RATE)
    return concat(out)
