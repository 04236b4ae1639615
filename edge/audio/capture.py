"""Live capture from a microphone through PyAudio (PortAudio, ALSA on the Pi).

>>> [d.name for d in list_devices()]          # what `edge devices` prints
>>> src = PyAudioSource("usb", channel=-1)     # a name substring, an index, or '' (default)
>>> src.start(); frame = src.read(); src.stop()

The device is opened at its own rate with its own channel count; one
``FrameAssembler`` picks a channel (or averages them) and resamples to 16 kHz.

Why callback mode: PortAudio reports an input overflow (audio lost because the
reader fell behind) as a status flag on the next callback. In blocking mode
PyAudio either swallows it (``exception_on_overflow=False``: nothing to count)
or raises IOError -9981 *and closes the stream* (PyAudio cleans the stream up
on any read error), so overflows could not be counted without losing the
device. The callback runs on PortAudio's thread and only hands each block, with
its flags, to a bounded queue; ``read`` (the audio loop) does all the work and
the counting. When the queue is full the callback waits, so a slow reader makes
the device itself overflow, which PortAudio reports and we count: audio is never
dropped silently. A callback that stops arriving (a device unplugged, a stalled
driver) is noticed by ``read`` within ``stall_timeout_s`` and raised as
``AudioDeviceError``, which the runner answers by reopening with backoff.

PortAudio enumerates devices once, when it initialises; so ``start`` creates a
fresh PyAudio each time and ``stop`` terminates it. A device that was unplugged
and plugged back in is then found again, and ALSA's configuration
(ALSA_CONFIG_PATH, ~/.asoundrc) is read anew.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge.audio import FrameAssembler
from edge.errors import AudioDeviceError, AudioFormatError

log = logging.getLogger(__name__)

BLOCK_S = 0.08
"""Length of one block read from the device: one 80 ms frame at the device's rate."""

QUEUE_BLOCKS = 12
"""Blocks (about 1 s) buffered between PortAudio's thread and the audio loop."""

PLUGIN_CHANNELS = 16
"""A device offering more channels than this is an ALSA plugin (default, pulse, plug) that
converts to any count: it is opened with just the channels we need and mixes down itself."""

# PortAudio's stable ABI values (portaudio.h), so a fake PyAudio needs no pyaudio import.
PA_INT16 = 8
PA_INPUT_OVERFLOW = 0x2
PA_CONTINUE = 0
PA_ABORT = 2
PA_ERRORS = {
    -9985: "is busy or unavailable (another program may hold it: `fuser -v /dev/snd/*` shows "
           "which); close that program or pick another device",
    -9996: "is not a valid device index",
    -9997: "does not support that sample rate; set audio.rate to one it supports, or 0 for "
           "its default",
    -9998: "does not support that channel count",
    -9994: "does not support 16-bit samples",
}

# Lines that ALSA and JACK print while PortAudio probes every device; they are noise for us.
_NOISE = ("ALSA lib ", "Cannot connect to server", "jack server is not running",
          "JackShmReadWritePtr", "Cannot connect to the server", "Expression 'alsa_",
          "Expression 'ret'", "Expression 'paInvalidSampleRate'")

PyAudioFactory = Callable[[], Any]


@dataclass(frozen=True)
class DeviceInfo:
    """A capture device as PortAudio lists it."""

    index: int
    name: str
    channels: int
    """Most input channels the device offers."""
    default_rate: int
    """Sample rate the device prefers (Hz)."""

    def describe(self) -> str:
        return f"{self.index} '{self.name}' ({self.channels} ch, {self.default_rate} Hz)"


def list_devices(pa_factory: PyAudioFactory | None = None) -> list[DeviceInfo]:
    """Every device that can capture, in PortAudio's order."""
    with _portaudio(pa_factory) as pa:
        return _input_devices(pa)


def has_capture_device(pa_factory: PyAudioFactory | None = None) -> bool:
    return bool(list_devices(pa_factory))


def find_device(spec: str, pa_factory: PyAudioFactory | None = None) -> DeviceInfo:
    """The device ``spec`` names: '' the default, digits an index, else a name substring."""
    with _portaudio(pa_factory) as pa:
        return _resolve(pa, spec)


def _input_devices(pa: Any) -> list[DeviceInfo]:
    out = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if int(info.get("maxInputChannels", 0)) > 0:
            out.append(_device(info, i))
    return out


def _device(info: dict[str, Any], index: int | None = None) -> DeviceInfo:
    return DeviceInfo(int(info["index"]) if index is None else index, str(info["name"]),
                      int(info["maxInputChannels"]), int(round(float(info["defaultSampleRate"]))))


