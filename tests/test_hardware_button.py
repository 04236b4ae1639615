""""That wasn't for you": the button on GPIO17 cancels a recording, on the real daemon."""

from __future__ import annotations

import numpy as np

from edge.audio import synth
from edge.audio.frames import FRAME_S
from edge.pipeline.events import ActivationEnded, CancelPressed, ClipReady, MuteChanged, State
from tests.fixtures.audio import phrase
from tests.fixtures.hardware import make_rig
from tests.waiting import wait_for

MUTE, BUTTON = 22, 17


def wake_stream(tail_s: float = 8.0) -> np.ndarray:
    return synth.concat([synth.silence(1.0), phrase("hey jarvis"), synth.silence(0.3),
                         phrase("what is the weather like today"), synth.silence(tail_s)])


def press(factory) -> None:  # type: ignore[no-untyped-def]
    factory.pin(BUTTON).drive_low()
    factory.pin(BUTTON).drive_high()


def press_at(rig, factory, when):  # type: ignore[no-untyped-def]
    """Press the button at the first frame where ``when(state, frames_since_recording_ended)``."""
    seen = {"last": State.LISTENING, "ended_at": None, "pressed": False}

    def hook(i: int) -> None:
        state = rig.daemon.recorder.state
        if seen["last"] is State.RECORDING and state is not State.RECORDING:
            seen["ended_at"] = i
        seen["last"] = state
        since = None if seen["ended_at"] is None else i - seen["ended_at"]
        if not seen["pressed"] and when(state, since):
            seen["pressed"] = True
            press(factory)

    rig.frame_hooks.append(hook)
    return seen


def clip_files(tmp_path):  # type: ignore[no-untyped-def]
    clips = tmp_path / "state" / "clips"
    return sorted(clips.iterdir()) if clips.exists() else []


def test_press_during_recording_cancels_and_nothing_is_kept(tmp_path, factory, store):
    rig = make_rig(tmp_path, wake_stream(), factory)
    factory.pin(MUTE).drive_low()
    seen = press_at(rig, factory, lambda state, _since: state is State.RECORDING)
    rig.run()
    assert seen["pressed"]
    [ended] = rig.of(ActivationEnded)
    assert ended.reason == "cancelled_by_user" and ended.likely_false and ended.clip_id is None
    assert ended.audio is None
    assert [p.cancelled for p in rig.of(CancelPressed)] == [True]
    assert rig.of(ClipReady) == [] and clip_files(tmp_path) == []
    assert rig.daemon.dispatcher.delivered == 0
    assert rig.chime.played == ["start", "end"]


def test_press_soon_after_the_recording_cancels_the_held_clip(tmp_path, factory, store):
    rig = make_rig(tmp_path, wake_stream(), factory)  # cancel_window_s = 5 s
    factory.pin(MUTE).drive_low()
    seen = press_at(rig, factory, lambda _s, since: since == round(2.0 / FRAME_S))
    rig.run()
    assert seen["pressed"]
    [ended] = rig.of(ActivationEnded)
    assert ended.reason == "cancelled_by_user" and ended.clip_id is None
    assert rig.of(ClipReady) == [] and clip_files(tmp_path) == []
    assert rig.daemon.dispatcher.delivered == 0


def test_press_after_the_window_keeps_the_clip(tmp_path, factory, store):
    rig = make_rig(tmp_path, wake_stream(), factory, hardware={"cancel_window_s": 1.0})
    factory.pin(MUTE).drive_low()
    seen = press_at(rig, factory, lambda _s, since: since == round(2.0 / FRAME_S))
    rig.run()
    assert seen["pressed"]
    [ended] = rig.of(ActivationEnded)
    assert ended.reason == "silence" and ended.clip_id is not None
    assert [p.cancelled for p in rig.of(CancelPressed)] == [False]
    assert len(rig.of(ClipReady)) == 1
    assert [p.suffix for p in clip_files(tmp_path) if p.suffix == ".wav"] == [".wav"]


def test_with_no_button_clips_are_not_held(tmp_path, factory, store):
    rig = make_rig(tmp_path, wake_stream(tail_s=2.0), factory,
                   hardware={"button_pin": "none"})
    assert rig.daemon.recorder.cancel_frames == 0
    factory.pin(MUTE).drive_low()
    rig.run()
    assert len(rig.of(ClipReady)) == 1


def test_holding_the_button_toggles_a_soft_mute(tmp_path, factory, store):
    rig = make_rig(tmp_path, synth.silence(1.0), factory, endless=True, pace_s=0.002,
                   hardware={"button_hold_s": 0.2, "mute_pin": "none"})
    button = factory.pin(BUTTON)
    t = rig.start()
    try:
        rig.command(lambda rec: None)
        button.drive_low()  # held until gpiozero's hold timer fires
        wait_for(lambda: rig.daemon.recorder.state is State.MUTED)
        button.drive_high()
        button.drive_low()
        wait_for(lambda: rig.daemon.recorder.state is State.LISTENING)
        button.drive_high()
    finally:
        rig.stop(t)
    changes = rig.of(MuteChanged)
    assert [(c.muted, c.causes) for c in changes] == [(True, ("soft",)), (False, ())]
