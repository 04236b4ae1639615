"""Every check `edge run` makes before it captures: one function, `edge config check` runs it too.

``preflight`` takes a loaded config and does what the daemon's start needs done first:
the subsystem checks (``check_config``), the network the service may reach, every wake
model resolved through the model store (a manifest name, an ``.onnx`` path or whatever
else the store resolves) and loaded, so its input and output shapes are read, the VAD
model verified, and the key files of ``[mqtt]`` and ``[upload]`` readable. The
composition root builds the daemon from what it returns (the models are loaded once),
so ``edge config check`` cannot say "valid" for a config that ``edge run`` refuses.

The input and output devices are checked by ``open_input``, ``check_output`` (the chimes)
and ``check_answer_output`` (the voice assistant's ``audio.output``): ``edge
run`` opens its input with ``open_input``; ``edge config check`` calls both when this
machine has such a device at all ("when present": a config checked on a laptop for a Pi
gets a note, not a refusal). ``edge run`` meets a missing chime output as a hardware
fault (it starts muted); ``edge config check`` refuses it.

>>> checked = preflight(load_checked_config("edge.toml"))    # doctest: +SKIP
>>> checked.detector.names                                    # doctest: +SKIP
('hey_jarvis',)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge.compose.config import check_config
from edge.config import Config
from edge.errors import AudioDeviceError, ConfigError
from edge.privacy.secrets import need_file, read_secret, reason
from edge.service.network import check_network_allowed
from edge.wake.detector import Detector, build_detector, model_store
from edge.wake.models import VAD_MODEL, ModelStore
from edge.wake.policy import ScoreRun

if TYPE_CHECKING:
    from edge.audio.sources import AudioSource



@dataclass
class Checked:
    """What ``preflight`` checked and built: the daemon is built from these."""

    cfg: Config
    store: ModelStore
    detector: Detector
    """The wake models, loaded: names resolved, shapes read."""


def preflight(cfg: Config, on_run_end: Callable[[ScoreRun], None] | None = None,
              store: ModelStore | None = None) -> Checked:
    """Raise the first refusal ``edge run`` would meet before capture, as one line naming
    the key at fault and the fix; else the detector and model store the daemon is built from
    (its policy telling ``on_run_end`` of each run over a threshold). ``store``: the one
    ``[wake]`` names, when the caller has it already.
    """
    check_config(cfg)
    check_network_allowed(cfg)  # under install.sh's IP deny, a config that needs the network
    store = store or model_store(cfg.wake)
    # each name resolved by the store, each loaded
    detector = build_detector(cfg.wake, store, on_run_end=on_run_end)
    store.path(VAD_MODEL)  # installed, and the manifest's bytes
    check_key_files(cfg)
    return Checked(cfg, store, detector)


def key_files(cfg: Config) -> list[tuple[str, str]]:
    """(config key, path) of every TLS file and secret the config's connections read."""
    sections: list[tuple[str, object]] = []
    if cfg.mqtt.enabled:
        sections.append(("mqtt", cfg.mqtt))
    if cfg.upload.mode in ("mqtt", "https"):
        sections.append((f"upload.{cfg.upload.mode}", getattr(cfg.upload, cfg.upload.mode)))
    out = []
    for prefix, section in sections:
        for name in ("ca", "cert", "key", "password_file", "token_file"):
            path = getattr(section, name, "")
            if path:
                out.append((f"{prefix}.{name}", str(path)))
    return out


def check_key_files(cfg: Config) -> None:
    """Each key file the config names exists and this process can read it."""
    for key, path in key_files(cfg):
        if key.endswith(("password_file", "token_file")):
            read_secret(path, key)
            continue
        need_file(path, key)
        try:
            with Path(path).open("rb") as f:
                f.read(1)
        except OSError as exc:
            raise ConfigError(f"{key} = {path!r} cannot be read ({reason(exc)}); make it "
                              "readable by the recorder") from None


def input_is_file(cfg: Config) -> bool:
    spec = cfg.audio.input
    return bool(spec) and (Path(spec).suffix.lower() in (".wav", ".flac") or Path(spec).is_file())


def open_input(cfg: Config) -> AudioSource:
    """The input ``audio.input`` names (after the profile), found and checked but not started:
    a file, or a capture device whose name and channel fit; a refusal in one line if not."""
    from edge.audio.file import FileSource

    spec = cfg.audio.input
    if input_is_file(cfg):
        return FileSource(spec, cfg.audio.channel)
    from edge.audio import capture, portaudio

    if not spec and not portaudio.has_capture_device():
        raise AudioDeviceError(
            "no capture device found; connect a microphone (see `edge devices`) or set "
            "audio.input to a device name, an index or an audio file"
        )
    source = capture.PyAudioSource(spec, cfg.audio.channel, cfg.audio.rate)
    source.check()  # a wrong name or channel fails now, in one line, not in the reopen loop
    return source


def check_output(cfg: Config) -> None:
    """The chimes' output device, when chimes play through one: it must be found."""
    from edge.hardware.chime import open_pyaudio_output
    from edge.hardware.profiles import resolve

    spec = resolve(cfg.hardware)
    if spec.chime and spec.chime_backend == "pyaudio":
        open_pyaudio_output(spec.chime_device, spec.chime_volume).close()


def check_devices(cfg: Config) -> list[str]:
    """``edge config check``'s device checks: the input and the chimes' output, each when
    this machine has such a device; the notes say what could not be checked here."""
    from edge.assist.answer import check_answer_output, plays_answers
    from edge.audio import portaudio
    from edge.audio.portaudio import has_output_device
    from edge.hardware.profiles import apply_audio, resolve

    cfg = apply_audio(cfg)
    notes = []
    if input_is_file(cfg) or portaudio.has_capture_device():
        open_input(cfg).close()
    else:
        notes.append(f"no capture device on this machine: audio.input = {cfg.audio.input!r} "
                     "was not checked")
    spec = resolve(cfg.hardware)
    if spec.chime and spec.chime_backend == "pyaudio":
        if has_output_device():
            check_output(cfg)
        else:
            notes.append("no audio output device on this machine: hardware.chime_device = "
                         f"{spec.chime_device!r} was not checked")
    if plays_answers(cfg):
        if has_output_device():
            check_answer_output(cfg)
        else:
            notes.append("no audio output device on this machine: audio.output = "
                         f"{cfg.audio.output!r} was not checked")
    return notes

