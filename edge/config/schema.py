"""The config's shape: frozen dataclasses, one per subsystem, and ``opt`` for their fields.

Every field has a one-line docstring with its unit; allowed ranges and choices sit
in the field's metadata, so ``edge.config.load`` can refuse a bad value with the key,
the value given and what is allowed. Lists are held as tuples and tables as read-only
mappings, whoever builds the dataclass, so a frozen config really cannot change.

Why one module of over 400 lines: it is the whole shape of the config file, one short
dataclass per ``[section]``, read top to bottom as the file is; `edge config example`
renders it in this order. Split, the sections would only import each other back.

>>> WakeConfig(models=["alexa"], thresholds={"alexa": 0.7}).models
('alexa',)
"""

from __future__ import annotations

import copyreg
import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from edge.config.rules import FLOOR_WHY, THRESHOLD_FLOOR

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

MANIFEST_WAKE_WORDS = ("alexa", "hey_jarvis", "hey_mycroft", "hey_rhasspy")

ONE_FRAME_S = 0.08
"""One 80 ms frame (edge.audio.frames.FRAME_S; config sits below audio, so a test keeps the
two equal): the shortest pre-roll and trailing silence."""


def read_only(table: Mapping[str, Any]) -> MappingProxyType[str, Any]:
    """A read-only copy of ``table``."""
    return MappingProxyType(dict(table))


# A Config crosses to worker processes by pickle (edge measure's pool), and
# dataclasses.asdict deep-copies it; neither takes a mappingproxy by itself, so one
# travels as a copy of the dict it wraps and is read-only again on arrival.
copyreg.pickle(MappingProxyType, lambda m: (read_only, (dict(m),)))


def opt(default: Any, *, lo: float | None = None, hi: float | None = None,
        choices: tuple[Any, ...] | None = None, doc: str = "", why_lo: str = "") -> Any:
    """A config field with an allowed range or set of choices; ``why_lo`` says, in a
    refusal, why nothing below ``lo`` is allowed."""
    meta = {"lo": lo, "hi": hi, "choices": choices, "doc": doc, "why_lo": why_lo}
    if isinstance(default, Mapping):
        return field(default_factory=lambda: read_only(default), metadata=meta)
    return field(default=default, metadata=meta)


def freeze(section: DataclassInstance) -> None:
    """Make ``section``'s lists tuples and its tables read-only mappings, in place (for a
    section built by hand, or by ``replace`` with a list)."""
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, list):
            object.__setattr__(section, f.name, tuple(value))
        elif isinstance(value, Mapping):  # a copy: the caller's dict may change later
            object.__setattr__(section, f.name, read_only(value))


@dataclass(frozen=True)
class AudioConfig:
    """Where audio comes from (and where the voice assistant's answers play)."""

    input: str = opt("", doc="capture device: a name substring or an index; '' is the default "
                             "device; a .wav/.flac path reads a file")
    channel: int = opt(-1, lo=-1, hi=31, doc="channel to keep (0-based); -1 averages them all")
    rate: int = opt(0, lo=0, hi=192000, doc="capture rate in Hz; 0 uses the device's default")
    pre_roll_s: float = opt(1.5, lo=ONE_FRAME_S, hi=10.0,
                            doc="seconds of audio kept in memory before a detection (default "
                                "1.5 s keeps the wake word itself; hard cap 10 s)")
    reopen_max_backoff_s: float = opt(30.0, lo=0.1, hi=600.0,
                                      doc="longest wait between attempts to reopen a lost device")
    demo_when_no_device: bool = opt(False, doc="run the synthesized demo when no capture device "
                                               "exists (make run sets this; a service never does)")
    output: str = opt("", doc="playback device for the voice assistant's spoken answers: a "
                              "name substring or an index; '' the chimes' output device "
                              "(hardware.chime_device or the profile's), else the default "
                              "output (if any); 'none' plays no answers")


