"""The answer player: the assistant's spoken answer plays in order on its own thread, and wake
detection stays gated for as long as the queued audio takes to play, plus a margin."""

from __future__ import annotations

import threading

import numpy as np

from edge.assist.answer import AnswerPlayer
from edge.assist.plugin import output_speaker
from edge.pipeline.runner import Commands
from tests.waiting import wait_for


class Speaker:
    def __init__(self, fail_on_write: int = -1) -> None:
        self.calls: list[str] = []
        self.samples: list[np.ndarray] = []
        self.fail_on_write = fail_on_write
        self.closed = False

    def begin(self) -> None:
        self.calls.append("begin")

    def write(self, samples: np.ndarray) -> None:
        if len(self.samples) == self.fail_on_write:
            self.fail_on_write = -1
            raise OSError("the output went away")
        self.calls.append("write")
        self.samples.append(samples)

    def end(self) -> None:
        self.calls.append("end")

    def close(self) -> None:
        self.closed = True


class GateRecorder:
    """Takes the gates the player posts, as the recorder would."""

    def __init__(self) -> None:
        self.gates: list[float] = []

    def gate(self, seconds: float) -> None:
        self.gates.append(seconds)


def run_commands(commands: Commands) -> GateRecorder:
    rec = GateRecorder()
    while True:
        try:
            commands.get_nowait()(rec)  # type: ignore[arg-type]
        except Exception:  # queue.Empty
            return rec


def pcm(seconds: float, value: int = 100) -> bytes:
    return np.full(int(seconds * 16000), value, dtype="<i2").tobytes()


def test_the_gate_covers_all_queued_audio_plus_the_margin():
    now = [100.0]
    commands = Commands()
    player = AnswerPlayer(Speaker(), commands, margin_s=0.3, monotonic=lambda: now[0])
    try:
        player.begin()
        player.audio(pcm(0.5))
        player.audio(pcm(0.5))  # queued behind the first: it ends 1.0 s from now
        now[0] += 2.0  # all played by now: the next chunk is gated from now on
        player.audio(pcm(0.25))
        assert run_commands(commands).gates == [0.8, 1.3, 0.55]
    finally:
        player.close()


def test_an_answer_plays_in_order_and_is_reported_once():
    speaker, played = Speaker(), threading.Event()
    player = AnswerPlayer(speaker, Commands(), on_played=played.set)
    try:
        player.begin()
        for v in (1, 2, 3):
            player.audio(pcm(0.1, v))
        player.end()
        assert played.wait(10)
        assert speaker.calls == ["begin", "write", "write", "write", "end"]
        assert [int(s[0]) for s in speaker.samples] == [1, 2, 3]
        assert player.answers == 1
    finally:
        player.close()
    assert speaker.closed


def test_a_failing_output_does_not_stop_the_next_answer():
    speaker, played = Speaker(fail_on_write=0), []
    player = AnswerPlayer(speaker, Commands(), on_played=lambda: played.append(1))
    try:
        for _ in range(2):
            player.begin()
            player.audio(pcm(0.1))
            player.end()
        wait_for(lambda: len(played) == 2, what="both answers to be reported")
        assert len(speaker.samples) == 1  # the second answer played
    finally:
        player.close()


def test_audio_output_none_plays_nothing():
    assert output_speaker("none") is None


ASOUNDRC = """pcm.speaker {{ type file; slave.pcm {{ type null }}; file "{played}"; format "raw" }}
pcm.default {{ type file; slave.pcm {{ type null }}; file "/dev/null"; infile "{missing}" }}
"""


def test_pyaudio_speaker_plays_the_answer_on_a_real_alsa_output(tmp_path, monkeypatch):
    """ALSA's file plugin stands in for the sound card: what the device played lands in a file."""
    import soxr

    from edge.assist.answer import PyAudioSpeaker
    from tests.fixtures.audio import phrase

    played = tmp_path / "played.raw"
    conf = tmp_path / "asoundrc"
    conf.write_text(ASOUNDRC.format(played=played, missing=tmp_path / "none.raw"))
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(conf))
    answer = phrase("the kitchen light is on")
    chunks = [answer[i:i + 512] for i in range(0, len(answer), 512)]
    speaker = PyAudioSpeaker("speaker")
    try:
        player = AnswerPlayer(speaker, Commands())
        done = threading.Event()
        player.on_played = done.set
        player.begin()
        for c in chunks:
            player.audio(c.tobytes())
        player.end()
        assert done.wait(30)
    finally:
        player.close()
    expect = soxr.ResampleStream(16000, speaker.rate, 1, dtype="float32")
    want = np.concatenate([expect.resample_chunk(c.astype(np.float32)) for c in chunks]
                          + [expect.resample_chunk(np.zeros(0, np.float32), last=True)])
    want = np.clip(np.round(want), -32768, 32767).astype(np.int16)
    got = np.fromfile(played, dtype="<i2")
    assert len(got) >= len(want) and np.array_equal(got[:len(want)], want)
    assert not got[len(want):].any()  # at most silence after it, as the device drained


def test_a_named_output_that_is_missing_is_one_line_naming_the_key(tmp_path, monkeypatch):
    import pytest

    from edge.errors import ConfigError

    conf = tmp_path / "asoundrc"
    conf.write_text(ASOUNDRC.format(played=tmp_path / "p.raw", missing=tmp_path / "none.raw"))
    monkeypatch.setenv("ALSA_CONFIG_PATH", str(conf))
    with pytest.raises(ConfigError, match=r"audio.output = 'usb speaker': no such output device "
                                          r"\(outputs: .*'speaker'.*audio.output = 'none'"):
        output_speaker("usb speaker")
