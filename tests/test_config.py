"""Config: defaults run out of the box; bad keys, types and ranges are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.config import Config, load_config
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
    assert cfg.wake.models == ["alexa", "hey_jarvis"]
    assert cfg.wake.threshold_for("alexa") == 0.7
    assert cfg.wake.threshold_for("hey_jarvis") == 0.6
    assert cfg.record.silence_s == 1.0


@pytest.mark.parametrize("text,match", [
    ("[wake]\nthreshhold = 0.5\n", r"unknown config key wake.threshhold; allowed keys"),
    ("[wake]\nthreshold = 1.5\n", r"wake.threshold = 1.5 is not allowed; expected a number "
                                  r"from 0.0 to 1.0"),
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