@dataclass(frozen=True)
class WakeConfig:
    """Wake-word detection."""

    engine: str = opt("edge", choices=("edge", "openwakeword"),
                      doc="'edge' (lean, built in) or 'openwakeword' (the upstream package)")
    models: tuple[str, ...] = opt(("hey_jarvis",),
                                  doc="manifest names (alexa, hey_jarvis, hey_mycroft, "
                                      "hey_rhasspy; micro:okay_nabu, micro:alexa, ... for "
                                      "microWakeWord models) or paths of .onnx classifiers "
                                      "or .tflite micro models")
    threshold: float = opt(0.5, lo=THRESHOLD_FLOOR, hi=1.0, why_lo=FLOOR_WHY,
                           doc="score at or above which a frame counts (never below the floor, "
                               "0.1: lower records ordinary speech)")
    thresholds: Mapping[str, float] = opt({}, lo=THRESHOLD_FLOOR, hi=1.0, why_lo=FLOOR_WHY,
                                          doc="per-model threshold overrides (a micro model's "
                                              "default is its own cutoff, e.g. 0.85)")
    patience: int = opt(1, lo=1, hi=50, doc="consecutive frames over threshold before a trigger")
    refractory_s: float = opt(2.0, lo=0.0, hi=60.0, doc="seconds before the same model may "
                                                        "trigger again")
    threads: int = opt(1, lo=1, hi=16, doc="onnxruntime threads per model session")
    runtime: str = opt("auto", choices=("auto", "onnxruntime"),
                       doc="where the 'edge' engine runs models: 'auto' runs the stock models "
                           "with numpy (onnxruntime never loaded) and others on onnxruntime; "
                           "'onnxruntime' runs them all there")
    combine: str = opt("off", choices=("off", "any", "both"),
                       doc="a wake word both families know (alexa and micro:alexa): 'any' wakes "
                           "when either model fires (fewer misses), 'both' only when both fire "
                           "within 1 s (fewer false wakes), 'off' keeps them separate")
    idle_gate: bool = opt(True, doc="skip model work while the room stays far below speech "
                                    "level (exact: catches up when the level rises)")
    idle_gate_dbfs: float = opt(-45.0, lo=-120.0, hi=0.0, doc="RMS level (dBFS) below which a "
                                                             "frame counts as quiet")
    models_dir: str = opt("", doc="where models are installed; '' uses the default")

    def __post_init__(self) -> None:
        freeze(self)

    def threshold_for(self, model: str) -> float:
        return self.thresholds.get(model, self.threshold)


@dataclass(frozen=True)
class RecordConfig:
    """How a clip ends after a detection."""

    silence_s: float = opt(0.8, lo=ONE_FRAME_S, hi=10.0,
                           doc="trailing silence that ends a clip, in s")
    no_speech_timeout_s: float = opt(3.0, lo=0.24, hi=30.0,
                                     doc="seconds without speech after a detection before the "
                                         "clip ends as no_speech")
    max_record_s: float = opt(10.0, lo=0.5, hi=60.0, doc="hard cap on recording after a "
                                                         "detection, in s")
    min_speech_s: float = opt(0.24, lo=0.0, hi=5.0, doc="speech after the detection that counts "
                                                        "as the user speaking, in s")
    vad_threshold: float = opt(0.5, lo=0.0, hi=1.0, doc="VAD probability that counts as speech")


@dataclass(frozen=True)
class OutputConfig:
    """Where finished clips go."""

    keep_local: bool = opt(True, doc="write clips as WAV + JSON sidecar in clips_dir")
    clips_dir: str = opt("clips", doc="clip directory; relative paths are under state_dir")


@dataclass(frozen=True)
class BrokerConnection:
    """How to reach an MQTT broker: shared by upload.mqtt and mqtt."""

    host: str = opt("", doc="broker host name or address")
    port: int = opt(8883, lo=1, hi=65535, doc="broker port (8883: MQTT over TLS; 1883: plain)")
    tls: bool = opt(True, doc="connect with TLS and verify the broker's certificate")
    ca: str = opt("", doc="CA certificate (PEM) that signed the broker's; '' uses the system's")
    cert: str = opt("", doc="client certificate (PEM) for mutual TLS; '' sends none")
    key: str = opt("", doc="private key (PEM) of the client certificate")
    username: str = opt("", doc="user name; '' connects without one")
    password_file: str = opt("", doc="file holding the password; read at each connect, never "
                                     "logged")


