"""PortAudio itself: starting it (quietly), and the capture devices it lists.

>>> [d.name for d in list_devices()]          # what `edge devices` prints
>>> find_device("usb")                        # a name substring, an index, or '' (default)

PortAudio enumerates devices once, when it initialises; so every call here (and every
``PyAudioSource.start``) creates a fresh PyAudio and terminates it after. A device
that was unplugged and plugged back in is then found again, and ALSA's configuration
(ALSA_CONFIG_PATH, ~/.asoundrc) is read anew. ``pa_factory`` builds the PyAudio
object; tests pass a fake, so nothing here imports pyaudio until it is needed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from edge.errors import AudioDeviceError

log = logging.getLogger(__name__)

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

DeviceInfoDict = Mapping[str, Any]
"""PortAudio's description of a device: name, index, channel counts, default rate."""

StreamCallback = Callable[[bytes | None, int, Any, int], tuple[None, int]]
"""(data, frame count, time info, status flags) -> (None, PA_CONTINUE or PA_ABORT)."""


class PortAudioStream(Protocol):
    """What we use of a ``pyaudio.Stream``."""

    def is_active(self) -> bool: ...

    def stop_stream(self) -> None: ...

    def close(self) -> None: ...

    def write(self, frames: bytes) -> None: ...


class PortAudioHost(Protocol):
    """What we use of ``pyaudio.PyAudio``: one PortAudio initialisation (a fake in tests)."""

    def get_device_count(self) -> int: ...

    def get_device_info_by_index(self, index: int) -> DeviceInfoDict: ...

    def get_default_input_device_info(self) -> DeviceInfoDict: ...

    def get_default_output_device_info(self) -> DeviceInfoDict: ...

    def open(self, *, format: int, channels: int, rate: int, input: bool = False,
             output: bool = False, input_device_index: int | None = None,
             output_device_index: int | None = None, frames_per_buffer: int = 1024,
             stream_callback: StreamCallback | None = None) -> PortAudioStream: ...

    def terminate(self) -> None: ...


PyAudioFactory = Callable[[], PortAudioHost]
"""Builds the PyAudio object; called once per PortAudio initialisation."""


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
    with portaudio(pa_factory) as pa:
        return _input_devices(pa)


def has_capture_device(pa_factory: PyAudioFactory | None = None) -> bool:
    return bool(list_devices(pa_factory))


def has_output_device(pa_factory: PyAudioFactory | None = None) -> bool:
    with portaudio(pa_factory) as pa:
        return any(int(pa.get_device_info_by_index(i).get("maxOutputChannels", 0)) > 0
                   for i in range(pa.get_device_count()))


def find_device(spec: str, pa_factory: PyAudioFactory | None = None) -> DeviceInfo:
    """The device ``spec`` names: '' the default, digits an index, else a name substring."""
    with portaudio(pa_factory) as pa:
        return resolve_device(pa, spec)


def _input_devices(pa: PortAudioHost) -> list[DeviceInfo]:
    out = []
    for i in range(pa.get_device_count()):
        info = pa.get_device_info_by_index(i)
        if int(info.get("maxInputChannels", 0)) > 0:
            out.append(_device(info, i))
    return out


def _device(info: DeviceInfoDict, index: int | None = None) -> DeviceInfo:
    return DeviceInfo(int(info["index"]) if index is None else index, str(info["name"]),
                      int(info["maxInputChannels"]), int(round(float(info["defaultSampleRate"]))))


def resolve_device(pa: PortAudioHost, spec: str) -> DeviceInfo:
    """The device ``spec`` names on an initialised PortAudio (see :func:`find_device`)."""
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


# ---- PortAudio set-up ----------------------------------------------------------

_init_lock = threading.Lock()


def _default_factory() -> PortAudioHost:
    import pyaudio

    return pyaudio.PyAudio()


def new_portaudio(factory: PyAudioFactory | None) -> PortAudioHost:
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


def terminate(pa: PortAudioHost) -> None:
    with contextlib.suppress(OSError), _init_lock:
        pa.terminate()


@contextlib.contextmanager
def portaudio(factory: PyAudioFactory | None) -> Iterator[PortAudioHost]:
    pa = new_portaudio(factory)
    try:
        yield pa
    finally:
        terminate(pa)


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
