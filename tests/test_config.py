"""Config: defaults run out of the box; bad keys, types and ranges are named."""

from __future__ import annotations

import dataclasses
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from edge.cli import main as edge
from edge.config import Config, WakeConfig, load_config, replace
from edge.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "config.toml"
    p.write_text(text)
    return p


def test_defaults_are_sane():
    cfg = load_config(None)
    assert cfg == Config()
    assert cfg.record.silence_s == 0.8
    assert cfg.record.no_speech_timeout_s == 3.0
    assert cfg.record.max_record_s == 10.0
    assert 0.08 <= cfg.audio.pre_roll_s <= 2.0
    assert cfg.wake.threshold == 0.5 and cfg.wake.refractory_s == 2.0 and cfg.wake.patience == 1


def test_example_config_loads():
    cfg = load_config(REPO / "config.example.toml")
    assert isinstance(cfg, Config)


def test_values_are_read(tmp_path):
    cfg = load_config(write(tmp_path, '[wake]\nmodels = ["alexa", "hey_jarvis"]\n'
                                      'threshold = 0.6\n[wake.thresholds]\nalexa = 0.7\n'
                                      '[record]\nsilence_s = 1\n'))
    assert cfg.wake.models == ("alexa", "hey_jarvis")
    assert cfg.wake.threshold_for("alexa") == 0.7
    assert cfg.wake.threshold_for("hey_jarvis") == 0.6
    assert cfg.record.silence_s == 1.0


