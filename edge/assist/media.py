"""Sound the assistant names by URL (an announcement): fetched over HTTP(S), decoded, and
turned into the 16 kHz mono int16 the answer player plays.

Any format libsndfile reads (WAV, FLAC, Ogg, MP3 with libsndfile 1.1), any rate and channel
count (averaged to mono, resampled with soxr). Only http and https URLs are fetched, at most
``MAX_MEDIA_BYTES``, within ``FETCH_TIMEOUT_S``; anything else is a ``MediaError`` naming
the URL and what was wrong, and the assistant is told the announcement failed.

>>> samples = fetch_audio("http://homeassistant.local:8123/api/tts_proxy/x.wav")  # doctest: +SKIP
"""

from __future__ import annotations

import io
import urllib.error
import urllib.parse
import urllib.request

import numpy as np

from edge.audio.frames import SAMPLE_RATE
from edge.errors import EdgeError

MAX_MEDIA_BYTES = 16 * 1024 * 1024
"""An announcement longer than this (about 8 minutes of 16 kHz WAV) is refused."""
FETCH_TIMEOUT_S = 10.0


class MediaError(EdgeError):
    """Sound at a URL could not be fetched or decoded."""


def fetch_audio(url: str, timeout_s: float = FETCH_TIMEOUT_S,
                max_bytes: int = MAX_MEDIA_BYTES) -> np.ndarray:
    """The sound at ``url`` as 16 kHz mono int16 samples (blocking: not on the audio thread)."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise MediaError(f"{url!r} is not an http or https URL")
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310
            data = response.read(max_bytes + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise MediaError(f"{url} could not be fetched ({exc})") from None
    if len(data) > max_bytes:
        raise MediaError(f"{url} is over {max_bytes // (1024 * 1024)} MB: not played")
    return decode_audio(data, url)


def decode_audio(data: bytes, where: str) -> np.ndarray:
    """``data`` (a sound file's bytes) as 16 kHz mono int16 samples."""
    import soundfile

    try:
        audio, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError) as exc:
        raise MediaError(f"{where} is not a sound file this device can decode ({exc})") from None
    mono = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        import soxr

        mono = soxr.resample(mono, rate, SAMPLE_RATE)
    return np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16)
