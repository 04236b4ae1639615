"""The assistant's spoken answer: played as it streams in, with wake detection gated meanwhile.

Home Assistant streams its text-to-speech to a device that offers a speaker over the API
(16 kHz 16-bit mono chunks between its TTS stream start and end events). ``AnswerPlayer``
queues the chunks and plays them on its own thread through a ``Speaker`` (``PyAudioSpeaker``
on ``audio.output``; tests pass their own). The microphone hears the speaker: for as long as
the queued audio will take to play, plus a margin, the recorder is gated (as for chimes), so
the device neither wakes on its own answer nor counts it as speech. When the answer has
played, ``on_played`` is told (the server then tells the assistant).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from edge.audio.frames import SAMPLE_RATE
from edge.config import Config
from edge.errors import ConfigError
from edge.pipeline.runner import Commands

log = logging.getLogger(__name__)

GATE_MARGIN_S = 0.3
"""Seconds of gating after the last queued sample: output and input latency."""


class Speaker(Protocol):
    """Where answers play: 16 kHz int16 mono in, blocking while it plays."""

    def begin(self) -> None: ...

    def write(self, samples: np.ndarray) -> None: ...

    def end(self) -> None:
        """The answer is over: play out what is buffered, then release the device."""
        ...

    def close(self) -> None: ...


class PyAudioSpeaker:
    """An output device through PyAudio, opened for each answer, resampled to its rate."""

    def __init__(self, device: str, key: str = "audio.output") -> None:
        from edge.audio.portaudio import new_portaudio

        self.key = key
        """The config key that named ``device`` (for the one-line error when it is missing)."""

        self._pa: Any = new_portaudio(None)
        self._stream: Any = None
        self._resampler: Any = None
        try:
            self.index, self.rate, self.name = self._find(device)
        except Exception:
            self.close()
            raise

    def _find(self, device: str) -> tuple[int, int, str]:
        outputs = []
        for i in range(self._pa.get_device_count()):
            info = self._pa.get_device_info_by_index(i)
            if int(info.get("maxOutputChannels", 0)) > 0:
                outputs.append((i, int(info["defaultSampleRate"]), str(info["name"])))
        if device:
            hits = [d for d in outputs if device.lower() in d[2].lower()] or \
                [d for d in outputs if device.isdigit() and d[0] == int(device)]
        else:
            try:
                info = self._pa.get_default_output_device_info()
                hits = [(int(info["index"]), int(info["defaultSampleRate"]), str(info["name"]))]
            except OSError:
                hits = []
        if not hits:
            have = ", ".join(repr(d[2]) for d in outputs) or "none"
            raise ConfigError(f"{self.key} = {device!r}: no such output device (outputs: "
                              f"{have}); name one in audio.output, or set audio.output = "
                              "'none' to play no answers")
        return hits[0]

    def begin(self) -> None:
        import pyaudio
        import soxr

        self._stream = self._pa.open(format=pyaudio.paInt16, channels=1, rate=self.rate,
                                     output=True, output_device_index=self.index)
        # float32: soxr dithers its int16 output, and what is played should be repeatable
        self._resampler = soxr.ResampleStream(SAMPLE_RATE, self.rate, 1, dtype="float32") \
            if self.rate != SAMPLE_RATE else None

    def write(self, samples: np.ndarray) -> None:
        if self._stream is not None:
            self._stream.write(self._resampled(samples).tobytes())

    def _resampled(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        if self._resampler is None:
            return np.ascontiguousarray(samples, dtype=np.int16)
        out = self._resampler.resample_chunk(samples.astype(np.float32), last=last)
        return np.clip(np.round(out), -32768, 32767).astype(np.int16)

    def end(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            if self._resampler is not None:
                stream.write(self._resampled(np.zeros(0, np.int16), last=True).tobytes())
            stream.stop_stream()
        finally:
            stream.close()

    def close(self) -> None:
        from edge.audio.portaudio import terminate

        self.end()
        terminate(self._pa)


def plays_answers(cfg: Config) -> bool:
    """A voice assistant that plays its answers (``audio.output``; 'none' plays nothing)."""
    return cfg.assist.mode in ("esphome", "wyoming") and cfg.audio.output != "none"


def answer_device(cfg: Config) -> tuple[str, str]:
    """Where the answers play, and the config key that says so: ``audio.output`` when set,
    else the chimes' output (``hardware.chime_device`` or the hardware profile's), so that one
    speaker serves both; '' is the default output."""
    if cfg.audio.output:
        return cfg.audio.output, "audio.output"
    from edge.hardware.profiles import resolve

    spec = resolve(cfg.hardware)
    if spec.chime_backend == "pyaudio" and spec.chime_device:
        return spec.chime_device, "hardware.chime_device"
    return "", "audio.output"


def check_answer_output(cfg: Config) -> None:
    """The voice assistant's output device (``answer_device``): it must be found."""
    PyAudioSpeaker(*answer_device(cfg)).close()


_BEGIN, _END, _STOP = object(), object(), object()


class AnswerPlayer:
    """Plays answers on its own thread, gating wake detection while they play."""

    def __init__(self, speaker: Speaker, commands: Commands,
                 on_played: Callable[[], None] = lambda: None,
                 margin_s: float = GATE_MARGIN_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.speaker = speaker
        self.commands = commands
        self.on_played = on_played
        self.margin_s = margin_s
        self._monotonic = monotonic
        self._queue: queue.Queue[Any] = queue.Queue()
        self._until = 0.0
        self.answers = 0
        self._thread = threading.Thread(target=self._run, name="assist-answer", daemon=True)
        self._thread.start()

    # ---- any thread (the API server's loop) -----------------------------------------------

    def begin(self) -> None:
        self._queue.put(_BEGIN)

    def audio(self, pcm: bytes) -> None:
        """16 kHz 16-bit mono samples of the answer, in order."""
        samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.int16)
        if not samples.size:
            return
        now = self._monotonic()
        self._until = max(self._until, now) + samples.size / SAMPLE_RATE
        gate_s = self._until - now + self.margin_s
        self.commands.post(lambda recorder: recorder.gate(gate_s))
        self._queue.put(samples)

    def end(self) -> None:
        self._queue.put(_END)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(10)
        try:
            self.speaker.close()
        except Exception:
            log.exception("closing the speaker failed")

    # ---- its thread -----------------------------------------------------------------------

    def _run(self) -> None:
        open_ = False
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                if item is _END:
                    self._end(open_)
                    open_ = False
                    continue
                if not open_:  # opened at the stream's start, or by its first audio
                    self.speaker.begin()
                    open_ = True
                if item is not _BEGIN:
                    self.speaker.write(item)
            except Exception:  # a broken output must not stop the next answer
                log.exception("playing the answer failed")
                open_ = False

    def _end(self, open_: bool) -> None:
        try:
            if open_:
                self.speaker.end()
        except Exception:
            log.exception("finishing the answer failed")
        finally:
            self.answers += 1
            self.on_played()
