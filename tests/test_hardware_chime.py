"""Chimes: the tones, PyAudio and buzzer outputs, and the gate that keeps the microphone
from taking a chime for the user's speech or for the wake word."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edge.audio import synth
from edge.hardware.chime import NOTES, BuzzerOutput, ChimePlayer, chime_seconds, tone
from edge.pipeline.events import ActivationEnded, DetectionEvent, State
from tests.fixtures.audio import phrase
from tests.fixtures.hardware import make_rig

MUTE = 22
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dominant_hz(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


@pytest.mark.parametrize("kind, rising", [("start", True), ("end", False)])
def test_start_rises_end_falls_and_neither_clicks(kind, rising):
    rate = 48000
    x = tone(kind, rate, volume=0.5).astype(np.float64)
    assert len(x) == round(chime_seconds(kind) * rate)
    first = dominant_hz(x[: int(0.08 * rate)], rate)
    last = dominant_hz(x[-int(0.12 * rate):], rate)
    assert (last > first * 1.3) if rising else (first > last * 1.3)
    assert abs(x[0]) < 50 and abs(x[-1]) < 50  # faded in and out
    assert np.abs(x).max() == pytest.approx(0.5 * 32767, rel=0.02)
    assert not np.array_equal(tone("start", rate), tone("end", rate))


def test_pyaudio_chime_reaches_the_output_device(tmp_path):
    """Through real PyAudio and PortAudio into ALSA's file plugin, in a fresh process."""
    (tmp_path / ".asoundrc").write_text(textwrap.dedent(f"""\
        pcm.edgechime {{
            type file
            slave.pcm "null"
            file "{tmp_path}/played.raw"
            format "raw"
        }}
    """))
    script = textwrap.dedent(f"""\
        import shutil
        from edge.hardware.chime import PyAudioOutput
        out = PyAudioOutput("edgechime", 0.3)
        print(out.rate)
        for kind in ("start", "end"):  # each chime opens the device anew
            out.play(kind)
            shutil.copy("{tmp_path}/played.raw", f"{tmp_path}/{{kind}}.raw")
        out.close()
    """)
    env = {k: v for k, v in os.environ.items() if k != "ALSA_CONFIG_PATH"}
    env.update(HOME=str(tmp_path), JACK_NO_START_SERVER="1")
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rate = int(done.stdout.split()[0])
    for kind in ("start", "end"):
        played = np.fromfile(tmp_path / f"{kind}.raw", dtype=np.int16)
        expected = tone(kind, rate, 0.3)
        assert len(played) >= len(expected)  # ALSA may pad the last period with silence
        assert np.array_equal(played[:len(expected)], expected)
        assert not played[len(expected):].any()


def test_pyaudio_chime_names_a_missing_device(tmp_path):
    script = textwrap.dedent("""\
        from edge.errors import HardwareError
        from edge.hardware.chime import PyAudioOutput
        try:
            PyAudioOutput("no such speaker", 0.3)
        except HardwareError as e:
            print(e)
    """)
    env = {**os.environ, "HOME": str(tmp_path), "JACK_NO_START_SERVER": "1"}
    env.pop("ALSA_CONFIG_PATH", None)
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("hardware.chime_device = 'no such speaker': no such audio "
                                  "output device"), done.stdout + done.stderr


def test_buzzer_plays_each_note_then_falls_silent(pwm_factory):
    from edge.hardware.profiles import Pin

    heard: list[float | None] = []
    out = BuzzerOutput.on_pin(Pin(13, "hardware.chime_pin", "GPIO13"), pwm_factory)
    out.sleep = lambda _s: heard.append(out.buzzer.tone.frequency if out.buzzer.tone else None)
    player = ChimePlayer(out, background=False)
    player.play("start")
    player.play("end")
    assert [h is None for h in heard] == [False, True, False, False, True, False]
    notes = [h for h in heard if h is not None]
    assert notes == pytest.approx([659.25, 987.77, 987.77, 659.25], rel=0.01)
    assert out.buzzer.tone is None and not out.buzzer.is_active
    player.close()
    assert player.played == ["start", "end"]
    assert len(NOTES["start"]) == 2


