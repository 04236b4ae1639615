"""The recorder state machine: clip boundaries, refractory, mute, cancel, observers."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.audio import synth
from edge.audio.frames import FRAME_SAMPLES
from edge.audio.sources import ArraySource
from edge.clock import FakeClock
from edge.compose.daemon import build_recorder
from edge.config import Config, RecordConfig
from edge.pipeline.clip import Clip
from edge.pipeline.events import ActivationEnded, EventBus, RecordingStarted, State, StateChanged
from edge.pipeline.recorder import Recorder
from edge.pipeline.runner import Runner
from edge.wake.detector import build_detector
from edge.wake.policy import DetectionPolicy, ModelPolicy
from tests.fakes import Collector, LevelVad, ScriptedEngine
from tests.fixtures.audio import phrase
from tests.waiting import wait_for

FRAME_S = 0.08


def numbered_frames(n: int, loud: set[int] | None = None) -> list[np.ndarray]:
    """Frame i holds i % 90 (quiet), or 1000 + i where it should count as speech."""
    loud = loud or set()
    return [np.full(FRAME_SAMPLES, 1000 + i if i in loud else i % 90, dtype=np.int16)
            for i in range(n)]


def make(fire_at: set[int], record: RecordConfig | None = None, pre_roll_s: float = 1.5,
         refractory_s: float = 2.0, **kw) -> tuple[Recorder, list[Clip], Collector, EventBus]:
    clips: list[Clip] = []
    bus = EventBus()
    col = Collector()
    bus.subscribe("test", col)
    engine = ScriptedEngine(fire_at)
    rec = Recorder(engine, DetectionPolicy([ModelPolicy("m", 0.5, refractory_s=refractory_s)]),
                   LevelVad(), record or RecordConfig(), pre_roll_s, bus, clips.append,
                   FakeClock(), **kw)
    return rec, clips, col, bus


def feed_all(rec: Recorder, frames: list[np.ndarray]) -> None:
    for f in frames:
        rec.feed(f)


def test_pre_roll_is_exact_to_one_frame():
    rec, clips, _, bus = make({40}, pre_roll_s=1.5)  # 1.5 s = 19 frames (rounded)
    speech = set(range(41, 50))
    feed_all(rec, numbered_frames(120, speech))
    bus.close()
    (clip,) = clips
    first = clip.audio[::FRAME_SAMPLES]  # one sample per frame: the frame's number
    assert first[0] == 40 - 19 + 1      # the pre-roll ends with the triggering frame 40
    assert list(first[:19]) == list(range(22, 41))
    assert clip.start == pytest.approx(22 * FRAME_S)
    assert clip.detection_t == pytest.approx(41 * FRAME_S)


def test_clip_ends_after_the_trailing_silence():
    rec, clips, _, bus = make({40}, RecordConfig(silence_s=0.8))
    speech = set(range(41, 60))  # 19 frames of speech after the detection
    feed_all(rec, numbered_frames(200, speech))
    bus.close()
    (clip,) = clips
    assert clip.reason == "silence"
    # the last speech frame is 59; 10 frames (0.8 s) of silence end the clip after frame 69
    assert clip.end == pytest.approx(70 * FRAME_S)
    assert clip.vad_speech_ratio == pytest.approx(19 / 29)


def test_clip_that_hits_the_maximum_length_ends_there():
    rec, clips, _, bus = make({40}, RecordConfig(max_record_s=4.0))
    feed_all(rec, numbered_frames(200, set(range(41, 200))))
    bus.close()
    (clip,) = clips
    assert clip.reason == "max_length"
    assert clip.end - clip.detection_t == pytest.approx(4.0)
    assert len(clip.audio) == (19 + 50) * FRAME_SAMPLES


def test_no_speech_flag_and_discard_by_default():
    rec, clips, col, bus = make({40}, RecordConfig(no_speech_timeout_s=3.0))
    feed_all(rec, numbered_frames(200))
    bus.close()
    assert clips == []  # a likely false wake: its audio never leaves memory
    (ended,) = col.of(ActivationEnded)
    assert (ended.reason, ended.clip_id, ended.likely_false) == ("no_speech", None, True)
    assert ended.duration_s == pytest.approx(19 * FRAME_S + 3.0, abs=FRAME_S)


def test_no_speech_clip_kept_when_configured():
    rec, clips, _, bus = make({40}, RecordConfig(no_speech_timeout_s=3.0), keep_no_speech=True)
    feed_all(rec, numbered_frames(200))
    bus.close()
    (clip,) = clips
    assert clip.reason == "no_speech"
    assert clip.metadata()["no_speech"] is True
    assert clip.end - clip.detection_t == pytest.approx(3.0, abs=FRAME_S)


def test_detections_during_recording_are_ignored():
    rec, clips, col, bus = make({40, 45}, refractory_s=0.0)
    feed_all(rec, numbered_frames(200, set(range(41, 50))))
    bus.close()
    assert len(clips) == 1
    assert rec.stats.ignored_detections == 1


def test_refractory_period_holds_after_the_clip_ends():
    rec, clips, col, bus = make({40, 62, 70})  # clip ends at 59; 62 is < 25 frames after 40
    feed_all(rec, numbered_frames(200, set(range(41, 50)) | set(range(71, 80))))
    bus.close()
    assert [c.detection_t for c in clips] == [pytest.approx(41 * FRAME_S),
                                              pytest.approx(71 * FRAME_S)]


def test_state_changes_are_published_in_order():
    rec, _, col, bus = make({10})
    feed_all(rec, numbered_frames(60, set(range(11, 15))))
    rec.shutdown()
    bus.close()
    assert [(e.old, e.new) for e in col.of(StateChanged)] == [
        ("listening", "recording"), ("recording", "listening"), ("listening", "stopped")]
    (started,) = col.of(RecordingStarted)
    assert started.model == "m"


def test_mute_during_recording_discards_clip_and_zeroes_buffers():
    rec, clips, col, bus = make({40})
    frames = numbered_frames(200, set(range(41, 200)))
    feed_all(rec, frames[:50])
    assert rec.state is State.RECORDING
    rec.mute()
    seen = rec.engine.frames_seen  # type: ignore[attr-defined]
    feed_all(rec, frames[50:100])  # muted: nothing reaches the detector or the ring buffer
    assert rec.engine.frames_seen == seen  # type: ignore[attr-defined]
    assert rec.ring.is_zeroed()
    rec.unmute()
    rec.shutdown()
    bus.close()
    assert clips == []
    (ended,) = col.of(ActivationEnded)
    assert (ended.reason, ended.clip_id, ended.audio) == ("aborted_by_mute", None, None)


def test_cancel_during_recording_and_within_the_window():
    rec, clips, col, bus = make({40, 100}, cancel_window_s=3.0)
    frames = numbered_frames(300, set(range(41, 50)) | set(range(101, 110)))
    feed_all(rec, frames[:45])
    assert rec.cancel() is True             # during the first recording
    feed_all(rec, frames[45:125])           # the second clip ends at frame 119, then is held
    assert clips == [] and rec.state is State.LISTENING
    assert rec.cancel() is True             # within the 3 s window after it ended
    feed_all(rec, frames[125:])
    rec.shutdown()
    bus.close()
    assert clips == []
    assert [e.reason for e in col.of(ActivationEnded)] == ["cancelled_by_user"] * 2


def test_held_clip_is_released_after_the_cancel_window_and_on_shutdown():
    rec, clips, _, bus = make({40, 100}, cancel_window_s=3.0)
    frames = numbered_frames(140, set(range(41, 50)) | set(range(101, 110)))
    feed_all(rec, frames)
    assert len(clips) == 1                  # the first clip's window has passed
    rec.shutdown()                          # the second is finished: never lost
    bus.close()
    assert len(clips) == 2


def test_slow_and_failing_subscribers_never_stall_the_audio_loop():
    release = threading.Event()
    rec, clips, _, bus = make({40})
    bus.subscribe("stuck", lambda e: release.wait(), maxsize=4)

    def boom(event: object) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe("failing", boom)
    frames = np.concatenate(numbered_frames(500, set(range(41, 60))))
    runner = Runner(ArraySource(frames), rec)
    runner.run()
    assert rec.stats.frames == 500
    assert len(clips) == 1
    assert bus.stats()["stuck"]["dropped"] > 0  # the audio loop published past its full queue
    # the failing subscriber runs on its own thread: under load it may not have run yet
    wait_for(lambda: bus.stats()["failing"]["failures"] > 0, what="the subscriber's failures")
    release.set()
    bus.close()


def test_real_pipeline_keeps_the_wake_word_and_the_request(store):
    cfg = Config()
    detector = build_detector(cfg.wake, store)
    clips: list[Clip] = []
    bus = EventBus()
    rec = build_recorder(cfg, detector, bus, clips.append, FakeClock(), store)
    request = phrase("what is the weather like today")
    audio = synth.concat([synth.silence(2.0), phrase("hey jarvis"), synth.silence(0.3), request,
                          synth.silence(3.0)])
    Runner(ArraySource(audio), rec).run()
    bus.close()
    (clip,) = clips
    assert clip.reason == "silence"
    assert clip.model == "hey_jarvis" and clip.score > 0.5
    end_of_request = (len(audio) - 3.0 * 16000) / 16000
    # the clip holds the wake word (starts before it) and ends ~0.8 s after the request
    assert clip.start <= 2.0 + 0.08
    assert end_of_request + 0.5 <= clip.end <= end_of_request + 1.3
    assert clip.vad_speech_ratio > 0.3


def test_mute_discards_a_clip_still_in_its_cancel_window():
    rec, clips, col, bus = make({40, 100}, cancel_window_s=3.0)
    frames = numbered_frames(400, set(range(41, 50)) | set(range(101, 110)))
    feed_all(rec, frames[:125])  # the first clip is released; the second (ended at 119) waits
    assert len(clips) == 1
    rec.mute()                   # the last utterance, still cancellable: it must not be sent
    feed_all(rec, frames[125:200])
    rec.unmute()
    feed_all(rec, frames[200:])  # long after its window would have closed
    rec.shutdown()
    bus.close()
    assert len(clips) == 1
    assert [e.reason for e in col.of(ActivationEnded)] == ["silence", "aborted_by_mute"]
    dropped = col.of(ActivationEnded)[1]
    assert dropped.clip_id is None and dropped.audio is None and dropped.likely_false
    assert rec.stats.by_reason["aborted_by_mute"] == 1


@settings(max_examples=60, deadline=None)
@given(fires=st.sets(st.integers(5, 250), max_size=6), mute_at=st.integers(0, 300),
       muted_for=st.integers(0, 40), window_s=st.sampled_from([0.0, 0.5, 3.0, 8.0]))
def test_nothing_heard_before_a_mute_is_sent_after_it(fires, mute_at, muted_for, window_s):
    """Whatever the detections, the cancel window and the moment of the mute: a clip handed
    to the sinks after the mute holds only audio heard after it."""
    rec, _, _, bus = make(fires, cancel_window_s=window_s, refractory_s=0.5)
    sent_after_mute: list[Clip] = []
    muted = []
    rec.clip_out = lambda clip: muted and sent_after_mute.append(clip)
    frames = numbered_frames(400, {i + d for i in fires for d in range(1, 8)})
    feed_all(rec, frames[:mute_at])
    muted_at_t = rec.t
    rec.mute()
    muted.append(True)
    feed_all(rec, frames[mute_at:mute_at + muted_for])  # never heard
    rec.unmute()
    feed_all(rec, frames[mute_at + muted_for:])
    rec.shutdown()
    bus.close()
    for clip in sent_after_mute:
        assert clip.start >= muted_at_t, (clip.start, muted_at_t)
