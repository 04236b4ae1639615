"""The mute switch on the real daemon, its pins driven through gpiozero's MockFactory.

The generic-usb profile: switch on GPIO22 with a pull-up, muted while the pin is high
(the switch closes to ground to listen, so a broken wire mutes); LED GPIO27.
"""

from __future__ import annotations

import logging
import os
import signal

import numpy as np
import pytest

from edge.audio import synth
from edge.audio.frames import FRAME_S
from edge.hardware.indicators import Look
from edge.pipeline.events import (
    ActivationEnded,
    ClipReady,
    HardwareFault,
    MuteChanged,
    RecordingStopped,
    State,
    UnmuteRefused,
)
from tests.fixtures.audio import phrase
from tests.fixtures.hardware import make_rig, states
from tests.waiting import wait_for

MUTE, LED = 22, 27


def wake_stream() -> np.ndarray:
    return synth.concat([synth.silence(1.0), phrase("hey jarvis"), synth.silence(0.3),
                         phrase("what is the weather like today"), synth.silence(2.5)])


def muted(rig) -> bool:  # type: ignore[no-untyped-def]
    return rig.daemon.recorder.state is State.MUTED


def test_booting_with_the_switch_on_mute_starts_muted_and_never_opens_capture(tmp_path, factory,
                                                                              store):
    rig = make_rig(tmp_path, synth.silence(3.0), factory)  # the pull-up holds the pin high
    rig.run_until(lambda: bool(rig.of(MuteChanged)))
    assert rig.source.starts == 0 and rig.source.reads == 0
    assert rig.engine.frames == []
    [change] = rig.of(MuteChanged)
    assert change.muted and change.causes == ("switch",) and change.t == 0.0
    assert rig.plugin.looks == [Look.MUTED, Look.OFF]


def test_mute_between_frames_is_honoured_before_the_next_read(tmp_path, factory, store):
    k = 10
    rig = make_rig(tmp_path, synth.pink_noise(5.0, -30.0), factory)
    factory.pin(MUTE).drive_low()
    rig.frame_hooks.append(lambda i: i == k and factory.pin(MUTE).drive_high())
    rig.run_until(lambda: muted(rig))
    # The frame after the edge is never read: capture was stopped first.
    assert rig.source.reads == k + 1
    assert rig.engine.frames == [True] * (k + 1)
    assert rig.daemon.recorder.frame_index == k + 1
    assert rig.source.stops == 1 and not rig.source.started
    assert rig.source.reads_while_stopped == 0
    assert rig.daemon.recorder.ring.is_zeroed()
    [change] = [e for e in rig.of(MuteChanged) if e.muted]
    assert change.t == pytest.approx((k + 1) * FRAME_S)  # edge-to-honoured: 0 frames


def test_mute_during_a_read_silences_that_frame_and_holds_within_one_frame(tmp_path, factory,
                                                                           store):
    k = 12
    rig = make_rig(tmp_path, synth.pink_noise(5.0, -30.0), factory,
                   during={k: lambda: factory.pin(MUTE).drive_high()})
    factory.pin(MUTE).drive_low()
    rig.run_until(lambda: muted(rig))
    # The frame being captured when the switch moved reaches the engine as silence only.
    assert rig.engine.frames == [True] * k + [False]
    assert rig.daemon.runner.source.silenced == 1
    assert rig.source.reads == k + 1 and rig.source.reads_while_stopped == 0
    [change] = [e for e in rig.of(MuteChanged) if e.muted]
    edge_at_latest = k * FRAME_S  # the edge came somewhere in frame k: [k, k + 1) * 80 ms
    assert change.t - edge_at_latest <= FRAME_S + 1e-9
    assert change.t == pytest.approx((k + 1) * FRAME_S)


def test_mute_during_recording_discards_the_clip(tmp_path, factory, store):
    rig = make_rig(tmp_path, wake_stream(), factory)
    factory.pin(MUTE).drive_low()
    seen = []

    def hook(_i: int) -> None:
        if rig.daemon.recorder.state is State.RECORDING:
            seen.append(_i)
            if len(seen) == 5:
                factory.pin(MUTE).drive_high()

    rig.frame_hooks.append(hook)
    rig.run_until(lambda: muted(rig))
    assert len(seen) == 5, "the wake phrase should have started a recording"
    [stopped] = rig.of(RecordingStopped)
    assert stopped.reason == "aborted_by_mute"
    [ended] = rig.of(ActivationEnded)
    assert ended.reason == "aborted_by_mute" and ended.clip_id is None and ended.audio is None
    assert ended.likely_false
    assert rig.of(ClipReady) == []
    clips = tmp_path / "state" / "clips"
    assert not clips.exists() or list(clips.iterdir()) == []
    assert rig.daemon.dispatcher.delivered == 0
    assert rig.daemon.recorder.ring.is_zeroed()
    assert rig.chime.played == ["start", "end"]


