"""The mute switch is read again every few hundred ms while listening: an edge that gpiozero
never delivered (a missed interrupt, a callback thread gone) still mutes the device. And a
mute takes with it the clip still waiting in its cancel window.

A lost edge is staged on gpiozero's MockPin by changing its level without calling its
callback (``_change_state``, the half of ``drive_high`` that sets the level).
"""

from __future__ import annotations

import logging

import pytest

from edge.audio import synth
from edge.audio.frames import FRAME_S
from edge.hardware.plugin import SWITCH_RECHECK_FRAMES
from edge.pipeline.events import ActivationEnded, ClipReady, HardwareFault, MuteChanged, State
from tests.fixtures.audio import phrase
from tests.fixtures.hardware import make_rig

MUTE = 22


def wake_stream():  # type: ignore[no-untyped-def]
    return synth.concat([synth.silence(1.0), phrase("hey jarvis"), synth.silence(0.3),
                         phrase("what is the weather like today"), synth.silence(2.5)])


def run_until_muted_or_ended(rig) -> State:  # type: ignore[no-untyped-def]
    """Run the rig until it mutes or its stream ends; the state it reached."""
    reached: list[State] = []
    rig.run_until(lambda: rig.daemon.recorder.state in (State.MUTED, State.STOPPED),
                  then=lambda: reached.append(rig.daemon.recorder.state))
    return reached[0]


@pytest.mark.parametrize("k", range(10, 10 + SWITCH_RECHECK_FRAMES))  # every phase of the count
def test_a_lost_mute_edge_still_mutes_within_the_recheck_interval(tmp_path, factory, store, k,
                                                                    caplog):
    caplog.set_level(logging.WARNING)
    rig = make_rig(tmp_path, synth.pink_noise(5.0, -30.0), factory)
    factory.pin(MUTE).drive_low()  # listening

    def lose_an_edge(i: int) -> None:
        if i == k:
            assert factory.pin(MUTE)._change_state(True)  # the level moves, no callback runs

    rig.frame_hooks.append(lose_an_edge)
    assert run_until_muted_or_ended(rig) is State.MUTED, "the switch reads mute: it must mute"
    [change] = [e for e in rig.of(MuteChanged) if e.muted]
    assert change.causes == ("switch",)
    # the level moved after frame k; at most SWITCH_RECHECK_FRAMES more frames were heard
    assert change.t <= (k + 1 + SWITCH_RECHECK_FRAMES) * FRAME_S + 1e-9
    assert rig.source.reads <= k + 1 + SWITCH_RECHECK_FRAMES
    assert rig.daemon.recorder.ring.is_zeroed()
    assert "no edge was seen" in caplog.text


def test_a_switch_that_becomes_unreadable_mid_run_mutes_and_says_why(tmp_path, factory, store):
    from gpiozero.pins.mock import MockPin

    class Failing(MockPin):
        broken = False

        def _get_state(self):  # type: ignore[no-untyped-def]
            if Failing.broken:
                raise OSError("GPIO chip read failed")
            return super()._get_state()

    rig = make_rig(tmp_path, synth.pink_noise(5.0, -30.0), factory,
                   before_start=lambda f: f.pin(MUTE, pin_class=Failing))
    factory.pin(MUTE).drive_low()
    rig.frame_hooks.append(lambda i: i == 10 and setattr(Failing, "broken", True))
    assert run_until_muted_or_ended(rig) is State.MUTED
    [fault] = rig.of(HardwareFault)
    assert fault.key == "hardware.mute_pin" and "GPIO chip read failed" in fault.message
    assert rig.source.reads <= 11 + SWITCH_RECHECK_FRAMES


def test_an_edge_that_arrives_is_not_reported_as_lost(tmp_path, factory, store, caplog):
    caplog.set_level(logging.WARNING)
    rig = make_rig(tmp_path, synth.pink_noise(5.0, -30.0), factory)
    factory.pin(MUTE).drive_low()
    rig.frame_hooks.append(lambda i: i == 10 and factory.pin(MUTE).drive_high())
    assert run_until_muted_or_ended(rig) is State.MUTED
    assert [e.muted for e in rig.of(MuteChanged)] == [True]
    assert "no edge was seen" not in caplog.text


# ---- a clip in its cancel window and a mute ------------------------------------------------


def test_a_mute_discards_the_clip_still_in_its_cancel_window(tmp_path, factory, store):
    """The generic-usb board has a cancel button: a finished clip waits 5 s in memory. The
    switch moved to mute inside that window: the clip is never written or sent."""
    rig = make_rig(tmp_path, wake_stream(), factory)
    factory.pin(MUTE).drive_low()
    moved = []

    def mute_once_the_clip_is_held(_i: int) -> None:
        if rig.daemon.recorder.stats.by_reason.get("silence") and not moved:
            moved.append(_i)
            factory.pin(MUTE).drive_high()

    rig.frame_hooks.append(mute_once_the_clip_is_held)
    assert run_until_muted_or_ended(rig) is State.MUTED
    assert moved, "the wake phrase should have made a clip"
    assert rig.of(ClipReady) == [] and rig.daemon.dispatcher.delivered == 0
    [ended] = rig.of(ActivationEnded)
    assert ended.reason == "aborted_by_mute" and ended.clip_id is None and ended.audio is None
    clips = tmp_path / "state" / "clips"
    assert not clips.exists() or list(clips.iterdir()) == []