@dataclass(frozen=True)
class MqttUploadConfig(BrokerConnection):
    """The MQTT broker clips are published to (upload.mode = "mqtt")."""

    topic_prefix: str = opt("edge-recorder", doc="clips go to <topic_prefix>/<device id>/clip; "
                                                 "kept apart from mqtt.base_topic so a fleet "
                                                 "dashboard reading edge/+/# never gets audio")
    protocol: str = opt("5", choices=("5", "3.1.1"), doc="MQTT version; 3.1.1 brokers get the "
                                                         "metadata in an envelope")
    timeout_s: float = opt(30.0, lo=1.0, hi=600.0, doc="seconds to wait for CONNACK or PUBACK")


@dataclass(frozen=True)
class HttpsUploadConfig:
    """The HTTPS receiver clips are POSTed to (upload.mode = "https")."""

    url: str = opt("", doc="https:// URL that takes one clip per POST (http:// only to loopback)")
    ca: str = opt("", doc="CA certificate (PEM) that signed the server's; '' uses the system's")
    cert: str = opt("", doc="client certificate (PEM) for mutual TLS; '' sends none")
    key: str = opt("", doc="private key (PEM) of the client certificate")
    token_file: str = opt("", doc="file holding a bearer token; read at each request, never logged")
    timeout_s: float = opt(30.0, lo=1.0, hi=600.0, doc="seconds of network silence before a "
                                                       "request fails")


@dataclass(frozen=True)
class UploadConfig:
    """What may leave the device: finished clips, after a detection, and nothing else."""

    mode: str = opt("off", choices=("off", "mqtt", "https"),
                    doc="'off': no audio ever leaves the device; 'mqtt' or 'https' upload clips")
    outbox_max_mb: float = opt(200.0, lo=1.0, hi=100000.0, doc="outbox bound in MB; beyond it "
                                                               "the oldest clip is dropped")
    outbox_max_clips: int = opt(1000, lo=1, hi=1000000, doc="outbox bound in clips; beyond it "
                                                            "the oldest clip is dropped")
    retry_min_s: float = opt(1.0, lo=0.01, hi=600.0, doc="first wait after a failed upload, in s")
    retry_max_s: float = opt(300.0, lo=0.01, hi=86400.0, doc="longest wait between upload "
                                                             "attempts, in s")
    retention_days: float = opt(30.0, lo=0.0, hi=3650.0,
                                doc="local clips, queued clips and kept activation audio older "
                                    "than this are deleted; 0 keeps them forever")
    encrypt_to: str = opt("", doc="public key (base64, from `edge decrypt --new-key`): clips are "
                                  "sealed to it before they touch the disk")
    mqtt: MqttUploadConfig = field(default_factory=MqttUploadConfig)
    https: HttpsUploadConfig = field(default_factory=HttpsUploadConfig)


@dataclass(frozen=True)
class ActivationsConfig:
    """The activation log: every wake recorded, false wakes flagged and counted."""

    enabled: bool = opt(True, doc="keep the activation log (SQLite, written only when an "
                                  "activation ends or listening starts or stops)")
    db: str = opt("activations.sqlite3", doc="the log's file; relative paths are under "
                                             "state_dir")
    keep_false_activation_audio: bool = opt(False, doc="keep the audio of likely-false wakes "
                                                       "(no speech, cancelled) in state_dir/"
                                                       "false_audio, for retraining; sealed "
                                                       "when upload.encrypt_to is set")
    checkpoint_s: float = opt(0.0, lo=0.0, hi=86400.0,
                              doc="seconds of listening between checkpoints of the listening "
                                  "time, so a power cut loses at most this much; 0 (default): "
                                  "none, strictly no disk writes between activations")
    verifier: str = opt("none", choices=("none", "score_margin"),
                        doc="second opinion on each wake: 'score_margin' rejects wakes barely "
                            "and briefly over the threshold")
    verifier_margin: float = opt(0.1, lo=0.0, hi=1.0, doc="score_margin: a peak this far over "
                                                          "the threshold is accepted")
    verifier_min_frames: int = opt(2, lo=1, hi=50, doc="score_margin: this many frames over "
                                                       "the threshold is accepted")


