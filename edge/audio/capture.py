"""Live capture from a microphone through PyAudio (PortAudio, ALSA on the Pi).

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
fresh PyAudio each time and ``stop`` terminates it. Finding devices and starting
PortAudio live in :mod:`edge.audio.portaudio`.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading

import numpy as np

from edge.audio.frames import FRAME_S
from edge.audio.portaudio import (
    PA_ABORT,
    PA_CONTINUE,
    PA_ERRORS,
    PA_INPUT_OVERFLOW,
    PA_INT16,
    DeviceInfo,
    PortAudioHost,
    PortAudioStream,
    PyAudioFactory,
    new_portaudio,
    portaudio,
    resolve_device,
    terminate,
)
from edge.audio.sources import FrameAssembler
from edge.errors import AudioDeviceError, AudioFormatError

log = logging.getLogger(__name__)

BLOCK_S = FRAME_S
"""Length of one block read from the device: one 80 ms frame at the device's rate."""

QUEUE_BLOCKS = 12
"""Blocks (about 1 s) buffered between PortAudio's thread and the audio loop."""

PLUGIN_CHANNELS = 16
"""A device offering more channels than this is an ALSA plugin (default, pulse, plug) that
converts to any count: it is opened with just the channels we need and mixes down itself."""


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
        self._pa: PortAudioHost | None = None
        self._stream: PortAudioStream | None = None
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
        with portaudio(self._factory) as pa:
            dev = self._find(pa)
        self._assembler(dev, self.rate or dev.default_rate)
        return dev

    # ---- AudioSource --------------------------------------------------------

    def start(self) -> None:
        """Open the device (found afresh by its spec) and start the stream."""
        if self._stream is not None:
            return
        pa = new_portaudio(self._factory)
        try:
            dev = self._find(pa)
            rate = self.rate or dev.default_rate
            asm, channels = self._assembler(dev, rate)
            self._drain_queue()
            self._running.set()
            stream = self._open(pa, dev, rate, channels)
        except BaseException:
            self._running.clear()
            terminate(pa)
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
            terminate(pa)
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

    def _find(self, pa: PortAudioHost) -> DeviceInfo:
        if self.device is not None and self.spec.strip().isdigit():
            # An index is only stable while the device stays: after it comes back, find it by name.
            with contextlib.suppress(AudioDeviceError):
                return resolve_device(pa, self.device.name)
        return resolve_device(pa, self.spec)

    def _assembler(self, dev: DeviceInfo, rate: int) -> tuple[FrameAssembler, int]:
        channels, pick = _channels_to_open(dev, self.channel)
        try:
            return FrameAssembler(rate, channels, pick), channels
        except AudioFormatError as exc:
            raise AudioFormatError(f"capture device {dev.describe()}: {exc}") from None

    def _open(self, pa: PortAudioHost, dev: DeviceInfo, rate: int,
              channels: int) -> PortAudioStream:
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

    def _callback(self, data: bytes | None, frame_count: int, time_info: object,
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
