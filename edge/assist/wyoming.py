"""The Wyoming satellite: Home Assistant's ``wyoming`` integration (or Rhasspy) connects to it.

Wyoming is one JSON header line per event, with optional data and a binary payload; the
``wyoming`` package (MIT, no dependencies) reads and writes those events, and this module
only translates them into calls on the hand-off core (edge.assist.turn), whose state it is.
It runs an asyncio loop on its own thread and is the core's ``Assistant``: ``begin``,
``audio`` and ``end`` are called on the audio thread and only schedule work on the loop.

A client says ``describe`` and gets ``info`` with a satellite block (name, area, the active
wake words); ``run-satellite`` makes it the one that takes turns (``pause-satellite`` is a
soft mute of the device: it never clears the hardware switch, and the following
``run-satellite`` lifts it only where ``assist.allow_remote_unmute`` lets a remote unmute
through); ``ping`` gets ``pong``.

A turn on the wire: ``detection`` (the wake word), ``run-pipeline`` (from the ASR stage to
``assist.wyoming.end_stage``), ``audio-start``, the pre-roll and live ``audio-chunk``s, and
``audio-stop`` when our VAD or the cap ends it. Wyoming has no way to withdraw an
utterance, and a client (Home Assistant) transcribes whatever came before ``audio-stop``:
so when a mute or a cancel aborts the turn, no ``audio-stop`` is sent; the device sends an
``error`` (code ``aborted``) and closes the connection, which makes the client drop the run
(it connects again, as it does after any disconnect). The client's ``transcript``,
``voice-stopped`` or ``error`` ends it on its side: nothing more is sent. The client's own
``audio-start``/``audio-chunk``/``audio-stop`` are the spoken answer (or an announcement):
played on ``audio.output`` by the ``AnswerPlayer`` (wake detection gated meanwhile), then
``played`` is sent. A ``timer-finished`` rings the ``TimerBell``.

Wyoming has no encryption: it listens on ``127.0.0.1`` unless ``assist.wyoming.host`` names
another address (``edge doctor`` warns then).
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edge import __version__
from edge.assist.answer import AnswerPlayer
from edge.assist.discovery import Advertisement
from edge.assist.server import LoopServer
from edge.assist.session import MuteControl
from edge.assist.turn import Turn, wake_phrase
from edge.audio.frames import SAMPLE_RATE
from edge.hardware.indicators import Look

if TYPE_CHECKING:  # the ESPHome server's protocols; its module is not imported here
    from edge.assist.esphome import TimerBell, TurnLights

log = logging.getLogger(__name__)

SERVICE = "_wyoming._tcp.local."
BY = "Wyoming (assist)"
"""Who the mute log names for a pause."""


@dataclass(frozen=True)
class WyomingSettings:
    host: str
    port: int
    name: str
    area: str
    end_stage: str
    """'asr', 'intent', 'handle' or 'tts': the last stage the client runs."""
    wake_words: tuple[str, ...]
    allow_remote_unmute: bool = False


class _Client:
    """One connection (loop thread): its writer and where it is."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername") or ("?", 0)
        self.peer = f"{peer[0]}:{peer[1]}"

    def send(self, event: Any) -> None:
        """Queue an event (a ``wyoming`` Eventable) on the stream; never waits."""
        from wyoming.event import write_event

        if not self.writer.is_closing():
            framed = io.BytesIO()
            write_event(event.event(), framed)  # the package's own framing, into memory
            self.writer.write(framed.getvalue())