def run_with_speaker(tmp_path, factory, stream, heard, when, chime, margin):  # type: ignore[no-untyped-def]
    """Run the daemon; whenever ``when(old, new)`` the speaker plays ``heard`` into the mic."""
    rig = make_rig(tmp_path, stream, factory,
                   hardware={"chime": chime, "chime_gate_margin_s": margin,
                             "cancel_window_s": 0.0})
    factory.pin(MUTE).drive_low()
    last = [State.LISTENING]

    def hook(_i: int) -> None:
        state = rig.daemon.recorder.state
        if when(last[0], state):
            rig.source.inject(heard)
        last[0] = state

    rig.frame_hooks.append(hook)
    rig.run()
    return rig


def test_start_chime_heard_by_the_mic_is_not_taken_for_the_users_speech(tmp_path, factory,
                                                                        store):
    """A voice prompt as the chime (the worst case): during the gate it is no speech."""
    stream = synth.concat([synth.silence(1.0), phrase("hey jarvis"), synth.silence(5.0)])
    prompt = phrase("okay, go ahead")
    margin = len(prompt) / 16000

    def starts(old, new):  # type: ignore[no-untyped-def]
        return new is State.RECORDING and old is not State.RECORDING

    gated = run_with_speaker(tmp_path / "a", factory, stream, prompt, starts, True, margin)
    assert gated.chime.played == ["start", "end"]
    [ended] = gated.of(ActivationEnded)
    assert ended.reason == "no_speech" and ended.clip_id is None
    factory.reset()
    # The same sound with no chime, so no gate: the recorder takes it for speech.
    control = run_with_speaker(tmp_path / "b", factory, stream, prompt, starts, False, margin)
    [ended] = control.of(ActivationEnded)
    assert ended.reason == "silence" and ended.clip_id is not None


def test_end_chime_heard_by_the_mic_does_not_trigger_again(tmp_path, factory, store):
    stream = synth.concat([synth.silence(1.0), phrase("hey jarvis"), synth.silence(0.3),
                           phrase("what is the weather like today"), synth.silence(4.0)])
    echo = phrase("hey jarvis")  # worst case: the speaker plays the wake word itself
    margin = len(echo) / 16000 + 0.3

    def ends(old, new):  # type: ignore[no-untyped-def]
        return old is State.RECORDING and new is not State.RECORDING

    gated = run_with_speaker(tmp_path / "a", factory, stream, echo, ends, True, margin)
    assert len(gated.of(DetectionEvent)) == 1
    assert [e.reason for e in gated.of(ActivationEnded)] == ["silence"]
    factory.reset()
    control = run_with_speaker(tmp_path / "b", factory, stream, echo, ends, False, margin)
    assert len(control.of(DetectionEvent)) == 2  # without the gate it would wake again


def test_a_portaudio_that_cannot_start_is_refused_naming_the_chime_setting(tmp_path):
    """`edge config check` and the daemon open the chimes' output with one function: when
    PortAudio itself cannot start (here a broken ALSA configuration), both refuse with the
    setting to change, as a hardware fault (the daemon then starts muted)."""
    broken = tmp_path / "asoundrc"
    broken.write_text("garbage {{{\n")
    script = textwrap.dedent("""\
        from edge.compose.preflight import check_output
        from edge.config import Config, HardwareConfig
        from edge.errors import HardwareError
        from edge.hardware.chime import open_pyaudio_output
        said = []
        for attempt in (lambda: check_output(Config(hardware=HardwareConfig(chime=True))),
                        lambda: open_pyaudio_output("", 0.5)):
            try:
                attempt()
            except HardwareError as exc:
                said.append(str(exc))
        print(len(said), said[0] == said[-1])
        print(said[0])
    """)
    env = {**os.environ, "ALSA_CONFIG_PATH": str(broken), "JACK_NO_START_SERVER": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    counts, message = done.stdout.splitlines()[:2]
    assert counts == "2 True"
    assert message.startswith("hardware.chime_backend = 'pyaudio': the audio output cannot be "
                              "opened (PortAudio could not start")
    assert "hardware.chime = false" in message