def _resolve(pa: Any, spec: str) -> DeviceInfo:
    devices = _input_devices(pa)
    spec = spec.strip()
    if not spec:
        try:
            info = pa.get_default_input_device_info()
        except OSError as exc:
            raise AudioDeviceError(_missing("no default capture device", devices)) from exc
        dev = _device(info)
        if dev.channels < 1:
            raise AudioDeviceError(_missing("the default device cannot capture", devices))
        return dev
    if spec.isdigit():
        hits = [d for d in devices if d.index == int(spec)]
        if not hits:
            raise AudioDeviceError(_missing(f"no capture device has index {spec}", devices))
        return hits[0]
    low = spec.lower()
    exact = [d for d in devices if d.name.lower() == low]
    hits = exact or [d for d in devices if low in d.name.lower()]
    if not hits:
        raise AudioDeviceError(_missing(f"no capture device matches '{spec}'", devices))
    if len(hits) > 1:
        names = "; ".join(d.describe() for d in hits)
        raise AudioDeviceError(
            f"capture device '{spec}' is ambiguous: it matches {names}; give more of the name "
            "or the index (see `edge devices`)"
        )
    return hits[0]


def _missing(what: str, devices: list[DeviceInfo]) -> str:
    if not devices:
        return (f"{what}: no capture devices found; connect a microphone (then see "
                "`edge devices`) or set audio.input to an audio file")
    listed = "; ".join(d.describe() for d in devices)
    return (f"{what}; available capture devices: {listed}; set audio.input to a name "
            "substring or an index")


class PyAudioSource:
    """A live capture device, as 80 ms frames of 16 kHz mono int16.

    ``device`` is '' (the default input), an index, or a case-insensitive name
    substring; ``channel`` picks one channel (-1 averages all); ``rate`` overrides
    the device's own rate (0 keeps it). ``pa_factory`` builds the PyAudio object
    (tests pass a fake); it is called on every ``start``.
    """

    def __init__(self, device: str = "", channel: int = -1, rate: int = 0,
                 pa_factory: PyAudioFactory | None = None, stall_timeout_s: float = 2.0) -> None:
        self.spec = device
        self.channel = channel
        self.rate = rate
        self.stall_timeout_s = stall_timeout_s
        self._factory = pa_factory
        self.device: DeviceInfo | None = None
        self.name = device or "default capture device"
        self.overflows = 0
        """Input overflows PortAudio reported: audio the device lost because we fell behind."""
        self.opens = 0
        """Times a stream was opened (1 + reopens after mute or loss)."""
        self._pa: Any = None
        self._stream: Any = None
        self._asm: FrameAssembler | None = None
        self._channels = 0
        self._blocks: queue.Queue[tuple[bytes, int]] = queue.Queue(maxsize=QUEUE_BLOCKS)
        self._frames: list[np.ndarray] = []
        self._running = threading.Event()

    @property
    def capturing(self) -> bool:
        """True only while a stream is open and running (false when muted or lost)."""
        stream = self._stream  # read once: another thread may be asking while we stop
        if stream is None or not self._running.is_set():
            return False
        try:
            return bool(stream.is_active())
        except OSError:
            return False

    def check(self) -> DeviceInfo:
        """Find the device now and check the channel fits it; raises what ``start`` would."""
        with _portaudio(self._factory) as pa:
            dev = self._find(pa)
        self._assembler(dev, self.rate or dev.default_rate)
        return dev

    # ---- AudioSource --------------------------------------------------------

    def start(self) -> None:
        """Open the device (found afresh by its spec) and start the stream."""
        if self._stream is not None:
            return
        pa = _new_portaudio(self._factory)
        try:
            dev = self._find(pa)
            rate = self.rate or dev.default_rate
            asm, channels = self._assembler(dev, rate)
            self._drain_queue()
            self._running.set()
            stream = self._open(pa, dev, rate, channels)
        except BaseException:
            self._running.clear()
            _terminate(pa)
            raise
        self._pa, self._stream, self._asm, self._channels = pa, stream, asm, channels
        self.device = dev
        self.name = dev.name
        self._frames.clear()
        self.opens += 1
        log.info("capturing from %s at %d Hz, %d channel(s)%s", dev.describe(), rate, channels,
                 f", keeping channel {self.channel}" if self.channel >= 0 else "")

    def stop(self) -> None:
        """Stop and close the stream and release PortAudio: the device is really let go."""
        self._running.clear()
        stream, pa = self._stream, self._pa
        self._stream = self._pa = None
        self._drain_queue()  # frees a callback waiting on a full queue
        failure = None
        if stream is not None:
            try:
                stream.stop_stream()
            except OSError as exc:  # an unplugged device may fail to stop; closing still frees it
                failure = exc
            with contextlib.suppress(OSError):
                stream.close()
        if pa is not None:
            _terminate(pa)
        self._drain_queue()
        self._frames.clear()
        if self._asm is not None:
            self._asm.reset()
        if failure is not None:
            log.debug("stopping %s: %s", self.name, failure)

    def read(self) -> np.ndarray:
        """The next frame; raises AudioDeviceError when the device stops delivering."""
        while not self._frames:
            self._frames.extend(self._next_frames())
        return self._frames.pop(0)

    def close(self) -> None:
        self.stop()

    # ---- internals ------------------------------------------------------------

    def _find(self, pa: Any) -> DeviceInfo:
        if self.device is not None and self.spec.strip().isdigit():
            # An index is only stable while the device stays: after it comes back, find it by name.
            with contextlib.suppress(AudioDeviceError):
                return _resolve(pa, self.device.name)
        return _resolve(pa, self.spec)

    def _assembler(self, dev: DeviceInfo, rate: int) -> tuple[FrameAssembler, int]:
        channels, pick = _channels_to_open(dev, self.channel)
        try:
            return FrameAssembler(rate, channels, pick), channels
        except AudioFormatError as exc:
            raise AudioFormatError(f"capture device {dev.describe()}: {exc}") from None

    def _open(self, pa: Any, dev: DeviceInfo, rate: int, channels: int) -> Any:
        try:
            return pa.open(format=PA_INT16, channels=channels, rate=rate, input=True,
                           input_device_index=dev.index,
                           frames_per_buffer=max(1, round(rate * BLOCK_S)),
                           stream_callback=self._callback)
        except (OSError, ValueError) as exc:
            code = exc.args[0] if exc.args and isinstance(exc.args[0], int) else None
            known = PA_ERRORS.get(code) if code is not None else None
            why = f"it {known}" if known else str(exc)
            raise AudioDeviceError(
                f"cannot open capture device {dev.describe()} at {rate} Hz with {channels} "
                f"channel(s): {why}"
            ) from None

    def _callback(self, data: bytes | None, frame_count: int, time_info: Any,
                  status: int) -> tuple[None, int]:
        """PortAudio's thread: hand the block over and nothing else."""
        while self._running.is_set():
            try:
                self._blocks.put((data or b"", int(status)), timeout=0.02)
                return None, PA_CONTINUE
            except queue.Full:
                continue  # the audio loop is behind: waiting makes the device overflow
        return None, PA_ABORT

    def _next_frames(self) -> list[np.ndarray]:
        if self._stream is None or self._asm is None:
            raise AudioDeviceError(f"capture from {self.name} is not started")
        waited = 0.0
        while True:
            try:
                data, status = self._blocks.get(timeout=0.1)
                break
            except queue.Empty:
                waited += 0.1
                if not self.capturing:
                    raise AudioDeviceError(
                        f"capture device {self.name} stopped (unplugged, or its driver failed)"
                    ) from None
                if waited >= self.stall_timeout_s:
                    raise AudioDeviceError(
                        f"capture device {self.name} delivered no audio for {waited:.1f} s"
                    ) from None
        if status & PA_INPUT_OVERFLOW:
            self.overflows += 1
            n = self.overflows
            if n == 1 or n % 100 == 0:
                log.warning("input overflow on %s (%d so far): audio was lost because the "
                            "audio loop fell behind", self.name, n)
            else:
                log.debug("input overflow on %s (%d so far)", self.name, n)
        samples = np.frombuffer(data, dtype=np.int16)
        usable = len(samples) - len(samples) % self._channels
        block = samples[:usable].astype(np.float32).reshape(-1, self._channels) / 32768.0
        return self._asm.push(block)

    def _drain_queue(self) -> None:
        while True:
            try:
                self._blocks.get_nowait()
            except queue.Empty:
                return


