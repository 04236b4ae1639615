"""The ESPHome native API server: Home Assistant's ``esphome`` integration connects to it.

It runs an asyncio loop on its own thread and is the hand-off core's ``Assistant``: the
core calls ``begin``/``audio``/``end`` on the audio thread, and each only schedules work
on the loop. What the client sends that concerns a turn (the assistant's answer to our
request, its pipeline events) goes back to the core through ``on_end``, which posts to
the audio loop. Per connection (``Session``): the framing (Noise unless
``assist.allow_unencrypted`` lets a plaintext client in), hello, connect, device info, the
entities (a mute switch), state subscriptions, ping, disconnect, and the voice assistant
subscription with API audio.

A turn on the wire: ``VoiceAssistantRequest(start, wake word)``; the client answers
``VoiceAssistantResponse`` (audio is held until then); ``VoiceAssistantAudio`` chunks of
80 ms; then ``VoiceAssistantAudio(end)`` when our VAD or the cap ended it, or
``VoiceAssistantRequest(start=false)`` when a mute aborted it. The client's VAD end, STT
end, run end or error ends the turn on its side: nothing more is sent. The answer comes back
the same way: TTS stream start, ``VoiceAssistantAudio`` chunks, TTS stream end; they go to
the ``AnswerPlayer`` (edge.assist.answer), and ``VoiceAssistantAnnounceFinished`` says when
it has played. An answer named only by URL (TTS end's ``url``, with no stream started) is
fetched and played at the run's end, and reported the same way. When the intent end says
``continue_conversation`` (or an announcement says ``start_conversation``), the played
answer is followed, after the gate's margin, by the recorder's ``follow_up``: one turn with
no wake word, whose request carries the conversation's id.

The lights follow the turn (``TurnLights``, the hardware's indicator): the recording light
while the utterance streams (the recorder's own rule), then thinking until the answer
starts, replying while it plays, and error for ``ERROR_SHOW_S`` when the assistant fails.
Announcements (a sound by URL, ``edge.assist.media``) play through the same answer player;
a finished timer rings the ``TimerBell``; the client's wake-word choice goes to
``WakeWords``.

Why one module of over 400 lines: it is the one owner of the connection-wide state (the
voice session, the turn on the wire, the answer playing, the lights' phase) on the loop
thread; the protocol details are in ``session`` and ``framing``, the rules that need no
such state in ``wakewords``, ``media`` and ``answer``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from edge import __version__
from edge.assist.answer import GATE_MARGIN_S, AnswerPlayer
from edge.assist.discovery import Advertisement
from edge.assist.falsewakes import FalseWakesToday, seconds_to_midnight
from edge.assist.framing import NOISE_PROTOCOL, ProtocolError
from edge.assist.media import MediaError, fetch_audio
from edge.assist.server import LoopServer
from edge.assist.session import ESPHOME_VERSION, MuteControl, ServerSettings, Session, pb
from edge.assist.turn import Turn, wake_phrase
from edge.assist.wakewords import WakeWords
from edge.hardware.indicators import Look
from edge.pipeline.recorder import FOLLOW_UP

log = logging.getLogger(__name__)

SERVICE = "_esphomelib._tcp.local."
RESPONSE_TIMEOUT_S = 5.0
"""How long a turn waits for the client to accept it before it is dropped."""
STOP_EVENTS = frozenset({
    pb.VOICE_ASSISTANT_STT_VAD_END, pb.VOICE_ASSISTANT_STT_END, pb.VOICE_ASSISTANT_RUN_END,
    pb.VOICE_ASSISTANT_ERROR,
})
"""Pipeline events after which the assistant wants no more audio."""
HEARD_EVENTS = frozenset({pb.VOICE_ASSISTANT_STT_VAD_END, pb.VOICE_ASSISTANT_STT_END})
"""Pipeline events that say the assistant has the utterance: it is thinking."""
ERROR_SHOW_S = 3.0
"""Seconds the lights show an assistant's error before they go back to listening."""


class TurnLights(Protocol):
    """The indicator's turn phases (edge.hardware.HardwarePlugin)."""

    def show_turn(self, look: Look | None, recorder: Any = None) -> None:
        """Audio thread only."""
        ...

    def request_turn_look(self, look: Look | None) -> None:
        """Any thread: posted to the audio loop."""
        ...


