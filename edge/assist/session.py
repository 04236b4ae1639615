"""One ESPHome API client connection: the framing, then one reply per request.

The first byte says the framing: ``0x01`` Noise (the handshake with our key), ``0x00``
plaintext, accepted only with ``assist.allow_unencrypted`` (otherwise the client is told
that the device needs the key, and the connection is closed). Then: hello, connect, device
info (the name from ``assist.name``, a MAC address derived from the pseudonymous device id),
the entities (a mute switch), state subscriptions, ping, disconnect, and the voice assistant
subscription and messages, which go to the server that owns the turn (``SessionOwner``).
Anything else a client sends is ignored, as an ESPHome device ignores what it does not
implement.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Protocol

from aioesphomeapi import api_pb2
from google.protobuf.message import Message

from edge import __version__
from edge.assist.framing import (
    REFUSE_PLAINTEXT,
    NoiseFrames,
    PlainFrames,
    ProtocolError,
    decode,
    encode,
)
from edge.assist.turn import wake_phrase
from edge.assist.wakewords import WakeWords

log = logging.getLogger(__name__)

pb: Any = api_pb2
"""The generated messages (no type stubs: their attributes are made at import)."""

API_VERSION = (1, 12)
ESPHOME_VERSION = "2025.9.0"
"""What device info reports as the firmware version: the ESPHome release whose API we speak."""
FEATURE_VOICE_ASSISTANT = 1 << 0
FEATURE_SPEAKER = 1 << 1
FEATURE_API_AUDIO = 1 << 2
FEATURE_TIMERS = 1 << 3
FEATURE_ANNOUNCE = 1 << 4
FEATURE_START_CONVERSATION = 1 << 5
HANDSHAKE_TIMEOUT_S = 30.0
"""How long a new connection may take to say hello and finish the handshake."""
MUTE_KEY = 1
"""The mute switch entity's key."""
FALSE_WAKES_KEY = 2
"""The "False wakes today" sensor's key."""


class MuteControl(Protocol):
    """The hardware's mute (edge.hardware.HardwarePlugin): requests posted to the audio loop."""

    def request_mute(self, by: str) -> None: ...

    def request_unmute(self, by: str, remote: bool = True) -> None: ...


@dataclass(frozen=True)
class ServerSettings:
    host: str
    port: int
    name: str
    mac: str
    psk: bytes
    allow_unencrypted: bool
    wake_words: tuple[str, ...]
    allow_remote_unmute: bool = False
    """``assist.allow_remote_unmute``: the owner lets the mute switch entity clear a soft mute."""


class SessionOwner(Protocol):
    """The server a session belongs to (edge.assist.esphome.EsphomeServer)."""

    settings: ServerSettings
    muted: bool
    mute: MuteControl

    def subscribe_voice(self, session: Session, on: bool) -> None: ...

    def answered(self, session: Session, msg: Any) -> None: ...

    def pipeline_event(self, session: Session, msg: Any) -> None: ...

    def answer_audio(self, session: Session, pcm: bytes) -> None: ...

    def choose_wake_words(self, ids: list[str]) -> None: ...

    def announce(self, session: Session, msg: Any) -> None: ...

    def false_wakes_today(self) -> int | None:
        """The sensor's value now; None: the device has no such sensor."""
        ...

    def timer_event(self, msg: Any) -> None: ...

    @property
    def rings(self) -> bool:
        """Whether the device rings when a timer finishes."""
        ...

    @property
    def wake_words(self) -> WakeWords | None:
        """The wake words a client may choose among; None: only the configured ones."""
        ...

    @property
    def speaks(self) -> bool:
        """Whether the device plays the assistant's answers."""
        ...