class WyomingServer(LoopServer):
    """The satellite on its own thread, and the hand-off core's ``Assistant``."""

    PROTOCOL = "Wyoming"
    CLOSED = (ConnectionError, asyncio.IncompleteReadError, ValueError)

    def __init__(self, settings: WyomingSettings, mute: MuteControl,
                 on_end: Callable[[str, str], None], answer: AnswerPlayer | None = None,
                 lights: TurnLights | None = None, bell: TimerBell | None = None) -> None:
        super().__init__(settings.host, settings.port, "assist.wyoming", "assist-wyoming")
        self.settings = settings
        self.mute = mute
        self.on_end = on_end
        """``on_end(turn_id, why)``: the client ended a turn (the core posts it to the loop)."""
        self.answer = answer
        self.lights = lights
        """The indicator's turn phases, or None."""
        self.bell = bell
        """What rings when a timer finishes, or None."""
        self.clients: set[_Client] = set()
        self.satellite: _Client | None = None
        """The client that said run-satellite: it takes the turns."""
        self.live: tuple[str, _Client] | None = None
        """The turn on the wire (its id, its client); None between turns."""
        self.answering: _Client | None = None
        self.paused = False
        """A pause-satellite muted the device (soft); the next run-satellite may lift it."""
        self._destination = ""
        self._converter: Any = None

    # ---- the subsystem --------------------------------------------------------------------

    def start(self) -> None:
        """Listen (on its own thread); ``ConfigError`` when the address cannot be bound."""
        super().start()
        log.info("Wyoming satellite on %s:%d (unencrypted)", self.settings.host, self.port)

    def _advertise(self) -> Advertisement:
        """``<name>._wyoming._tcp.local.`` on mDNS, so Home Assistant offers to add it."""
        return Advertisement(SERVICE, self.settings.name, self.settings.host, self.port)

    def _disconnect_all(self) -> None:
        for client in list(self.clients):
            client.writer.close()

    def _open(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Client:
        client = _Client(reader, writer)
        self.clients.add(client)
        log.info("Wyoming client %s connected", client.peer)
        return client

    async def _converse(self, conn: _Client) -> None:
        from wyoming.event import async_read_event

        while (event := await async_read_event(conn.reader)) is not None:
            self.handle(conn, event)

    # ---- the Assistant (audio thread: schedule only) --------------------------------------

    def destination(self) -> str:
        return self._destination

    def begin(self, turn: Turn) -> None:
        if self.lights is not None:
            self.lights.show_turn(None)
        self._soon(self._begin, turn.id, turn.wake_word)

    def audio(self, turn: Turn, pcm: bytes) -> None:
        self._soon(self._audio, turn.id, pcm)

    def end(self, turn: Turn) -> None:
        if self.lights is not None:
            self.lights.show_turn(None if turn.aborted else Look.THINKING)
        self._soon(self._end, turn.id, turn.aborted)

    # ---- the loop thread ------------------------------------------------------------------

    def handle(self, client: _Client, event: Any) -> None:  # noqa: C901 - one branch per kind
        """One event from ``client``."""
        from wyoming import audio, error, info, ping, satellite, timer, vad
        from wyoming.asr import Transcript

        if info.Describe.is_type(event.type):
            client.send(self._info())
        elif ping.Ping.is_type(event.type):
            client.send(ping.Pong(text=ping.Ping.from_event(event).text))
        elif satellite.RunSatellite.is_type(event.type):
            self._run_satellite(client)
        elif satellite.PauseSatellite.is_type(event.type):
            self._pause(client)
        elif Transcript.is_type(event.type) or vad.VoiceStopped.is_type(event.type):
            self._stop_turn(client, "assistant")
        elif error.Error.is_type(event.type):
            log.warning("the Wyoming client reports an error: %s",
                        error.Error.from_event(event).text)
            self._stop_turn(client, "assistant")
            self._show(Look.ERROR)
        elif audio.AudioStart.is_type(event.type):
            self._answer_start(client)
        elif audio.AudioChunk.is_type(event.type):
            self._answer_chunk(client, audio.AudioChunk.from_event(event))
        elif audio.AudioStop.is_type(event.type):
            if self.answer is not None and self.answering is client:
                self.answer.end()  # once played, ``_played`` sends ``played``
        elif timer.TimerFinished.is_type(event.type):
            log.info("a timer finished")
            if self.bell is not None:
                self.bell.request_ring()
        elif event.type.startswith("timer-"):
            log.info("timer event %s %s", event.type, event.data or {})
        else:
            log.debug("Wyoming event %s ignored", event.type)

    def _info(self) -> Any:
        from wyoming.info import Attribution, Info, Satellite

        words = [wake_phrase(w) for w in self.settings.wake_words]
        return Info(satellite=Satellite(
            name=self.settings.name, description="edge-recorder satellite",
            attribution=Attribution(name="edge-recorder", url=""), installed=True,
            version=__version__, area=self.settings.area or None, has_vad=True,
            active_wake_words=words, max_active_wake_words=len(words),
            supports_trigger=False))

    def _run_satellite(self, client: _Client) -> None:
        self.satellite = client
        self._destination = f"wyoming://{client.peer}"
        if self.paused:
            self.paused = False
            # the hardware's one rule: a remote unmute is refused unless the owner opted in,
            # and it clears only the soft mute, never the switch
            self.mute.request_unmute(BY, remote=not self.settings.allow_remote_unmute)

    def _pause(self, client: _Client) -> None:
        if self.satellite is client:
            self.satellite, self._destination = None, ""
        self.paused = True
        self.mute.request_mute(BY)  # a turn on the wire ends before the next frame

    def _gone(self, client: _Client) -> None:
        self.clients.discard(client)
        if self.satellite is client:
            self.satellite, self._destination = None, ""
        if self.answer is not None and self.answering is client:
            self.answer.end()  # what was streamed still plays; nobody is told it did
            self.answering = None
        self._stop_turn(client, "disconnected")
        client.writer.close()

    def _begin(self, turn_id: str, wake_word: str) -> None:
        from wyoming.audio import AudioStart
        from wyoming.pipeline import PipelineStage, RunPipeline
        from wyoming.wake import Detection

        client = self.satellite
        if client is None:
            self.on_end(turn_id, "disconnected")
            return
        self.live = (turn_id, client)
        client.send(Detection(name=wake_word))
        client.send(RunPipeline(start_stage=PipelineStage.ASR,
                                end_stage=PipelineStage(self.settings.end_stage),
                                wake_word_name=wake_word))
        client.send(AudioStart(rate=SAMPLE_RATE, width=2, channels=1))

    def _audio(self, turn_id: str, pcm: bytes) -> None:
        from wyoming.audio import AudioChunk

        if self.live is not None and self.live[0] == turn_id:
            self.live[1].send(AudioChunk(rate=SAMPLE_RATE, width=2, channels=1, audio=pcm))

    def _end(self, turn_id: str, aborted: bool) -> None:
        from wyoming.audio import AudioStop
        from wyoming.error import Error

        if self.live is None or self.live[0] != turn_id:
            return
        client = self.live[1]
        self.live = None
        if not aborted:
            client.send(AudioStop())
            return
        client.send(Error(text="the utterance was withdrawn on the device (muted or "
                               "cancelled): drop it", code="aborted"))
        client.writer.close()  # the client's run ends with the connection, unanswered

    def _stop_turn(self, client: _Client, why: str) -> None:
        """The client ended the turn: nothing more is sent; the core closes it."""
        if self.live is not None and self.live[1] is client:
            turn_id = self.live[0]
            self.live = None
            self.on_end(turn_id, why)
            if why == "assistant":
                self._show(Look.THINKING)

    def _answer_start(self, client: _Client) -> None:
        from wyoming.audio import AudioChunkConverter

        if self.answer is None:
            log.warning("the assistant sent audio, but this device has no audio output")
            return
        self.answering = client
        self._converter = AudioChunkConverter(rate=SAMPLE_RATE, width=2, channels=1)
        self.answer.begin()
        self._show(Look.REPLYING)

    def _answer_chunk(self, client: _Client, chunk: Any) -> None:
        if self.answer is None or self.answering is not client:
            return
        if self._converter is None:  # chunks without an audio-start: take them as they come
            self._answer_start(client)
        self.answer.audio(self._converter.convert(chunk).audio)

    def answer_played(self) -> None:
        """The answer has played (the player's thread)."""
        self._soon(self._played)

    def _played(self) -> None:
        from wyoming.snd import Played

        self._converter = None
        client, self.answering = self.answering, None
        self._show(None)
        if client is not None and client in self.clients:
            client.send(Played())

    def _show(self, look: Look | None) -> None:
        if self.lights is not None:
            self.lights.request_turn_look(look)