class TimerBell(Protocol):
    """What rings when a timer finishes (edge.hardware.HardwarePlugin, its chime)."""

    @property
    def can_ring(self) -> bool: ...

    def request_ring(self) -> None:
        """Any thread: ring until the button is pressed, a wake word is heard, or a minute."""
        ...


def _fetch_all(urls: list[str]) -> list[Any]:
    return [fetch_audio(url) for url in urls]


@dataclass
class _Live:
    """The turn on the wire (loop thread only)."""

    turn_id: str
    session: Session
    answered: bool = False
    pending: list[bytes] = field(default_factory=list)
    ended: bool = False
    timer: asyncio.TimerHandle | None = None


class EsphomeServer(LoopServer):
    """The API server on its own thread, and the hand-off core's ``Assistant``."""

    PROTOCOL = "ESPHome API"
    CLOSED = (ProtocolError, ConnectionError, TimeoutError, asyncio.IncompleteReadError)

    def __init__(self, settings: ServerSettings, mute: MuteControl,
                 on_end: Callable[[str, str], None], answer: AnswerPlayer | None = None,
                 wake_words: WakeWords | None = None, lights: TurnLights | None = None,
                 bell: TimerBell | None = None, false_wakes: FalseWakesToday | None = None,
                 wall: Callable[[], float] = time.time) -> None:
        super().__init__(settings.host, settings.port, "assist", "assist-esphome")
        self.settings = settings
        self.false_wakes = false_wakes
        """The "False wakes today" sensor's count (loop thread); None: no sensor."""
        self._wall = wall
        self.mute = mute
        self.lights = lights
        self.bell = bell
        self.phase: Look | None = None
        """The turn's phase the lights show after its audio (loop thread)."""
        self.wake_words = wake_words
        """The wake words the client may choose among (None: only the configured ones)."""
        self.answer = answer
        """Plays the assistant's spoken answers (None: the device offers no speaker)."""
        self.answering: Session | None = None
        self._answer_url: tuple[Session, str] | None = None
        self._continue: Session | None = None
        """The client whose run (or announcement) asked to hear more once its answer has
        played: continue-conversation (loop thread)."""
        self._conversation_id = ""
        self.follow_up: Callable[[], None] | None = None
        """Starts a recording without a wake word (the recorder's ``follow_up``, posted to
        the audio loop); None: the device does not continue conversations."""
        """The answer's URL from the run's TTS end, played at its run end unless the answer
        streams (loop thread)."""
        self.on_end = on_end
        """``on_end(turn_id, why)``: the client ended a turn (the core posts it to the loop)."""
        self.muted = False
        self.sessions: set[Session] = set()
        self.voice: Session | None = None
        self.live: _Live | None = None
        self._destination = ""

    # ---- the subsystem --------------------------------------------------------------------

    def start(self) -> None:
        """Listen (on its own thread); ``ConfigError`` when the address cannot be bound."""
        super().start()
        log.info("ESPHome API on %s:%d (%s)", self.settings.host, self.port,
                 "Noise encryption" + (", plaintext also accepted"
                                       if self.settings.allow_unencrypted else " required"))

    def _advertise(self) -> Advertisement:
        s = self.settings
        return Advertisement(SERVICE, s.name, s.host, self.port, {
            "version": ESPHOME_VERSION, "mac": s.mac.replace(":", "").lower(),
            "platform": "host", "board": "edge-recorder", "network": "ethernet",
            "api_encryption": NOISE_PROTOCOL.decode(), "friendly_name": s.name,
            "project_name": "edge-recorder.satellite", "project_version": __version__})

    def _listening(self) -> None:
        self._at_midnight()

    def _disconnect_all(self) -> None:
        for session in list(self.sessions):
            session.send(pb.DisconnectRequest())  # as a device that restarts says
            session.close()

    def _open(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Session:
        session = Session(self, reader, writer)
        self.sessions.add(session)
        return session

    async def _converse(self, conn: Session) -> None:
        await conn.run()

    # ---- the Assistant (audio thread: schedule only) --------------------------------------

    def destination(self) -> str:
        return self._destination

    def begin(self, turn: Turn) -> None:
        if self.lights is not None:  # a new turn: the last one's phase is over
            self.lights.show_turn(None)
        self._soon(self._begin, turn.id, turn.wake_word)

    def audio(self, turn: Turn, pcm: bytes) -> None:
        self._soon(self._audio, turn.id, pcm)

    def end(self, turn: Turn) -> None:
        if self.lights is not None:  # before the recorder's state changes: no blink between
            self.lights.show_turn(None if turn.aborted else Look.THINKING)
        self._soon(self._end, turn.id, turn.aborted)

    def mute_changed(self, muted: bool) -> None:
        """The device muted or unmuted (any thread): the switch entity follows."""
        self._soon(self._mute_changed, muted)

    # ---- the loop thread ------------------------------------------------------------------

    def subscribe_voice(self, session: Session, on: bool) -> None:
        if on:
            self.voice = session
            self._destination = f"esphome://{session.peer}"
        elif self.voice is session:
            self.voice, self._destination = None, ""

    def _gone(self, session: Session) -> None:
        self.sessions.discard(session)
        if self.voice is session:
            self.voice, self._destination = None, ""
            if self.phase is not None:  # no answer will come
                self._show(None)
        if self.answer is not None and self.answering is session:
            self.answer.end()  # what was streamed still plays; nobody is told it did
        live = self.live
        if live is not None and live.session is session:
            self._drop(live, "disconnected")
        session.close()

    def _begin(self, turn_id: str, wake_word: str) -> None:
        session = self.voice
        if session is None:
            self.on_end(turn_id, "disconnected")
            return
        if self.live is not None:
            self._drop(self.live, "superseded", tell_core=False)
        live = _Live(turn_id, session)
        self.live = live
        follow_up = wake_word == FOLLOW_UP  # continues the conversation: no wake word
        session.send(pb.VoiceAssistantRequest(
            start=True, conversation_id=self._conversation_id if follow_up else "",
            flags=pb.VOICE_ASSISTANT_REQUEST_USE_VAD,
            audio_settings=pb.VoiceAssistantAudioSettings(),
            wake_word_phrase="" if follow_up else wake_phrase(wake_word)))
        assert self._loop is not None
        live.timer = self._loop.call_later(RESPONSE_TIMEOUT_S, self._unanswered, live)

    def _audio(self, turn_id: str, pcm: bytes) -> None:
        live = self.live
        if live is None or live.turn_id != turn_id:
            return  # the client ended it: nothing more goes out
        if live.answered:
            live.session.send(pb.VoiceAssistantAudio(data=pcm))
        else:
            live.pending.append(pcm)

    def _end(self, turn_id: str, aborted: bool) -> None:
        live = self.live
        if live is None or live.turn_id != turn_id:
            return
        self.phase = None if aborted else Look.THINKING  # the lights took it on the audio thread
        if aborted:
            live.pending.clear()
            self._finish(live)
            live.session.send(pb.VoiceAssistantRequest(start=False))
            return
        live.ended = True
        if live.answered:
            self._finish(live)
            live.session.send(pb.VoiceAssistantAudio(end=True))

    def answered(self, session: Session, msg: Any) -> None:
        live = self.live
        if live is None or live.session is not session or live.answered:
            return
        if msg.error or msg.port:
            log.warning("the assistant refused the turn (%s)", "it could not start a pipeline"
                        if msg.error else f"it asked for UDP audio on port {msg.port}, which "
                        "this device does not send: only audio over the API")
            session.send(pb.VoiceAssistantRequest(start=False))
            self._drop(live, "assistant_error")
            self._show(Look.ERROR)
            return
        live.answered = True
        if live.timer is not None:
            live.timer.cancel()
        for pcm in live.pending:
            session.send(pb.VoiceAssistantAudio(data=pcm))
        live.pending.clear()
        if live.ended:
            self._finish(live)
            session.send(pb.VoiceAssistantAudio(end=True))

    def pipeline_event(self, session: Session, msg: Any) -> None:
        data = {d.name: d.value for d in msg.data}
        log.debug("pipeline event %s %s", pb.VoiceAssistantEvent.Name(msg.event_type), data)
        if msg.event_type == pb.VOICE_ASSISTANT_RUN_START:
            self._answer_url = None
            if self._continue is session:
                self._continue = None
        elif msg.event_type == pb.VOICE_ASSISTANT_INTENT_END:
            self._conversation_id = data.get("conversation_id", "")
            if data.get("continue_conversation") == "1" and session is self.voice:
                self._continue = session
        elif msg.event_type == pb.VOICE_ASSISTANT_TTS_END and data.get("url") \
                and self.answer is not None and self.answering is not session:
            self._answer_url = (session, data["url"])
        elif msg.event_type == pb.VOICE_ASSISTANT_RUN_END and self._answer_url is not None \
                and self._answer_url[0] is session:
            self._play_urls(session, [self._answer_url[1]], "the answer")
            self._answer_url = None
        if self.answer is not None and msg.event_type == pb.VOICE_ASSISTANT_TTS_STREAM_START:
            self._answer_url = None  # it streams: the URL is the same answer
            self.answering = session
            self.answer.begin()
            self._show(Look.REPLYING)
        elif self.answer is not None and msg.event_type == pb.VOICE_ASSISTANT_TTS_STREAM_END \
                and self.answering is session:
            self.answer.end()  # once played, ``_played`` tells the assistant
        live = self.live
        if live is not None and live.session is session and msg.event_type in STOP_EVENTS:
            self._drop(live, "assistant")
            if msg.event_type in HEARD_EVENTS:
                self._show(Look.THINKING)
        if session is not self.voice:
            return
        if msg.event_type == pb.VOICE_ASSISTANT_ERROR:
            self._show(Look.ERROR)
        elif msg.event_type == pb.VOICE_ASSISTANT_RUN_END and self.answering is not session:
            if self.phase is Look.THINKING:
                self._show(None)  # over without a spoken answer; a playing one: ``_played``
            if self._continue is session:  # no answer to wait for
                self._listen_again(session)

    @property
    def speaks(self) -> bool:
        return self.answer is not None

    @property
    def rings(self) -> bool:
        return self.bell is not None and self.bell.can_ring

    def timer_event(self, msg: Any) -> None:
        """A timer the assistant keeps changed; a finished one rings the bell."""
        log.info("timer %r %s (%d of %d s left)", msg.name or msg.timer_id,
                 pb.VoiceAssistantTimerEvent.Name(msg.event_type), msg.seconds_left,
                 msg.total_seconds)
        if msg.event_type == pb.VOICE_ASSISTANT_TIMER_FINISHED and self.bell is not None:
            self.bell.request_ring()

    def announce(self, session: Session, msg: Any) -> None:
        """Play the sound the assistant names by URL (its chime first, if it names one),
        then tell it the announcement finished."""
        answer = self.answer
        if answer is None:
            log.warning("an announcement came, but this device has no audio output")
            session.send(pb.VoiceAssistantAnnounceFinished(success=False))
            return
        urls = [u for u in (msg.preannounce_media_id, msg.media_id) if u]
        if msg.start_conversation and session is self.voice:
            self._continue = session  # HA's start_conversation: listen once it has played
            self._conversation_id = ""
        self._play_urls(session, urls, "the announcement")

    def _play_urls(self, session: Session, urls: list[str], what: str) -> None:
        """Fetch the sounds at ``urls`` (on a worker thread), play them in order, then tell
        ``session`` they finished (``_played``); a sound that cannot be had is a failure."""
        answer = self.answer
        assert answer is not None and self._loop is not None
        self.answering = session  # claimed now: a run end meanwhile leaves the lights alone
        fetched = self._loop.run_in_executor(None, _fetch_all, urls)

        def play(future: asyncio.Future[Any]) -> None:
            try:
                sounds = future.result()
            except MediaError as exc:
                log.warning("%s could not be played: %s", what, exc)
                if self.answering is session:
                    self.answering = None
                    if self.phase is Look.THINKING:
                        self._show(None)
                if self._continue is session:  # nothing was said: nothing to answer
                    self._continue = None
                session.send(pb.VoiceAssistantAnnounceFinished(success=False))
                return
            if session not in self.sessions:
                return  # it went away while the sound was fetched
            self.answering = session  # once played, ``_played`` tells it
            answer.begin()
            for samples in sounds:
                answer.audio(samples.astype("<i2").tobytes())
            answer.end()
            self._show(Look.REPLYING)

        fetched.add_done_callback(play)

    def answer_audio(self, session: Session, pcm: bytes) -> None:
        """Audio from the assistant: its spoken answer, between TTS stream start and end."""
        if self.answer is not None and self.answering is session:
            self.answer.audio(pcm)

    def answer_played(self) -> None:
        """The answer has played (the player's thread)."""
        self._soon(self._played)

    def _played(self) -> None:
        if self.phase is Look.REPLYING:
            self._show(None)
        session, self.answering = self.answering, None
        if session is not None:
            session.send(pb.VoiceAssistantAnnounceFinished(success=True))
            if self._continue is session:
                self._listen_again(session)

    def _listen_again(self, session: Session) -> None:
        """Continue-conversation: the microphone reopens for one turn, with no wake word,
        once the answer's gate has passed (the device must not stream its own answer)."""
        self._continue = None
        if self.follow_up is None or session is not self.voice or self._loop is None:
            return
        log.info("the assistant asked to hear more: listening again, without a wake word")
        self._loop.call_later(GATE_MARGIN_S, self.follow_up)

    def _unanswered(self, live: _Live) -> None:
        if self.live is live and not live.answered:
            log.warning("the assistant did not accept the turn within %g s: dropped",
                        RESPONSE_TIMEOUT_S)
            self._show(Look.ERROR)
            live.session.send(pb.VoiceAssistantRequest(start=False))
            self._drop(live, "no_response")

    def _finish(self, live: _Live) -> None:
        if live.timer is not None:
            live.timer.cancel()
        if self.live is live:
            self.live = None

    def _drop(self, live: _Live, why: str, tell_core: bool = True) -> None:
        """Stop sending ``live`` at once; the core closes the turn (and its ledger entry)."""
        live.pending.clear()
        already_ended = live.ended
        self._finish(live)
        if tell_core and not already_ended:
            self.on_end(live.turn_id, why)

    def choose_wake_words(self, ids: list[str]) -> None:
        """The client chose the active wake words: refused whole when one is unknown; else
        the detector is built on a worker thread, then handed to the audio loop."""
        words = self.wake_words
        if words is None:
            log.warning("the assistant chose the wake words %s: refused, this device cannot "
                        "change them", ids)
            return
        why = words.refusal(ids)
        if why:
            log.warning("the assistant chose the wake words %s: refused (%s)", ids, why)
            return
        if tuple(ids) == words.active:
            return
        assert self._loop is not None
        built = self._loop.run_in_executor(None, words.build, ids)

        def done(future: asyncio.Future[Any]) -> None:
            try:
                detector = future.result()
            except Exception as exc:  # a model that no longer loads: the old words stay
                log.error("the wake words %s could not be loaded (%s): still listening for %s",
                          ids, exc, ", ".join(words.active))
                return
            words.use(ids, detector)
            log.info("the assistant chose the wake words: now listening for %s",
                     ", ".join(ids))

        built.add_done_callback(done)

    def _show(self, look: Look | None) -> None:
        """The turn's phase on the lights (loop thread); an error shows for a while."""
        self.phase = look
        if self.lights is not None:
            self.lights.request_turn_look(look)
        if look is Look.ERROR and self._loop is not None:
            self._loop.call_later(ERROR_SHOW_S, self._error_shown)

    def _error_shown(self) -> None:
        if self.phase is Look.ERROR:
            self._show(None)

    def false_wakes_today(self) -> int | None:
        return None if self.false_wakes is None else self.false_wakes.value(self._wall())

    def activation_ended(self, likely_false: bool, wall_time: float) -> None:
        """An activation ended (any thread): the sensor counts it if it was false."""
        self._soon(self._activation_ended, likely_false, wall_time)

    def _activation_ended(self, likely_false: bool, wall_time: float) -> None:
        if self.false_wakes is not None and self.false_wakes.ended(likely_false, wall_time):
            for session in self.sessions:
                session.send_false_wakes()

    def _at_midnight(self) -> None:
        """Each local midnight the sensor goes back to 0 (sent then, not at the next wake)."""
        if self.false_wakes is None or self._loop is None:
            return
        for session in self.sessions:
            session.send_false_wakes()
        self._loop.call_later(seconds_to_midnight(self._wall()) + 1.0, self._at_midnight)

    def _mute_changed(self, muted: bool) -> None:
        self.muted = muted
        for session in self.sessions:
            session.send_mute_state()