def test_unmute_restarts_capture(tmp_path, factory, store):
    rig = make_rig(tmp_path, synth.pink_noise(3.0, -30.0), factory,
                   during={5: lambda: factory.pin(MUTE).drive_high()})
    factory.pin(MUTE).drive_low()
    t = rig.start()
    wait_for(lambda: rig.source.stops == 1)  # muted, and capture stopped
    reads = rig.source.reads
    factory.pin(MUTE).drive_low()
    t.join(30)
    assert not t.is_alive()  # the stream ran to its end
    assert rig.source.starts == 2 and rig.source.reads > reads
    assert rig.source.reads_while_stopped == 0
    assert [e.muted for e in rig.of(MuteChanged)] == [True, False]


def test_soft_mute_adds_to_the_switch_and_nothing_remote_unmutes(tmp_path, factory, store):
    rig = make_rig(tmp_path, synth.silence(1.0), factory, endless=True, pace_s=0.002)
    factory.pin(MUTE).drive_low()
    t = rig.start()
    try:
        rig.command(lambda rec: None)
        assert rig.daemon.recorder.state is State.LISTENING
        rig.plugin.request_mute("mqtt")
        rig.command(lambda rec: None)
        assert muted(rig)
        rig.plugin.request_unmute("mqtt")  # remote: refused
        rig.command(lambda rec: None)
        assert muted(rig)
        # A direct recorder.unmute (any other command) is overridden at once.
        rig.command(lambda rec: rec.unmute("somebody"))
        assert muted(rig)
        starts = rig.source.starts
        rig.plugin.request_unmute("the device", remote=False)
        wait_for(lambda: rig.source.starts == starts + 1)  # a local unmute: capture resumes
        assert rig.daemon.recorder.state is State.LISTENING
        # Switch on mute, then a local soft unmute: the switch still holds.
        factory.pin(MUTE).drive_high()
        rig.command(lambda rec: None)
        rig.plugin.request_unmute("the device", remote=False)
        rig.command(lambda rec: None)
        assert muted(rig)
    finally:
        rig.stop(t)
    refused = rig.of(UnmuteRefused)
    assert [r.requested_by for r in refused] == ["mqtt", "the device"]
    assert "nothing remote can unmute" in refused[0].why
    assert rig.source.starts == starts + 1  # the overridden unmute never started capture
    assert rig.source.reads_while_stopped == 0


def test_a_command_that_unmutes_the_recorder_never_overrides_the_switch(tmp_path, factory,
                                                                        store):
    rig = make_rig(tmp_path, synth.silence(2.0), factory)  # booted on mute
    t = rig.start()
    try:
        rig.command(lambda rec: rec.unmute("remote"))
        assert muted(rig)
    finally:
        rig.stop(t)
    assert rig.source.starts == 0 and rig.source.reads == 0


class UnreadablePin:
    """A MockPin whose level cannot be read, as when the GPIO chip fails."""

    @staticmethod
    def make(factory):  # type: ignore[no-untyped-def]
        from gpiozero.pins.mock import MockPin

        class Broken(MockPin):
            def _get_state(self):  # type: ignore[no-untyped-def]
                raise OSError("GPIO chip read failed")

        factory.pin(MUTE, pin_class=Broken)


def test_unreadable_mute_pin_fails_closed_and_says_why(tmp_path, factory, store, caplog):
    caplog.set_level(logging.ERROR)
    rig = make_rig(tmp_path, synth.silence(2.0), factory, before_start=UnreadablePin.make)
    rig.run_until(lambda: bool(rig.of(HardwareFault)) and muted(rig))
    [fault] = rig.of(HardwareFault)
    assert fault.key == "hardware.mute_pin"
    assert "hardware.mute_pin = 'GPIO22'" in fault.message and "GPIO chip read failed" in \
        fault.message
    assert "hardware.mute_pin = 'GPIO22'" in caplog.text and "stays muted" in caplog.text
    assert rig.source.starts == 0 and rig.engine.frames == []
    assert rig.plugin.looks[0] is Look.ERROR
    # The LED blinks the error look: its history alternates, starting dark.
    led = factory.pin(LED)
    wait_for(lambda: len(led.states) >= 3)
    got = [s.state for s in led.states[:3]]
    assert len(got) == 3 and got == [False, True, False]


