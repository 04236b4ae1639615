"""The ESPHome framing against hostile bytes: every input is a message, a clean refusal
(``ProtocolError``) or a short read; never another exception, never a hang. And our frames
read back as aioesphomeapi's own client writes and reads them."""

from __future__ import annotations

import asyncio

import pytest
from aioesphomeapi import api_pb2
from aioesphomeapi._frame_helper.packets import make_plain_text_packets
from hypothesis import given
from hypothesis import strategies as st

from edge.assist.framing import (
    MESSAGES,
    NoiseFrames,
    PlainFrames,
    ProtocolError,
    decode,
    encode,
    read_noise_frame,
    varint,
)
from tests.fixtures.fuzz import no_hang


def reader_of(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


async def read_plain_frames(data: bytes) -> list[object]:
    frames, reader, out = PlainFrames(), reader_of(data), []
    while True:
        try:
            type_id, payload = await frames.read(reader)
        except (ProtocolError, asyncio.IncompleteReadError):
            return out
        out.append(decode(type_id, payload))


@given(st.binary(max_size=400))
def test_any_bytes_are_messages_or_a_clean_refusal(data):
    with no_hang(5.0, "PlainFrames"):
        asyncio.run(read_plain_frames(data))  # it ends on the first refusal or short read


@given(st.integers(0, 2**16 - 1), st.binary(max_size=300))
def test_any_type_and_payload_decode_or_are_refused(type_id, payload):
    try:
        msg = decode(type_id, payload)
    except ProtocolError:
        return
    assert msg is None or type(msg) is MESSAGES[type_id]


@given(st.binary(max_size=300))
def test_noise_frames_of_any_bytes_end_cleanly(data):
    async def read() -> None:
        reader = reader_of(data)
        while True:
            await read_noise_frame(reader)

    with no_hang(5.0, "read_noise_frame"), pytest.raises((ProtocolError,
                                                         asyncio.IncompleteReadError)):
        asyncio.run(read())


@given(st.integers(0, 2**28 - 1))
def test_varints_round_trip(n):
    async def read() -> int:
        from edge.assist.framing import read_varint

        return await read_varint(reader_of(varint(n)))

    assert asyncio.run(read()) == n


def test_our_plaintext_frames_are_the_clients_frames():
    msg = api_pb2.VoiceAssistantAudio(data=b"\x01\x02" * 1280)
    ours = PlainFrames().pack(*encode(msg))
    theirs = b"".join(make_plain_text_packets([encode(msg)]))
    assert ours == theirs
    [back] = asyncio.run(read_plain_frames(ours))
    assert back == msg


def test_a_noise_frame_is_never_packed_over_its_length_field():
    frames = NoiseFrames(b"\x00" * 32, "x", "02:00:00:00:00:00")

    class Cipher:
        def encrypt(self, data: bytes) -> bytes:
            return data

    frames._noise = Cipher()
    frames.pack(*encode(api_pb2.VoiceAssistantAudio(data=b"\x00" * 60000)))
    with pytest.raises(ProtocolError, match="a frame of"):
        frames.pack(*encode(api_pb2.VoiceAssistantAudio(data=b"\x00" * 70000)))