def _channels_to_open(dev: DeviceInfo, channel: int) -> tuple[int, int]:
    """(channels to open, channel to keep or -1 to average)."""
    if dev.channels > PLUGIN_CHANNELS:
        # A converting plugin: ask for what we need; for one channel ALSA's plug averages.
        return (channel + 1, channel) if channel >= 0 else (1, -1)
    return dev.channels, channel


# ---- PortAudio set-up ----------------------------------------------------------

_init_lock = threading.Lock()


def _default_factory() -> Any:
    import pyaudio

    return pyaudio.PyAudio()


def _new_portaudio(factory: PyAudioFactory | None) -> Any:
    if factory is not None:
        return factory()
    # Never let libjack try to launch a JACK server while PortAudio probes its host APIs.
    os.environ.setdefault("JACK_NO_START_SERVER", "1")
    with _init_lock, _quiet_stderr():
        try:
            return _default_factory()
        except OSError as exc:
            raise AudioDeviceError(f"PortAudio could not start ({exc}); check that ALSA "
                                   "works: `arecord -l` lists the capture devices") from None


def _terminate(pa: Any) -> None:
    with contextlib.suppress(OSError), _init_lock:
        pa.terminate()


@contextlib.contextmanager
def _portaudio(factory: PyAudioFactory | None) -> Iterator[Any]:
    pa = _new_portaudio(factory)
    try:
        yield pa
    finally:
        _terminate(pa)


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Hold back what C libraries print to fd 2; pass on all but ALSA's and JACK's probing noise.

    PortAudio opens every ALSA PCM while it initialises, and alsa-lib and libjack
    print a line for each one missing (dozens on a Pi with one USB mic). Other
    threads' output in that window is kept and written afterwards.
    """
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = []
            for line in tmp.read().decode("utf-8", "replace").splitlines(keepends=True):
                if line.strip().startswith(_NOISE):
                    log.debug("portaudio: %s", line.rstrip())
                else:
                    kept.append(line)
            if kept:
                os.write(2, "".join(kept).encode())
