"""Fuzzing audio files: garbage, truncated and bit-flipped WAV/FLAC, and WAV headers that lie.

Every file given to ``FileSource`` (``edge run --input``, ``edge replay``, ``edge measure``)
must end in an ``AudioFormatError`` naming the file, or in whole 80 ms int16 frames and
then the end of the stream; never another exception, a hang or unbounded memory. The same
files then go through ``edge replay``'s per-file path (the recorder included), which must
end in exit status 0 or 1 with a one-line error.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from hypothesis import example, given
from hypothesis import strategies as st

from edge.audio.file import FileSource
from edge.audio.frames import FRAME_SAMPLES
from edge.config import Config
from edge.errors import AudioFormatError
from tests.fixtures.fuzz import no_hang
from tests.fuzz_strategies import extreme_wavs, wav_bytes

MAX_FRAMES = 20_000
"""Far more than any fuzzed file can hold (each is at most a few hundred kB)."""


@functools.cache
def real_files() -> dict[str, bytes]:
    """Half a second of noise as WAV (16 kHz mono, 44.1 kHz stereo) and FLAC."""
    rng = np.random.default_rng(1)
    out = {}
    for name, rate, channels, fmt, subtype in (
            ("mono.wav", 16000, 1, "WAV", "PCM_16"), ("stereo.wav", 44100, 2, "WAV", "PCM_24"),
            ("float.wav", 48000, 1, "WAV", "FLOAT"), ("mono.flac", 16000, 1, "FLAC", "PCM_16")):
        data = rng.uniform(-0.5, 0.5, (rate // 2, channels)).astype(np.float32)
        buf = io.BytesIO()
        sf.write(buf, data, rate, format=fmt, subtype=subtype)
        out[name] = buf.getvalue()
    return out


def truncated() -> st.SearchStrategy[tuple[str, bytes]]:
    def cut(name: str, at: int) -> tuple[str, bytes]:
        data = real_files()[name]
        return name, data[: at % (len(data) + 1)]

    return st.builds(cut, st.sampled_from(sorted(real_files())), st.integers(0, 10**6))


def flipped() -> st.SearchStrategy[tuple[str, bytes]]:
    def flip(name: str, edits: list[tuple[int, int]]) -> tuple[str, bytes]:
        data = bytearray(real_files()[name])
        for at, value in edits:
            # most edits land in the header, where a lie does the most damage
            data[at % min(len(data), 128 if value & 1 else len(data))] = value
        return name, bytes(data)

    return st.builds(flip, st.sampled_from(sorted(real_files())),
                     st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)),
                              min_size=1, max_size=8))


FILES = st.one_of(
    st.tuples(st.sampled_from(["garbage.wav", "garbage.flac", "garbage"]),
              st.binary(max_size=2048)),
    truncated(),
    flipped(),
    st.tuples(st.just("extreme.wav"), extreme_wavs()),
)


def frames_of(path: Path) -> int | AudioFormatError:
    """Read the whole file through FileSource; the frame count, or the error it raised."""
    with no_hang(10.0, f"FileSource({path.name})"):
        try:
            src = FileSource(path)
        except AudioFormatError as exc:
            return exc
        n = 0
        try:
            while (frame := src.read()) is not None:
                assert frame.dtype == np.int16 and frame.shape == (FRAME_SAMPLES,)
                n += 1
                assert n <= MAX_FRAMES, "the stream does not end"
        except AudioFormatError as exc:
            return exc
        finally:
            src.close()
        return n


def _write(tmp_path_factory: pytest.TempPathFactory, name: str, data: bytes) -> Path:
    path = tmp_path_factory.mktemp("audio") / name
    path.write_bytes(data)
    return path


@given(file=FILES)
@example(file=("zero-channels.wav", wav_bytes(0, 16000, 16, 1, b"\0" * 64)))
@example(file=("many-channels.wav", wav_bytes(65535, 16000, 16, 1, b"\0" * 4096)))
@example(file=("rate-0.wav", wav_bytes(1, 0, 16, 1, b"\0" * 64)))
@example(file=("rate-1.wav", wav_bytes(1, 1, 16, 1, b"\0" * 64)))
@example(file=("rate-4e9.wav", wav_bytes(1, 4_000_000_000, 16, 1, b"\0" * 64)))
@example(file=("bits-0.wav", wav_bytes(1, 16000, 0, 1, b"\0" * 64)))
@example(file=("bits-7.wav", wav_bytes(1, 16000, 7, 1, b"\0" * 64)))
@example(file=("bits-64.wav", wav_bytes(1, 16000, 64, 3, b"\0" * 64)))
@example(file=("huge-data.wav", wav_bytes(1, 16000, 16, 1, b"\0" * 64, declared=2**32 - 2)))
@example(file=("stream.wav", wav_bytes(1, 16000, 16, 1, b"\1" * 6400, declared=2**32 - 1)))
@example(file=("empty.wav", b""))
def test_any_file_gives_frames_or_a_clear_error(tmp_path_factory, file):
    name, data = file
    path = _write(tmp_path_factory, name, data)
    result = frames_of(path)
    if isinstance(result, AudioFormatError):
        message = str(result)
        assert str(path) in message and "\n" not in message, message


@functools.cache
def _replay_parts() -> tuple[Config, Any, Any]:
    from edge.wake.detector import build_detector, model_store

    cfg = Config()
    store = model_store(cfg.wake)
    return cfg, build_detector(cfg.wake, store), store


@given(file=FILES)
@example(file=("mono.wav", real_files()["mono.wav"]))
@example(file=("stream.wav", wav_bytes(1, 16000, 16, 1, b"\1" * 6400, declared=2**32 - 1)))
def test_replay_of_any_file_ends_cleanly(tmp_path_factory, capsys, file):
    from edge.commands.replay import _json_out, replay_file

    name, data = file
    path = _write(tmp_path_factory, name, data)
    cfg, detector, store = _replay_parts()
    with no_hang(30.0, f"edge replay {name}"):
        try:
            source = FileSource(path)
        except AudioFormatError:
            return  # `edge replay` prints it and exits 1 (tests/test_cli.py)
        failed = replay_file(cfg, detector, store, source, path, None, _json_out)
    _, err = capsys.readouterr()
    assert failed in (0, 1)
    assert "Traceback" not in err
    if failed:
        (line,) = err.strip().splitlines()
        assert line.startswith("edge: error:") and str(path) in line, line