@dataclass(frozen=True)
class HardwareConfig:
    """The board: mute switch, recording indicator, chimes, cancel button (see hardware/)."""

    profile: str = opt("no-gpio", choices=("no-gpio", "respeaker-2mic-v1", "respeaker-2mic-v2",
                                           "respeaker-4mic", "respeaker-usb-4mic",
                                           "generic-usb"),
                       doc="the board; it sets the capture device, channel and pins that are "
                           "left at ''. 'no-gpio': a computer with no switch, LEDs or button")
    pin_factory: str = opt("auto", choices=("auto", "lgpio", "rpigpio", "native", "mock"),
                           doc="gpiozero pin library; 'mock' simulates every pin (tests, demo)")
    mute_pin: str = opt("", doc="mute switch pin, e.g. 'GPIO22'; '' takes the profile's; "
                                "'none' says this device has no switch (a HAT profile makes "
                                "you say which)")
    mute_pull: str = opt("up", choices=("up", "down", "floating"),
                         doc="the mute pin's pull resistor")
    mute_active_state: str = opt("high", choices=("high", "low", "auto"),
                                 doc="pin level that means muted; 'high' with a pull-up and the "
                                     "switch closing to ground to listen: a broken wire mutes. "
                                     "'auto' is the level opposite the pull")
    mute_bounce_s: float = opt(0.02, lo=0.0, hi=1.0, doc="mute switch debounce, in s")
    leds: str = opt("", choices=("", "none", "gpio", "pwm", "rgb", "apa102"),
                    doc="recording indicator: one LED, a dimmable one, an RGB LED, or APA102 "
                        "pixels on SPI; '' takes the profile's. Never 'none' while uploading")
    led_pins: tuple[str, ...] = opt((), doc="LED pins: one for gpio/pwm, red, green, blue for "
                                            "rgb; [] takes the profile's")
    led_active_high: bool = opt(True, doc="false for LEDs wired from 3V3 to the pin "
                                          "(common anode)")
    led_count: int = opt(0, lo=0, hi=255, doc="APA102 pixels; 0 takes the profile's")
    led_spi: str = opt("hardware", choices=("hardware", "software"),
                       doc="APA102 over the kernel's SPI (needs dtparam=spi=on), or bit-banged "
                           "on the same pins")
    led_power_pin: str = opt("", doc="pin that powers the APA102 pixels; '' takes the "
                                     "profile's; 'none' if there is none")
    led_power_active: str = opt("", choices=("", "high", "low"),
                                doc="level that powers the pixels; '' takes the profile's")
    led_brightness: float = opt(0.5, lo=0.05, hi=1.0, doc="indicator brightness while "
                                                          "recording, muted or in error")
    led_dim: float = opt(0.0, lo=0.0, hi=1.0, doc="brightness while listening (0: off)")
    chime: bool = opt(True, doc="a chime when recording starts and a different one when it "
                                "ends")
    chime_backend: str = opt("", choices=("", "pyaudio", "buzzer"),
                             doc="play chimes on an audio output (PyAudio) or a buzzer; '' "
                                 "takes the profile's")
    chime_device: str = opt("", doc="output device name substring or index; '' takes the "
                                    "profile's, else the default output")
    chime_pin: str = opt("", doc="buzzer pin for chime_backend = 'buzzer', e.g. 'GPIO13'")
    chime_volume: float = opt(0.3, lo=0.01, hi=1.0, doc="chime loudness (1: full scale)")
    chime_gate_margin_s: float = opt(0.3, lo=0.0, hi=2.0,
                                     doc="after a chime, seconds more in which nothing heard "
                                         "counts as speech or triggers (output and input "
                                         "latency)")
    button_pin: str = opt("", doc="'that wasn't for you' button (pressed = low); '' takes "
                                  "the profile's; 'none' if there is none")
    button_bounce_s: float = opt(0.05, lo=0.0, hi=1.0, doc="button debounce, in s")
    button_hold_s: float = opt(3.0, lo=0.0, hi=30.0, doc="holding the button this long toggles "
                                                         "a soft mute; 0 disables")
    cancel_window_s: float = opt(5.0, lo=0.0, hi=60.0,
                                 doc="a press this long after a recording ends still cancels "
                                     "it (the clip waits in memory until then)")

    def __post_init__(self) -> None:
        freeze(self)