def test_mute_pin_already_in_use_fails_closed_naming_the_key(tmp_path, factory, store):
    from gpiozero import DigitalOutputDevice

    held = []
    rig = make_rig(tmp_path, synth.silence(2.0), factory,
                   before_start=lambda f: held.append(DigitalOutputDevice(MUTE, pin_factory=f)))
    rig.run_until(lambda: bool(rig.of(HardwareFault)) and muted(rig))
    [fault] = rig.of(HardwareFault)
    assert fault.message.startswith("hardware.mute_pin = 'GPIO22': the pin is already in use")
    assert rig.source.starts == 0
    held[0].close()


def test_no_gpio_library_fails_closed(tmp_path, store):
    from edge.config import Config, HardwareConfig, replace
    from tests.device import build
    from tests.fixtures.hardware import ScriptedSource

    cfg = replace(Config(), state_dir=str(tmp_path),
                  hardware=HardwareConfig(profile="generic-usb", pin_factory="lgpio"))
    source = ScriptedSource(synth.silence(2.0))
    daemon = build(cfg, source).daemon
    faults: list[HardwareFault] = []
    daemon.bus.subscribe("t", lambda e: isinstance(e, HardwareFault) and faults.append(e))
    daemon.post(lambda rec: daemon.stop())
    daemon.run(install_signals=False)
    assert daemon.recorder.state is State.STOPPED
    assert source.starts == 0 and source.reads == 0
    [fault] = faults
    assert fault.key == "hardware.pin_factory" and "no GPIO library" in fault.message


def test_sigterm_turns_the_recording_light_off(tmp_path, factory, store):
    rig = make_rig(tmp_path, wake_stream(), factory)
    factory.pin(MUTE).drive_low()
    fired = []

    def hook(_i: int) -> None:
        if rig.daemon.recorder.state is State.RECORDING and not fired:
            fired.append(_i)
            os.kill(os.getpid(), signal.SIGTERM)

    rig.frame_hooks.append(hook)
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        rig.daemon.run(install_signals=True)  # the main thread, as `edge run`
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])
    assert fired, "the wake phrase should have started a recording"
    states(factory.pin(LED), [False, True, False])  # on while recording, off at SIGTERM
    assert rig.plugin.looks == [Look.LISTENING, Look.RECORDING, Look.OFF]


def test_switch_edges_in_quick_succession_are_obeyed_in_order(tmp_path, factory, store):
    rig = make_rig(tmp_path, synth.silence(1.0), factory, endless=True, pace_s=0.002)
    t = rig.start()  # booted on mute: the loop idles, waiting for commands
    order: list[int] = []
    try:
        wait_for(lambda: bool(rig.of(MuteChanged)))
        for i in range(200):
            rig.daemon.post(lambda _rec, i=i: order.append(i))
            (factory.pin(MUTE).drive_low if i % 2 == 0 else factory.pin(MUTE).drive_high)()
        rig.command(lambda rec: None)
        final = rig.daemon.recorder.state
    finally:
        rig.stop(t)
    assert order == list(range(200))
    assert final is State.MUTED  # the last edge (i = 199) put the switch on mute


def test_an_led_that_fails_mid_run_leaves_the_device_muted(tmp_path, factory, store):
    from gpiozero.pins.mock import MockPin

    class Dies(MockPin):
        def _set_state(self, value):  # type: ignore[no-untyped-def]
            if value:
                raise OSError("lgpio: GPIO not allocated")
            super()._set_state(value)

    rig = make_rig(tmp_path, wake_stream(), factory,
                   before_start=lambda f: f.pin(LED, pin_class=Dies))
    factory.pin(MUTE).drive_low()
    rig.run_until(lambda: muted(rig))
    [fault] = rig.of(HardwareFault)
    assert fault.key == "hardware.leds" and "GPIO not allocated" in fault.message
    [ended] = rig.of(ActivationEnded)
    assert ended.reason == "aborted_by_mute" and ended.clip_id is None
    assert rig.of(ClipReady) == []


def test_a_chime_that_cannot_play_leaves_the_device_muted(tmp_path, factory, store):
    rig = make_rig(tmp_path, wake_stream(), factory)

    def broken(kind: str) -> None:
        raise OSError("[Errno -9996] Invalid output device (no default output device)")

    rig.chime.play = broken  # type: ignore[method-assign]
    factory.pin(MUTE).drive_low()
    rig.run_until(lambda: muted(rig))
    [fault] = rig.of(HardwareFault)
    assert fault.key == "hardware.chime_device" and "Invalid output device" in fault.message
    assert fault.message.startswith("hardware.chime_device = '': a chime could not play")
    [ended] = rig.of(ActivationEnded)
    assert ended.reason == "aborted_by_mute"
    assert rig.plugin.looks[-3:] == [Look.RECORDING, Look.ERROR, Look.OFF]