class Session:
    """One client connection (loop thread)."""

    def __init__(self, server: SessionOwner, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.frames: PlainFrames | NoiseFrames | None = None
        self.states = False
        self._closed = False

    async def run(self) -> None:
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):  # a silent peer holds no connection
            frames, pending = await self._open()
        self.frames = frames
        log.info("ESPHome API client %s connected (%s)", self.peer,
                 "encrypted" if frames.encrypted else "PLAINTEXT")
        while not self._closed:
            type_id, data = await frames.read(self.reader, pending)
            pending = b""
            msg = decode(type_id, data)
            if msg is None:
                log.debug("ignoring message type %d from %s", type_id, self.peer)
                continue
            self.handle(msg)
            await self.writer.drain()

    async def _open(self) -> tuple[PlainFrames | NoiseFrames, bytes]:
        """The framing the client chose, after the handshake; and a byte already read."""
        s = self.server.settings
        first = await self.reader.readexactly(1)
        if first == b"\x01":
            noise = NoiseFrames(s.psk, s.name, s.mac)
            try:
                await noise.handshake(self.reader, self.writer, first)
            finally:
                await self.writer.drain()
            return noise, b""
        if first == b"\x00" and s.allow_unencrypted:
            return PlainFrames(), first
        self.writer.write(REFUSE_PLAINTEXT)
        await self.writer.drain()
        raise ProtocolError("refused: plaintext (the API needs the encryption key)")

    def send(self, *msgs: Message) -> None:
        if self._closed or self.frames is None:
            return
        self.writer.write(b"".join(self.frames.pack(*encode(m)) for m in msgs))

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.writer.close()

    def send_mute_state(self) -> None:
        if self.states:
            self.send(pb.SwitchStateResponse(key=MUTE_KEY, state=self.server.muted))

    def send_false_wakes(self) -> None:
        count = self.server.false_wakes_today()
        if self.states and count is not None:
            self.send(pb.SensorStateResponse(key=FALSE_WAKES_KEY, state=float(count)))

    def handle(self, msg: Message) -> None:  # noqa: C901 - one branch per message kind
        server, s = self.server, self.server.settings
        if isinstance(msg, pb.HelloRequest):
            self.send(pb.HelloResponse(api_version_major=API_VERSION[0],
                                       api_version_minor=API_VERSION[1],
                                       server_info=f"edge-recorder {__version__}", name=s.name))
        elif isinstance(msg, pb.AuthenticationRequest):
            self.send(pb.AuthenticationResponse(invalid_password=False))
        elif isinstance(msg, pb.PingRequest):
            self.send(pb.PingResponse())
        elif isinstance(msg, pb.DisconnectRequest):
            self.send(pb.DisconnectResponse())
            self.close()
        elif isinstance(msg, pb.DeviceInfoRequest):
            self.send(self._device_info())
        elif isinstance(msg, pb.ListEntitiesRequest):
            self.send(*self._entities(), pb.ListEntitiesDoneResponse())
        elif isinstance(msg, pb.SubscribeStatesRequest):
            self.states = True
            self.send_mute_state()
            self.send_false_wakes()
        elif isinstance(msg, pb.SwitchCommandRequest):
            self._switch(msg)
        elif isinstance(msg, pb.SubscribeVoiceAssistantRequest):
            # Whether the audio goes over the API is settled per turn, by the port in the
            # client's answer (0: over the API); the flags' encoding differs between versions.
            server.subscribe_voice(self, msg.subscribe)
        elif isinstance(msg, pb.VoiceAssistantResponse):
            server.answered(self, msg)
        elif isinstance(msg, pb.VoiceAssistantEventResponse):
            server.pipeline_event(self, msg)
        elif isinstance(msg, pb.VoiceAssistantAudio):
            server.answer_audio(self, msg.data)
        elif isinstance(msg, pb.VoiceAssistantConfigurationRequest):
            self.send(self._wake_word_configuration())
        elif isinstance(msg, pb.VoiceAssistantSetConfiguration):
            server.choose_wake_words(list(msg.active_wake_words))
        elif isinstance(msg, pb.VoiceAssistantAnnounceRequest):
            server.announce(self, msg)
        elif isinstance(msg, pb.VoiceAssistantTimerEventResponse):
            server.timer_event(msg)
        else:
            log.debug("ignoring %s from %s", type(msg).__name__, self.peer)

    def _entities(self) -> list[Message]:
        entities = [pb.ListEntitiesSwitchResponse(
            object_id="mute", key=MUTE_KEY, name="Mute", icon="mdi:microphone-off",
            entity_category=pb.ENTITY_CATEGORY_CONFIG)]
        if self.server.false_wakes_today() is not None:
            entities.append(pb.ListEntitiesSensorResponse(
                object_id="false_wakes_today", key=FALSE_WAKES_KEY, name="False wakes today",
                icon="mdi:ear-hearing-off", accuracy_decimals=0,
                state_class=pb.STATE_CLASS_TOTAL_INCREASING,
                entity_category=pb.ENTITY_CATEGORY_DIAGNOSTIC))
        return entities

    def _wake_word_configuration(self) -> Message:
        words = self.server.wake_words
        available, active = ((words.available, words.active) if words is not None else
                             (self.server.settings.wake_words,) * 2)
        return pb.VoiceAssistantConfigurationResponse(
            available_wake_words=[pb.VoiceAssistantWakeWord(
                id=w, wake_word=wake_phrase(w), trained_languages=["en"]) for w in available],
            active_wake_words=list(active),
            max_active_wake_words=words.max_active if words is not None else len(active))

    def _device_info(self) -> Message:
        s = self.server.settings
        return pb.DeviceInfoResponse(
            uses_password=False, name=s.name, friendly_name=s.name, mac_address=s.mac,
            esphome_version=ESPHOME_VERSION, model="edge-recorder", manufacturer="edge-recorder",
            project_name="edge-recorder.satellite", project_version=__version__,
            voice_assistant_feature_flags=FEATURE_VOICE_ASSISTANT | FEATURE_API_AUDIO
            | (FEATURE_SPEAKER | FEATURE_ANNOUNCE | FEATURE_START_CONVERSATION
               if self.server.speaks else 0)
            | (FEATURE_TIMERS if self.server.rings else 0),
            api_encryption_supported=True)

    def _switch(self, msg: Any) -> None:
        if msg.key != MUTE_KEY:
            return
        if msg.state:
            self.server.mute.request_mute("Home Assistant (assist)")
        else:
            # The hardware's one rule (edge.hardware.mute): a remote unmute is refused; with
            # the owner's opt-in it is a local one, as an MQTT unmute with
            # mqtt.allow_remote_unmute, and clears only the soft mute, never the switch. The
            # state is sent back at once (a refused unmute changes nothing, so nothing else
            # would tell the client).
            self.server.mute.request_unmute("Home Assistant (assist)",
                                            remote=not self.server.settings.allow_remote_unmute)
            self.send_mute_state()