@dataclass(frozen=True)
class MqttConfig(BrokerConnection):
    """Field testing over MQTT: status, state and activation events, commands, Home Assistant."""

    enabled: bool = opt(False, doc="connect to the broker below and publish under "
                                    "<base_topic>/<device id>/ (metadata only, never audio)")
    protocol: str = opt("5", choices=("5", "3.1.1"), doc="MQTT version")
    name: str = opt("", doc="a friendly name (up to 40 printable characters, e.g. 'kitchen "
                            "pi') sent in each state message and shown on the dashboard "
                            "beside the device id; '' sends none")
    base_topic: str = opt("edge", doc="topics are <base_topic>/<device id>/status, state, "
                                      "event/activation and cmd/<name>")
    state_interval_s: float = opt(60.0, lo=1.0, hi=3600.0, doc="seconds between state "
                                                              "messages (changes go at once)")
    discovery: bool = opt(True, doc="announce the device to Home Assistant (MQTT discovery)")
    discovery_prefix: str = opt("homeassistant", doc="Home Assistant's discovery prefix")
    threshold_min: float = opt(0.1, lo=THRESHOLD_FLOOR, hi=1.0, why_lo=FLOOR_WHY,
                               doc="lowest threshold cmd/set_threshold may set (never below "
                                   "the floor, 0.1)")
    threshold_max: float = opt(0.95, lo=THRESHOLD_FLOOR, hi=1.0, why_lo=FLOOR_WHY,
                               doc="highest threshold "
                                                         "cmd/set_threshold may set")
    allow_remote_unmute: bool = opt(False, doc="cmd/mute {\"on\": false} may clear a soft "
                                               "mute (off by default: nothing remote can "
                                               "unmute); it never clears the hardware switch")
    allow_purge: bool = opt(True, doc="cmd/purge (with its confirmation token) may delete "
                                      "the audio stored on the device")



@dataclass(frozen=True)
class WyomingConfig:
    """The Wyoming satellite (assist.mode = "wyoming"), unencrypted: loopback unless told.

    Home Assistant's or Rhasspy's Wyoming client connects to it. Wyoming has no encryption:
    it listens on this machine only unless ``host`` names another address."""

    host: str = opt("127.0.0.1", doc="address the satellite listens on ('127.0.0.1': this "
                                     "machine only; a LAN address or '0.0.0.0' lets others "
                                     "connect, unencrypted: `edge doctor` warns)")
    port: int = opt(10700, lo=1, hi=65535, doc="TCP port of the satellite (10700: Wyoming's)")
    area: str = opt("", doc="area the satellite is in, as the client shows it; '' says none")
    end_stage: str = opt("tts", choices=("asr", "intent", "handle", "tts"),
                         doc="last pipeline stage the client runs after the speech-to-text "
                             "('tts': it speaks an answer)")


@dataclass(frozen=True)
class SttConfig:
    """An OpenAI-compatible speech-to-text server (assist.mode = "stt").

    Each utterance is POSTed to it as one WAV (``/v1/audio/transcriptions``); the JSON
    answer's ``text`` is the transcript."""

    url: str = opt("", doc="the server's base URL, e.g. 'http://127.0.0.1:8000' "
                           "(/v1/audio/transcriptions is added); https:// to another machine")
    model: str = opt("whisper-1", doc="the model the server is asked for")
    language: str = opt("", doc="ISO 639-1 language of the speech, e.g. 'en'; '' lets the "
                                "server detect it")
    api_key_file: str = opt("", doc="file holding a bearer token; read at each request, never "
                                    "logged")
    ca: str = opt("", doc="CA certificate (PEM) that signed the server's; '' uses the system's")
    cert: str = opt("", doc="client certificate (PEM) for mutual TLS; '' sends none")
    key: str = opt("", doc="private key (PEM) of the client certificate")
    timeout_s: float = opt(60.0, lo=1.0, hi=600.0, doc="seconds of network silence before a "
                                                       "request fails (it is retried)")
    keep_transcripts: bool = opt(False, doc="keep each transcript's text in the activation "
                                            "log (off: only its length)")
    publish_transcripts: bool = opt(False, doc="publish each transcript on MQTT as "
                                               "<base_topic>/<id>/event/transcript")


