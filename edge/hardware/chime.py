"""Audible alerts: a rising chime when recording starts, a falling one when it ends.

Tones are made with numpy and played on the output device through PyAudio, or on a
gpiozero ``TonalBuzzer``. Playing happens on a worker thread so the audio loop never
waits on a speaker. While a chime plays the microphone hears it, so the recorder is
gated (``Recorder.gate``) for the chime's length plus a margin for output and input
latency: those frames are still recorded, but they never count as speech and never
trigger a detection.

>>> len(tone("start", 16000)) > 0
True
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edge.errors import HardwareError
from edge.recent import Recent

if TYPE_CHECKING:
    from gpiozero import TonalBuzzer
    from gpiozero.pins import Factory

    from edge.hardware.profiles import Pin

log = logging.getLogger(__name__)

NOTES = {"start": ((659.25, 0.09), (987.77, 0.14)), "end": ((987.77, 0.09), (659.25, 0.14)),
         "timer": ((880.0, 0.12), (659.25, 0.12), (880.0, 0.2))}
"""Frequency (Hz) and length (s) of each note: E5 then B5 rising; the same falling; a timer
that finished (a voice assistant's): A5, E5, A5, again and again."""
GAP_S = 0.02


def chime_seconds(kind: str) -> float:
    notes = NOTES[kind]
    return sum(d for _, d in notes) + GAP_S * (len(notes) - 1)


def tone(kind: str, rate: int, volume: float = 0.3) -> np.ndarray:
    """The chime as int16 mono samples at ``rate``: sine notes with 5 ms fades (no clicks)."""
    parts = []
    for i, (freq, seconds) in enumerate(NOTES[kind]):
        n = int(round(seconds * rate))
        t = np.arange(n) / rate
        note = np.sin(2 * np.pi * freq * t)
        fade = min(n // 2, int(0.005 * rate))
        ramp = np.linspace(0.0, 1.0, fade)
        note[:fade] *= ramp
        note[n - fade:] *= ramp[::-1]
        parts.append(note)
        if i < len(NOTES[kind]) - 1:
            parts.append(np.zeros(int(round(GAP_S * rate))))
    audio = np.concatenate(parts) * volume
    return np.round(audio * 32767).astype(np.int16)


class ChimeOutput(Protocol):
    def play(self, kind: str) -> None:
        """Play the chime to the end (blocking); called on the chime thread."""
        ...

    def close(self) -> None: ...


def open_pyaudio_output(device: str, volume: float) -> PyAudioOutput:
    """The chimes' PyAudio output, or a :class:`HardwareError` naming the setting whatever
    failed (the daemon meets it as a hardware fault and starts muted; ``edge config check``
    refuses with it)."""
    try:
        return PyAudioOutput(device, volume)
    except HardwareError:
        raise
    except Exception as exc:  # PortAudio's own failures (no ALSA, no devices, no start)
        raise HardwareError(f"hardware.chime_backend = 'pyaudio': the audio output cannot be "
                            f"opened ({exc}); use hardware.chime_backend = 'buzzer', or "
                            "hardware.chime = false") from None


class PyAudioOutput:
    """Chimes on an output device through PyAudio (imported only when chimes are on)."""

    key = "hardware.chime_device"

    def __init__(self, device: str, volume: float) -> None:
        from edge.audio.portaudio import new_portaudio

        self._pa = new_portaudio(None)  # PortAudio's probing noise on stderr held back
        self.volume = volume
        try:
            self.index, self.rate, self.device_name = self._find(device)
        except Exception:
            self.close()
            raise
        self._tones = {k: tone(k, self.rate, volume) for k in NOTES}

    def _find(self, device: str) -> tuple[int, int, str]:
        devices = []
        for i in range(self._pa.get_device_count()):
            info = self._pa.get_device_info_by_index(i)
            if int(info.get("maxOutputChannels", 0)) > 0:
                devices.append((i, str(info["name"]), int(info["defaultSampleRate"])))
        if device:
            match = [d for d in devices if device.lower() in d[1].lower()] or \
                [d for d in devices if device.isdigit() and d[0] == int(device)]
        else:
            try:
                info = self._pa.get_default_output_device_info()
                match = [(int(info["index"]), str(info["name"]),
                          int(info["defaultSampleRate"]))]
            except OSError:
                match = []
        if not match:
            have = ", ".join(repr(d[1]) for d in devices) or "none"
            raise HardwareError(
                f"{self.key} = {device!r}: no such audio output device (output devices: {have});"
                " name one, use hardware.chime_backend = 'buzzer', or turn chimes off with "
                "hardware.chime = false")
        index, name, rate = match[0]
        return index, rate, name

    def play(self, kind: str) -> None:
        import pyaudio

        stream = self._pa.open(format=pyaudio.paInt16, channels=1, rate=self.rate, output=True,
                               output_device_index=self.index)
        try:
            stream.write(self._tones[kind].tobytes())
            stream.stop_stream()
        finally:
            stream.close()

    def close(self) -> None:
        from edge.audio.portaudio import terminate

        terminate(self._pa)


class BuzzerOutput:
    """Chimes on a piezo or magnetic buzzer driven by a gpiozero ``TonalBuzzer``."""

    def __init__(self, buzzer: TonalBuzzer, sleep: Callable[[float], None] = time.sleep) -> None:
        self.buzzer = buzzer
        self.sleep = sleep

    @classmethod
    def on_pin(cls, pin: Pin, factory: Factory | None) -> BuzzerOutput:
        from gpiozero import TonalBuzzer
        from gpiozero.tones import Tone

        # Two octaves around A5 cover both chimes' notes.
        return cls(TonalBuzzer(f"GPIO{pin.gpio}", mid_tone=Tone("A5"), octaves=2,
                               pin_factory=factory))

    def play(self, kind: str) -> None:
        from gpiozero.tones import Tone

        try:
            for i, (freq, seconds) in enumerate(NOTES[kind]):
                self.buzzer.play(Tone.from_frequency(freq))
                self.sleep(seconds)
                if i < len(NOTES[kind]) - 1:
                    self.buzzer.stop()
                    self.sleep(GAP_S)
        finally:
            self.buzzer.stop()

    def close(self) -> None:
        self.buzzer.stop()
        self.buzzer.close()


class ChimePlayer:
    """Plays chimes off the audio thread; ``background=False`` plays inline (tests, fakes)."""

    def __init__(self, output: ChimeOutput, background: bool = True,
                 on_failure: Callable[[Exception], None] | None = None) -> None:
        self.output = output
        self.on_failure = on_failure
        self.played: Recent[str] = Recent()
        self.failures = 0
        self._q: queue.Queue[str | None] | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._q = queue.Queue(maxsize=4)
            self._thread = threading.Thread(target=self._run, name="chime", daemon=True)
            self._thread.start()

    def play(self, kind: str) -> None:
        if self._q is None:
            self._play(kind)
            return
        try:
            self._q.put_nowait(kind)
        except queue.Full:
            log.warning("chime %s dropped: chimes are queueing up", kind)

    def _run(self) -> None:
        assert self._q is not None
        while (kind := self._q.get()) is not None:
            self._play(kind)

    def _play(self, kind: str) -> None:
        try:
            self.output.play(kind)
            self.played.append(kind)
        except Exception as exc:
            self.failures += 1
            log.error("chime %s could not play: %s", kind, exc)
            if self.on_failure is not None:
                self.on_failure(exc)

    def close(self, timeout: float = 2.0) -> None:
        if self._q is not None and self._thread is not None:
            try:
                self._q.put(None, timeout=timeout)
            except queue.Full:
                log.warning("the chime thread is stuck; closing its output anyway")
            self._thread.join(timeout)
            if self._thread.is_alive():
                # Closing PortAudio under a write that is still running crashes the process
                # (seen with SIGSEGV at stop); the daemon thread ends with the process.
                log.warning("the chime thread is still playing after %g s; its output is left "
                            "open", timeout)
                return
        self.output.close()
