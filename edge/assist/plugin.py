"""The assist subsystem as the composition root builds it: the hand-off core and its server.

``AssistPlugin.build`` is called only when ``[assist] mode`` is not 'off'; with it off,
nothing here is imported and no socket is opened. The plugin is the recorder's
``RecordingTap`` (through its ``handoff``), an event-bus subscriber (the mute switch entity
follows ``MuteChanged``) and a daemon subsystem (``start`` listens, ``close`` stops).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from edge.activations.store import db_path
from edge.assist.falsewakes import FalseWakesToday, false_wakes_logged
from edge.assist.keys import decode_key, key_path, load_or_create_key
from edge.assist.naming import check_name, local_mac
from edge.assist.turn import HandOff
from edge.clock import Clock
from edge.config import Config
from edge.config.rules import is_loopback
from edge.errors import AudioDeviceError, ConfigError
from edge.pipeline.events import ActivationEnded, Event, MuteChanged
from edge.pipeline.runner import Commands
from edge.privacy.identity import device_id as stored_device_id
from edge.privacy.ledger import Ledger
from edge.privacy.places import ledger_path

if TYPE_CHECKING:
    from edge.assist.answer import AnswerPlayer, Speaker
    from edge.assist.esphome import EsphomeServer, TimerBell, TurnLights
    from edge.assist.session import MuteControl
    from edge.assist.stt import SttClient
    from edge.assist.wyoming import WyomingServer
    from edge.pipeline.recorder import Recorder, RecordingTap
    from edge.wake.models import ModelStore
    from edge.wake.policy import ScoreRun

log = logging.getLogger(__name__)

_Server = TypeVar("_Server", "EsphomeServer", "WyomingServer")


def output_speaker(output: str, key: str = "audio.output") -> Speaker | None:
    """The answers' output device (``key`` named it); None for 'none', or for '' on a machine
    with no output (logged: the answers are not played). A named device that is missing is a
    ConfigError."""
    if output == "none":
        return None
    from edge.assist.answer import PyAudioSpeaker

    try:
        return PyAudioSpeaker(output, key)
    except (ConfigError, AudioDeviceError) as exc:
        if output:
            raise ConfigError(str(exc)) from None
        log.warning("no audio output (%s): the assistant's answers are not played", exc)
        return None


def _needs_extra(mode: str, exc: ImportError) -> ConfigError:
    """The one line for a satellite whose packages (the assist extra) are not installed."""
    return ConfigError(f"assist.mode = {mode!r} needs the assist extra ({exc.name or exc}): "
                       "pip install 'edge-recorder[assist]', or set assist.mode = 'off'")


def _satellite(cfg: Config, commands: Commands, clock: Clock, speaker: Speaker | None,
               publish: Callable[[Event], None],
               make: Callable[[Callable[[str, str], None], AnswerPlayer | None], _Server],
               ) -> tuple[HandOff, _Server, AnswerPlayer | None]:
    """The hand-off core on the server ``make(on_end, answer)`` builds, and the player of
    its answers (None without an output); each tells the other, once both exist."""
    from edge.assist.answer import AnswerPlayer

    handoff: HandOff | None = None
    server: _Server | None = None

    def ended_by_assistant(turn_id: str, why: str) -> None:
        assert handoff is not None
        handoff.end_soon(turn_id, why)

    def played() -> None:
        assert server is not None
        server.answer_played()

    if speaker is None and cfg.audio.output != "none":
        from edge.assist.answer import answer_device

        speaker = output_speaker(*answer_device(cfg))
    answer = AnswerPlayer(speaker, commands, played) if speaker is not None else None
    server = make(ended_by_assistant, answer)
    handoff = HandOff(server, Ledger(ledger_path(cfg), clock), commands, clock, publish)
    return handoff, server, answer


def _follow_up(recorder: Recorder) -> None:
    """Continue-conversation (the audio thread): a recording without a wake word."""
    recorder.follow_up()


class AssistPlugin:
    """The hand-off core and its server (ESPHome or Wyoming), or the speech-to-text client,
    started and closed with the daemon."""

    def __init__(self, handoff: HandOff | None, server: EsphomeServer | WyomingServer | None,
                 answer: AnswerPlayer | None = None, stt: SttClient | None = None,
                 entities: EsphomeServer | None = None) -> None:
        self.handoff = handoff
        self.server = server
        self.answer = answer
        self.stt = stt
        self.entities = entities
        """The server whose entities follow the device (ESPHome's mute switch and sensor)."""
        self.tap: RecordingTap = stt.tap if stt is not None else handoff  # type: ignore[assignment]
        """What the recorder tells of each recording: the hand-off, or the STT's tap."""

    @classmethod
    def build(cls, cfg: Config, commands: Commands, clock: Clock,
              mute: MuteControl, wake_words: Sequence[str],
              device_id: str | None = None, speaker: Speaker | None = None,
              publish: Callable[[Event], None] = lambda _event: None,
              store: ModelStore | None = None,
              on_run_end: Callable[[ScoreRun], None] | None = None,
              lights: TurnLights | None = None,
              bell: TimerBell | None = None) -> AssistPlugin:
        """Everything ``[assist]`` asks for; ``speaker``: where answers play (None: the
        ``audio.output`` device); ``publish``: the event bus (each streamed turn);
        ``store`` and ``on_run_end``: the wake words Home Assistant may choose, and the hook
        their detector's policy calls (as the composition root's); ``lights``: the indicator
        that shows the turn's phases; ``bell``: what rings when a timer finishes."""
        if cfg.assist.mode == "stt":
            return cls.build_stt(cfg, clock, publish)
        if cfg.assist.mode == "wyoming":
            return cls.build_wyoming(cfg, commands, clock, mute, wake_words, speaker, publish,
                                     lights, bell)
        try:
            from edge.assist.answer import AnswerPlayer  # noqa: F401 - the extra's check
            from edge.assist.esphome import EsphomeServer
            from edge.assist.session import ServerSettings
            from edge.assist.wakewords import WakeWords
            from edge.wake.detector import model_store
        except ImportError as exc:  # the assist extra is not installed
            raise _needs_extra(cfg.assist.mode, exc) from None

        a = cfg.assist
        path = key_path(cfg)
        key = decode_key(load_or_create_key(path), f"assist.key_file {path}")
        ident = device_id or stored_device_id(cfg.state_path)
        settings = ServerSettings(a.host, a.port, check_name(a.name), local_mac(ident), key,
                                  a.allow_unencrypted, tuple(wake_words),
                                  allow_remote_unmute=a.allow_remote_unmute)

        def make(on_end: Callable[[str, str], None],
                 answer: AnswerPlayer | None) -> EsphomeServer:
            words = WakeWords(cfg.wake, store or model_store(cfg.wake), wake_words, commands,
                              on_run_end)
            now = clock.wall()
            logged = false_wakes_logged(db_path(cfg), now) if cfg.activations.enabled else 0
            return EsphomeServer(settings, mute, on_end, answer, words, lights, bell,
                                 FalseWakesToday(logged, now), clock.wall)

        handoff, server, answer = _satellite(cfg, commands, clock, speaker, publish, make)
        server.follow_up = lambda: commands.post(_follow_up)
        if a.allow_unencrypted:
            log.warning("assist.allow_unencrypted = true: a client without the key may connect "
                        "and receive what the device hears after each wake word")
        return cls(handoff, server, answer, entities=server)

    @classmethod
    def build_wyoming(cls, cfg: Config, commands: Commands, clock: Clock, mute: MuteControl,
                      wake_words: Sequence[str], speaker: Speaker | None,
                      publish: Callable[[Event], None], lights: TurnLights | None,
                      bell: TimerBell | None) -> AssistPlugin:
        """The Wyoming satellite ([assist.wyoming]) on the hand-off core."""
        try:
            from edge.assist.answer import AnswerPlayer  # noqa: F401 - the extra's check
            from edge.assist.wyoming import WyomingServer, WyomingSettings
        except ImportError as exc:  # the assist extra is not installed
            raise _needs_extra("wyoming", exc) from None
        a, w = cfg.assist, cfg.assist.wyoming
        settings = WyomingSettings(w.host, w.port, check_name(a.name), w.area, w.end_stage,
                                   tuple(wake_words), a.allow_remote_unmute)
        handoff, server, answer = _satellite(
            cfg, commands, clock, speaker, publish,
            lambda on_end, answer: WyomingServer(settings, mute, on_end, answer, lights, bell))
        if not is_loopback(w.host):
            log.warning("assist.wyoming.host = %r: any machine that reaches it may connect, "
                        "unencrypted, and receive what the device hears after each wake word",
                        w.host)
        return cls(handoff, server, answer)

    @classmethod
    def build_stt(cls, cfg: Config, clock: Clock,
                  publish: Callable[[Event], None]) -> AssistPlugin:
        """Each utterance to the speech-to-text server ([assist.stt]): no listening socket."""
        from edge.assist.stt import SttClient

        return cls(None, None, stt=SttClient(cfg, clock, publish))

    @property
    def port(self) -> int:
        """The port the server listens on (after ``start``); 0 for speech-to-text."""
        return self.server.port if self.server is not None else 0

    def on_event(self, event: Event) -> None:
        """The event bus (its own thread): the mute switch entity follows the device's mute;
        the false-wakes sensor counts each activation's end (ESPHome's entities)."""
        server = self.entities
        if server is None:
            return
        if isinstance(event, MuteChanged):
            server.mute_changed(event.muted)
        elif isinstance(event, ActivationEnded):
            server.activation_ended(event.likely_false, event.wall_time)

    def start(self) -> None:
        if self.server is not None:
            self.server.start()
        if self.stt is not None:
            self.stt.start()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        if self.stt is not None:
            self.stt.close()
        if self.answer is not None:
            self.answer.close()
        if self.handoff is not None:
            self.handoff.ledger.close()
