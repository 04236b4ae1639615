"""Audio files as a source: WAV and FLAC at any rate and channel count, bad files, long files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from edge.audio.file import FileSource
from edge.audio.frames import FRAME_SAMPLES, SAMPLE_RATE
from edge.audio.ringbuffer import RingBuffer
from edge.errors import AudioFormatError
from tests.fixtures.audio import phrase


def read_all(src: FileSource) -> np.ndarray:
    frames = []
    while (f := src.read()) is not None:
        assert f.dtype == np.int16 and f.shape == (FRAME_SAMPLES,)
        frames.append(f)
    return np.concatenate(frames)


def tone(freq: float, seconds: float, rate: int, amp: float = 0.25) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return amp * np.sin(2 * np.pi * freq * t)


def level_at(x: np.ndarray, hz: float) -> float:
    spec = np.abs(np.fft.rfft(x.astype(np.float64) * np.hanning(len(x))))
    return float(spec[np.abs(np.fft.rfftfreq(len(x), 1 / SAMPLE_RATE) - hz) < 8].max())


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc/self/status")


def test_a_16k_mono_wav_is_read_sample_for_sample_then_ends(wav):
    speech = phrase("hey jarvis")
    got = read_all(FileSource(wav(speech)))
    assert len(got) == -(-len(speech) // FRAME_SAMPLES) * FRAME_SAMPLES
    assert np.array_equal(got[:len(speech)], speech)
    assert not got[len(speech):].any()  # the last frame is padded with silence


@pytest.mark.parametrize("fmt, subtype, rate", [
    ("WAV", "PCM_16", 8000),
    ("WAV", "PCM_24", 48000),
    ("WAV", "FLOAT", 22050),
    ("FLAC", "PCM_16", 44100),
    ("FLAC", "PCM_24", 96000),
])
def test_other_rates_and_channel_counts_are_converted(tmp_path: Path, fmt: str, subtype: str,
                                                      rate: int):
    left, right = tone(500.0, 2.0, rate), tone(1500.0, 2.0, rate, amp=0.5)
    path = tmp_path / f"two.{fmt.lower()}"
    sf.write(str(path), np.stack([left, right], axis=1), rate, format=fmt, subtype=subtype)

    mixed = read_all(FileSource(path))
    assert len(mixed) == -(-2 * SAMPLE_RATE // FRAME_SAMPLES) * FRAME_SAMPLES
    want = soxr.resample((left + right) / 2, rate, SAMPLE_RATE, quality="HQ") * 32768
    n = len(want) - FRAME_SAMPLES
    assert np.abs(mixed[:n] - want[:n]).max() <= 2  # streamed as the one-shot resampler does
    assert level_at(mixed, 1500.0) == pytest.approx(2 * level_at(mixed, 500.0), rel=0.02)

    only_right = read_all(FileSource(path, channel=1))
    assert level_at(only_right, 500.0) < level_at(only_right, 1500.0) / 1000


def test_a_channel_the_file_lacks_is_an_error_naming_the_file(tmp_path: Path):
    path = tmp_path / "stereo.wav"
    sf.write(str(path), np.zeros((1600, 2)), 16000)
    with pytest.raises(AudioFormatError, match=r"stereo\.wav: channel 2 .* 2 channels"):
        FileSource(path, channel=2)


def test_a_file_that_is_not_audio_is_named_in_the_error(tmp_path: Path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 100)
    with pytest.raises(AudioFormatError, match=r"notes\.wav is not a readable audio file.*WAV "
                                               "or FLAC"):
        FileSource(path)


def test_a_missing_or_empty_file_is_named_in_the_error(tmp_path: Path):
    with pytest.raises(AudioFormatError, match=r"gone\.wav does not exist"):
        FileSource(tmp_path / "gone.wav")
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.int16), 16000)
    with pytest.raises(AudioFormatError, match=r"empty\.wav holds no audio"):
        FileSource(empty)


def test_a_truncated_wav_is_named_in_the_error(tmp_path: Path, wav):
    path = wav(phrase("hey jarvis"), "cut.wav")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioFormatError, match=r"cut\.wav is truncated"):
        FileSource(path)


def test_a_truncated_flac_is_named_in_the_error(tmp_path: Path):
    path = tmp_path / "cut.flac"
    noise = np.random.default_rng(0).standard_normal((44100 * 3, 2)) * 0.1
    sf.write(str(path), noise, 44100, subtype="PCM_16")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    src = FileSource(path)  # the header is whole; the damage shows when decoding reaches it
    with pytest.raises(AudioFormatError, match=r"cut\.flac is truncated or corrupt"):
        read_all(src)


def test_reading_after_close_ends_the_stream(wav):
    src = FileSource(wav(phrase("hey jarvis")))
    assert src.read() is not None
    src.close()
    assert src.read() is None


def test_streaming_an_hour_keeps_memory_flat(tmp_path: Path):
    """An hour of 44.1 kHz FLAC through the resampler into the pre-roll ring buffer."""
    path = tmp_path / "hour.flac"
    rate = 44100
    ten_s = np.round(tone(440.0, 10.0, rate, amp=0.03) * 32767).astype(np.int16)
    with sf.SoundFile(str(path), "w", rate, 1, subtype="PCM_16") as f:
        for _ in range(360):
            f.write(ten_s)
    src = FileSource(path)
    assert src.duration_s == pytest.approx(3600.0)
    ring = RingBuffer(19, FRAME_SAMPLES)
    frames = 0
    before = 0
    while (frame := src.read()) is not None:
        ring.push(frame)
        frames += 1
        if frames == 1000:  # after warm-up: buffers, resampler and decoder are allocated
            before = rss_kb()
    grown_mb = (rss_kb() - before) / 1024
    src.close()
    assert frames == 3600 * SAMPLE_RATE // FRAME_SAMPLES
    assert grown_mb < 3.0
