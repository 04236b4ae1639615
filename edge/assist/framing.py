"""The ESPHome native API on the wire: message ids, plaintext frames, and the Noise responder.

Messages are aioesphomeapi's generated protobuf classes (``aioesphomeapi.api_pb2``); their
ids are the ``id`` option each carries in the .proto (``api_options_pb2``). Two framings:

- plaintext: ``0x00``, varint length of the message, varint type, the message;
- Noise (``Noise_NNpsk0_25519_ChaChaPoly_SHA256``, the key as pre-shared key): frames of
  ``0x01``, a 2-byte big-endian length, the bytes. The client sends an empty hello frame and
  its handshake frame (``0x00`` + Noise message); we answer a server hello (``0x01``, our
  name, NUL, MAC address, NUL) and our handshake frame (``0x00`` + Noise message), or
  ``0x01`` + a reason on failure. Then each frame is one encrypted message: 2-byte type,
  2-byte length, the message.

aioesphomeapi has only the client side, so the responder is written here on the
``noiseprotocol`` package. Imported only when ``[assist] mode = "esphome"``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aioesphomeapi import api_options_pb2 as _options
from aioesphomeapi import api_pb2 as _messages
from google.protobuf.message import DecodeError, Message

NOISE_PROTOCOL = b"Noise_NNpsk0_25519_ChaChaPoly_SHA256"
PROLOGUE = b"NoiseAPIInit"
MAX_FRAME = 0xFFFF
"""The largest frame either framing carries (the Noise length field is 2 bytes)."""


class ProtocolError(Exception):
    """The peer broke the framing or the handshake; the connection is closed."""


api_pb2: Any = _messages
api_options_pb2: Any = _options
"""The generated modules (no type stubs: their attributes are made at import)."""


def _message_ids() -> tuple[dict[int, type[Message]], dict[type[Message], int]]:
    by_id: dict[int, type[Message]] = {}
    for name, descriptor in api_pb2.DESCRIPTOR.message_types_by_name.items():
        options = descriptor.GetOptions()
        if options.HasExtension(api_options_pb2.id):
            by_id[options.Extensions[api_options_pb2.id]] = getattr(api_pb2, name)
    return by_id, {cls: i for i, cls in by_id.items()}


MESSAGES, IDS = _message_ids()


def encode(msg: Message) -> tuple[int, bytes]:
    return IDS[type(msg)], msg.SerializeToString()


def decode(type_id: int, data: bytes) -> Message | None:
    """The message, or None for a type we do not know (a newer client's: ignored)."""
    cls = MESSAGES.get(type_id)
    if cls is None:
        return None
    msg = cls()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise ProtocolError(f"a {cls.__name__} that does not parse ({exc})") from None
    return msg


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


async def read_varint(reader: asyncio.StreamReader) -> int:
    value = 0
    for shift in range(0, 28, 7):  # 4 bytes at most: lengths are at most 16 bits
        b = (await reader.readexactly(1))[0]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value
    raise ProtocolError("a varint longer than 4 bytes")


class PlainFrames:
    """Plaintext framing (only with ``assist.allow_unencrypted``)."""

    encrypted = False

    async def read(self, reader: asyncio.StreamReader, first: bytes = b"") -> tuple[int, bytes]:
        indicator = first or await reader.readexactly(1)
        if indicator != b"\x00":
            raise ProtocolError(f"plaintext frame indicator {indicator!r}")
        length = await read_varint(reader)
        type_id = await read_varint(reader)
        if length > MAX_FRAME:
            raise ProtocolError(f"a frame of {length} bytes")
        return type_id, await reader.readexactly(length) if length else b""

    def pack(self, type_id: int, data: bytes) -> bytes:
        if len(data) > MAX_FRAME:
            raise ProtocolError(f"a frame of {len(data)} bytes")
        return b"\x00" + varint(len(data)) + varint(type_id) + data


def noise_frame(payload: bytes) -> bytes:
    if len(payload) > MAX_FRAME:
        raise ProtocolError(f"a frame of {len(payload)} bytes")
    return b"\x01" + len(payload).to_bytes(2, "big") + payload


async def read_noise_frame(reader: asyncio.StreamReader, first: bytes = b"") -> bytes:
    indicator = first or await reader.readexactly(1)
    if indicator != b"\x01":
        raise ProtocolError(f"encrypted frame indicator {indicator!r}")
    length = int.from_bytes(await reader.readexactly(2), "big")
    return await reader.readexactly(length) if length else b""


REFUSE_PLAINTEXT = noise_frame(b"\x01Plaintext is not accepted: set the API encryption key")
"""What a plaintext client gets when encryption is required: a Noise frame (its client
reports that the device requires encryption)."""


class NoiseFrames:
    """The Noise responder: the handshake, then one encrypted message per frame."""

    encrypted = True

    def __init__(self, psk: bytes, name: str, mac: str) -> None:
        self.psk = psk
        self.name = name
        self.mac = mac
        self._noise: Any = None

    async def handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        first: bytes) -> None:
        """Answer the client's hello and handshake; ``ProtocolError`` when it fails (a wrong
        key: the client is told 'Handshake MAC failure', as ESPHome devices tell it)."""
        from noise.connection import NoiseConnection

        hello = await read_noise_frame(reader, first)
        noise = NoiseConnection.from_name(NOISE_PROTOCOL)
        noise.set_as_responder()
        noise.set_psks(self.psk)
        # The prologue binds the client's hello to the handshake, as ESPHome's does.
        noise.set_prologue(PROLOGUE + len(hello).to_bytes(2, "big") + hello)
        noise.start_handshake()
        writer.write(noise_frame(b"\x01" + self.name.encode() + b"\x00" + self.mac.encode()
                                 + b"\x00"))
        message = await read_noise_frame(reader)
        if not message or message[0] != 0x00:
            writer.write(noise_frame(b"\x01Bad handshake frame"))
            raise ProtocolError("a handshake frame without its 0x00 marker")
        try:
            noise.read_message(message[1:])
        except Exception as exc:  # noiseprotocol and cryptography raise several kinds
            writer.write(noise_frame(b"\x01Handshake MAC failure"))
            raise ProtocolError(f"the handshake failed (wrong key?): "
                                f"{type(exc).__name__}") from None
        writer.write(noise_frame(b"\x00" + noise.write_message()))
        self._noise = noise

    async def read(self, reader: asyncio.StreamReader, first: bytes = b"") -> tuple[int, bytes]:
        frame = await read_noise_frame(reader, first)
        try:
            msg = self._noise.decrypt(frame)
        except Exception:
            raise ProtocolError("a frame that does not decrypt") from None
        if len(msg) < 4:
            raise ProtocolError("a decrypted message shorter than its header")
        return int.from_bytes(msg[:2], "big"), bytes(msg[4:])

    def pack(self, type_id: int, data: bytes) -> bytes:
        if len(data) > MAX_FRAME - 4 - 16:  # the header, and the cipher's tag
            raise ProtocolError(f"a frame of {len(data)} bytes")
        header = type_id.to_bytes(2, "big") + len(data).to_bytes(2, "big")
        return noise_frame(self._noise.encrypt(header + data))
