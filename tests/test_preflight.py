"""`edge config check` refuses what `edge run` refuses before capture: one function, one line.

Every case goes through the real command line in a fresh process, with the real models
and a real audio file (or ALSA file-plugin capture devices): `edge config check` must
exit 2 with one line, and `edge run` on the same config must print the very same line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge.compose.preflight import preflight
from edge.config import load_config
from edge.errors import ModelError
from tests.fixtures.audio import phrase
from tests.fixtures.wake import write_wake_wav

EDGE = [sys.executable, "-m", "edge"]


def edge(tmp: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGE, *args], capture_output=True, text=True, timeout=120,
                          cwd=tmp, env=env)


def refusal(proc: subprocess.CompletedProcess) -> str:
    """The one error line a refusal prints (no traceback; a log line may come before it)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("edge: error: ")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == errors[0]
    return errors[0]


def write_config(tmp: Path, body: str) -> Path:
    path = tmp / "edge.toml"
    path.write_text(f'state_dir = "{tmp / "state"}"\n{body}')
    return path


BAD = {
    "unknown name": ('[wake]\nmodels = ["hey_siri"]\n', "unknown model 'hey_siri'"),
    "no model": ("[wake]\nmodels = []\n", "no wake-word model configured"),
    "not a classifier": ('[wake]\nmodels = ["silero_vad"]\n',
                         "wake-word model silero_vad"),
    "a feature model": ('[wake]\nmodels = ["melspectrogram"]\n',
                        "wake-word model melspectrogram"),
    "unknown micro model": ('[wake]\nmodels = ["micro:nope"]\n', "unknown model 'micro:nope'"),
    "missing .onnx": ('[wake]\nmodels = ["/nonexistent/mine.onnx"]\n',
                      "custom model file /nonexistent/mine.onnx does not exist"),
    "missing password file": ('[mqtt]\nenabled = true\nhost = "127.0.0.1"\nusername = "u"\n'
                              'password_file = "/nonexistent/pw"\n',
                              "cannot read mqtt.password_file"),
    "missing CA file": ('[upload]\nmode = "https"\n[upload.https]\n'
                        'url = "https://127.0.0.1:9/clips"\nca = "/nonexistent/ca.pem"\n'
                        "[hardware]\nleds = \"gpio\"\nled_pins = [\"GPIO27\"]\n"
                        "pin_factory = \"mock\"\nmute_pin = \"GPIO22\"\n"
                        "[security]\nallow_simulated_pins = true\n",
                        "upload.https.ca = '/nonexistent/ca.pem': no such file"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_config_check_refuses_in_one_line_what_run_refuses_with_the_same_line(
        tmp_path: Path, case: str) -> None:
    body, says = BAD[case]
    path = write_config(tmp_path, body)
    load_config(path)  # the file alone is fine: only the model store and files know better
    check = refusal(edge(tmp_path, "config", "check", str(path)))
    assert says in check, check
    wav = write_wake_wav(tmp_path / "wake.wav", 4.0)
    run = refusal(edge(tmp_path, "run", "--config", str(path), "--input", str(wav)))
    assert run == check
    assert not (tmp_path / "state" / "clips").exists()  # refused before anything was heard


def test_the_daemon_is_built_through_preflight(tmp_path: Path) -> None:
    """`edge run` builds its device with `build_device`, which runs `preflight` first: the
    same refusal comes from both, whoever made the config."""
    from edge.audio.sources import ArraySource
    from tests.device import build

    cfg = load_config(write_config(tmp_path, '[wake]\nmodels = ["silero_vad"]\n'))
    with pytest.raises(ModelError) as by_preflight:
        preflight(cfg)
    with pytest.raises(ModelError) as by_build:
        build(cfg, ArraySource(phrase("hey jarvis")))
    assert str(by_build.value) == str(by_preflight.value)


def test_a_good_config_is_valid_and_says_what_it_could_not_check(tmp_path: Path) -> None:
    wav = write_wake_wav(tmp_path / "wake.wav", 4.0)
    path = write_config(tmp_path, f'[audio]\ninput = "{wav}"\n[hardware]\nchime = false\n')
    proc = edge(tmp_path, "config", "check", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"{path}: valid\n" and proc.stderr == ""


def test_an_audio_file_input_that_is_missing_is_refused_by_both(tmp_path: Path) -> None:
    path = write_config(tmp_path, '[audio]\ninput = "/nonexistent/in.wav"\n')
    check = refusal(edge(tmp_path, "config", "check", str(path)))
    assert "audio file /nonexistent/in.wav does not exist" in check
    assert refusal(edge(tmp_path, "run", "--config", str(path))) == check
    # a config checked for another machine skips its devices
    assert edge(tmp_path, "config", "check", "--no-devices", str(path)).returncode == 0


def test_a_capture_device_that_is_not_there_is_refused_when_the_machine_has_devices(
        tmp_path: Path, alsa) -> None:
    alsa.add("testmic", phrase("hey jarvis"))
    env = alsa.env
    missing = write_config(tmp_path, '[audio]\ninput = "nosuchmic"\n[hardware]\nchime = false\n')
    check = refusal(edge(tmp_path, "config", "check", str(missing), env=env))
    assert "nosuchmic" in check
    assert refusal(edge(tmp_path, "run", "--config", str(missing), env=env)) == check
    there = write_config(tmp_path, '[audio]\ninput = "testmic"\n[hardware]\nchime = false\n')
    proc = edge(tmp_path, "config", "check", str(there), env=env)
    assert proc.returncode == 0 and proc.stdout == f"{there}: valid\n", proc.stderr


def test_without_any_capture_device_the_input_is_noted_not_refused(tmp_path: Path,
                                                                    alsa) -> None:
    path = write_config(tmp_path, '[hardware]\nprofile = "generic-usb"\nchime = false\n'
                                  'pin_factory = "mock"\n')
    proc = edge(tmp_path, "config", "check", str(path), env=alsa.env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ("edge: note: no capture device on this machine: audio.input = "
                           "'USB' was not checked\n")


def test_the_assistants_answer_output_is_checked_like_the_other_devices(tmp_path: Path,
                                                                         alsa) -> None:
    alsa.add("testmic", phrase("hey jarvis"))
    body = ('[audio]\ninput = "testmic"\noutput = "{out}"\n[hardware]\nchime = false\n'
            '[assist]\nmode = "esphome"\nhost = "127.0.0.1"\n')
    missing = write_config(tmp_path, body.format(out="usb dac"))
    check = refusal(edge(tmp_path, "config", "check", str(missing), env=alsa.env))
    assert "audio.output = 'usb dac': no such output device" in check
    there = write_config(tmp_path, body.format(out="testmic"))
    proc = edge(tmp_path, "config", "check", str(there), env=alsa.env)
    assert proc.returncode == 0 and proc.stdout == f"{there}: valid\n", proc.stderr