@pytest.mark.parametrize("text,match", [
    ("[wake]\nthreshhold = 0.5\n", r"unknown config key wake.threshhold; allowed keys"),
    ("[wake]\nthreshold = 1.5\n", r"wake.threshold = 1.5 is not allowed; expected a number "
                                  r"from 0.1 to 1.0"),
    ("[wake]\nthreshold = \"high\"\n", r"wake.threshold = 'high'"),
    ("[audio]\npre_roll_s = 12\n", r"audio.pre_roll_s = 12 .* from 0.08 to 10.0"),
    ("[wake]\nengine = \"tflite\"\n", r"wake.engine = 'tflite' .* one of 'edge', "
                                      r"'openwakeword'"),
    ("[wake]\nmodels = \"alexa\"\n", r"wake.models = 'alexa' .* a list of strings"),
    ("[wake]\npatience = true\n", r"wake.patience = True .* a whole number"),
    ("[wake.thresholds]\nalexa = 2\n", r"wake.thresholds.alexa = 2"),
    ("wake = 3\n", r"config key wake must be a table"),
    ("[nonsense]\n", r"unknown config key nonsense"),
    ("[wake\n", r"is not valid TOML"),
])
def test_bad_config_names_the_key_the_value_and_what_is_allowed(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist"):
        load_config(tmp_path / "nope.toml")


def test_committed_example_config_is_the_generated_one():
    from edge.commands.config import render_example

    assert (REPO / "config.example.toml").read_text() == render_example(), \
        "regenerate with: edge config example > config.example.toml"


# ---- one copy of each rule: the topic check, with its NUL check, for both sections --------


@pytest.mark.parametrize("section, key", [("upload.mqtt", "topic_prefix"),
                                          ("mqtt", "base_topic"),
                                          ("mqtt", "discovery_prefix")])
def test_a_nul_in_a_topic_prefix_is_refused_in_one_line(tmp_path, capsys, section, key):
    path = write(tmp_path, f'[{section}]\n{key} = "a\\u0000b"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{section}.{key} = 'a\\x00b' is not allowed; use topic levels")
    assert "\n" not in message and "\0" not in message
    assert edge(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err == f"edge: error: {message}\n"


@pytest.mark.parametrize("text, match", [
    ('[upload.mqtt]\ntopic_prefix = "edge/#"\n', r"upload.mqtt.topic_prefix = 'edge/#' .* "
                                                 r"e.g. 'edge-recorder'"),
    ('[mqtt]\nbase_topic = "/edge"\n', r"mqtt.base_topic = '/edge' .* e.g. 'edge'"),
    ('[mqtt]\nkey = "k.pem"\n', r"^mqtt.key is set but mqtt.cert is not"),
    ('[upload.https]\nkey = "k.pem"\n', r"^upload.https.key is set but upload.https.cert is not"),
    ('[mqtt]\nthreshold_min = 0.9\nthreshold_max = 0.5\n', r"mqtt.threshold_min = 0.9 is larger"),
    ('[mqtt]\nenabled = true\n', r"mqtt.enabled = true needs mqtt.host"),
    ('[upload.https]\nurl = "https://[::1/clips"\n', r"is not an https:// URL with a host"),
])
def test_rules_that_join_keys_are_checked_after_loading(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


# ---- subsystem checks run at composition, and `edge config check` runs them ---------------


@pytest.mark.parametrize("text, message", [
    ('[hardware]\nprofile = "respeaker-2mic-v1"\n', "hardware.mute_pin is not set"),
    ('[upload]\nencrypt_to = "not-a-key"\n', "upload.encrypt_to is not a public key"),
    ('[upload]\nmode = "https"\n[upload.https]\nurl = "https://collector.example/clips"\n',
     "hardware.leds = 'none' is not allowed while upload.mode = 'https'"),
])
def test_config_check_refuses_what_a_subsystem_refuses(tmp_path, capsys, text, message):
    path = write(tmp_path, text)
    load_config(path)  # the config alone is fine: the subsystem knows better
    assert edge(["config", "check", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_config_check_accepts_a_valid_file(tmp_path, capsys):
    path = write(tmp_path, '[hardware]\nprofile = "generic-usb"\n[upload]\nmode = "https"\n'
                           '[upload.https]\nurl = "https://collector.example/clips"\n')
    assert edge(["config", "check", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: valid\n"


# ---- frozen really frozen -------------------------------------------------------------------


def test_lists_and_tables_in_the_config_cannot_change(tmp_path):
    cfg = load_config(write(tmp_path, '[wake]\nmodels = ["alexa"]\n[wake.thresholds]\nalexa = 0.7\n'
                                      '[hardware]\nled_pins = ["GPIO5"]\n'
                                      '[log_levels]\n"edge.upload" = "debug"\n'))
    assert cfg.wake.models == ("alexa",) and cfg.hardware.led_pins == ("GPIO5",)
    assert cfg.wake.thresholds == {"alexa": 0.7} and cfg.log_levels == {"edge.upload": "debug"}
    with pytest.raises(TypeError):
        cfg.wake.thresholds["alexa"] = 0.1  # type: ignore[index]
    with pytest.raises(TypeError):
        cfg.log_levels["edge"] = "error"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.wake.models = ("hey_jarvis",)  # type: ignore[misc]


def test_a_section_built_by_hand_or_replaced_with_a_list_is_frozen_too():
    given = {"alexa": 0.7}
    wake = WakeConfig(models=["alexa"], thresholds=given)  # type: ignore[arg-type]
    given["alexa"] = 0.1
    assert wake.models == ("alexa",) and wake.threshold_for("alexa") == 0.7
    wake = replace(wake, models=["hey_jarvis", "alexa"], thresholds={})
    assert wake.models == ("hey_jarvis", "alexa") and wake.thresholds == {}
    with pytest.raises(TypeError):
        wake.thresholds["x"] = 0.5  # type: ignore[index]


def test_a_config_survives_pickling_and_asdict(tmp_path):
    """Worker processes of `edge measure` receive the config by pickle."""
    cfg = load_config(write(tmp_path, '[wake.thresholds]\nhey_jarvis = 0.6\n'))
    again = pickle.loads(pickle.dumps(cfg))
    assert again == cfg and again.wake.threshold_for("hey_jarvis") == 0.6
    with pytest.raises(TypeError):
        again.wake.thresholds["hey_jarvis"] = 0.1  # type: ignore[index]
    assert dataclasses.asdict(cfg)["wake"]["thresholds"] == {"hey_jarvis": 0.6}


# ---- config is a leaf -----------------------------------------------------------------------


def test_the_config_package_imports_no_subsystem():
    code = ("import sys, edge.config; "
            "print(sorted(m for m in sys.modules if m.startswith('edge')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=REPO).stdout
    assert set(eval(out)) <= {"edge", "edge.errors", "edge.config", "edge.config.schema",
                              "edge.config.load", "edge.config.validate", "edge.config.rules"}


def test_the_shortest_durations_are_one_frame():
    from edge.audio.frames import FRAME_S
    from edge.config.schema import ONE_FRAME_S

    assert ONE_FRAME_S == FRAME_S