@dataclass(frozen=True)
class AssistConfig:
    """Voice assistant: after a wake word, the utterance streams to an assistant.

    Over the ESPHome native API (Noise-encrypted), as a Wyoming satellite, or to a
    speech-to-text server. Off by default: no socket is opened."""

    mode: str = opt("off", choices=("off", "esphome", "wyoming", "stt"),
                    doc="'esphome': serve the ESPHome native API for Home Assistant; "
                        "'wyoming': serve a Wyoming satellite ([assist.wyoming]); 'stt': "
                        "send each utterance to a speech-to-text server ([assist.stt]); "
                        "'off': no assistant, no listening socket")
    host: str = opt("0.0.0.0", doc="address the API listens on ('0.0.0.0': every interface, "
                                   "'127.0.0.1': this machine only)")
    port: int = opt(6053, lo=1, hi=65535, doc="TCP port of the API (6053: ESPHome's)")
    name: str = opt("edge-recorder", doc="device name Home Assistant shows (lower-case "
                                         "letters, digits and '-', up to 31 characters)")
    key_file: str = opt("assist.key", doc="file holding the API encryption key (base64, 32 "
                                          "bytes; made 0600 on first use, printed by `edge "
                                          "assist key`); relative paths are under state_dir")
    allow_unencrypted: bool = opt(False, doc="also accept clients without the key (plaintext): "
                                             "anyone on the network could then stream what "
                                             "the device hears after a wake word")
    allow_remote_unmute: bool = opt(False, doc="Home Assistant's mute switch may clear a soft "
                                               "mute (off by default: it may mute, not "
                                               "unmute); it never clears the hardware switch")
    wyoming: WyomingConfig = field(default_factory=WyomingConfig)
    stt: SttConfig = field(default_factory=SttConfig)

    @property
    def listens_on(self) -> tuple[str, int] | None:
        """The address the mode listens on: host and port ([assist] for 'esphome',
        [assist.wyoming] for 'wyoming'); None when it opens no listening socket."""
        if self.mode == "esphome":
            return self.host, self.port
        if self.mode == "wyoming":
            return self.wyoming.host, self.wyoming.port
        return None


@dataclass(frozen=True)
class SecurityConfig:
    """Downgrades refused unless the owner opts out here; `edge doctor` lists each one set."""

    allow_plaintext_mqtt: bool = opt(False, doc="let [mqtt] (tls = false) reach a broker on "
                                                "another machine without TLS: status, events "
                                                "and commands travel readable and forgeable")
    allow_plaintext_upload: bool = opt(False, doc="let [upload.mqtt] (tls = false) send clips "
                                                  "to a broker on another machine without "
                                                  "TLS: the audio travels readable")
    allow_simulated_pins: bool = opt(False, doc="let a device that uploads use "
                                                "hardware.pin_factory = 'mock': no real mute "
                                                "switch or recording light")
    allow_silent_recording: bool = opt(False, doc="let a device that uploads record with "
                                                  "hardware.chime = false: nobody hears it start")


@dataclass(frozen=True)
class Config:
    """The whole configuration: one section per subsystem, and where state lives."""

    audio: AudioConfig = field(default_factory=AudioConfig)
    wake: WakeConfig = field(default_factory=WakeConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    upload: UploadConfig = field(default_factory=UploadConfig)
    activations: ActivationsConfig = field(default_factory=ActivationsConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    assist: AssistConfig = field(default_factory=AssistConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    state_dir: str = opt("", doc="where clips, logs and the outbox live; '' uses "
                                 "$STATE_DIRECTORY, else ~/.local/state/edge-recorder")
    log_level: str = opt("info", choices=("debug", "info", "warning", "error"),
                         doc="logging level")
    log_levels: Mapping[str, str] = opt({}, choices=("debug", "info", "warning", "error"),
                                        doc="per-module overrides of log_level, e.g. "
                                            "{ \"edge.upload.uploader\" = \"debug\" }")

    def __post_init__(self) -> None:
        freeze(self)

    @property
    def state_path(self) -> Path:
        if self.state_dir:
            return Path(self.state_dir).expanduser()
        env = os.environ.get("STATE_DIRECTORY")
        if env:
            return Path(env.split(":")[0])
        return Path.home() / ".local" / "state" / "edge-recorder"

    def under_state(self, p: str) -> Path:
        path = Path(p).expanduser()
        return path if path.is_absolute() else self.state_path / path
