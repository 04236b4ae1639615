"""No way of setting a threshold can go below the floor (edge.config.rules.THRESHOLD_FLOOR):
at 0 every model "detects" once per refractory period, and the device records everything.

Every way in is tried: the config file (``wake.threshold``, ``wake.thresholds.*``,
``mqtt.threshold_min/max``), ``edge replay --threshold``, the MQTT ``set_threshold``
command (live in tests/test_mqtt_hostile_commands.py, its checking path here) and the
recorder itself, the last guard. ``edge measure``'s sweep may count below the floor: it
records nothing (README.md, "The threshold floor").
"""

from __future__ import annotations

import argparse
import json
import math
import queue
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from edge.clock import FakeClock
from edge.commands.replay import replay_config
from edge.config import Config, load_config, replace
from edge.config.rules import THRESHOLD_FLOOR
from edge.errors import ConfigError, UsageError
from edge.mqtt.device import MqttPlugin
from edge.pipeline.runner import Commands
from tests.activation_helpers import Harness, config
from tests.fixtures.audio import write_wav

EDGE = [sys.executable, "-m", "edge"]
FLOOR_TEXT = f"{THRESHOLD_FLOOR:g} is the threshold floor"
CONFIG_KEYS = {
    "wake.threshold": "[wake]\nthreshold = {v}\n",
    "wake.thresholds.alexa": "[wake]\nmodels = [\"alexa\"]\n[wake.thresholds]\nalexa = {v}\n",
    "mqtt.threshold_min": "[mqtt]\nthreshold_min = {v}\n",
    "mqtt.threshold_max": "[mqtt]\nthreshold_min = {v}\nthreshold_max = {v}\n",
}
BELOW = (st.floats(max_value=THRESHOLD_FLOOR, exclude_max=True, allow_nan=False)
         | st.sampled_from([0.0, -0.0, 5e-324, THRESHOLD_FLOOR / 2,
                            math.nextafter(THRESHOLD_FLOOR, 0.0)])
         | st.integers(min_value=-(2**63), max_value=0))


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("key", sorted(CONFIG_KEYS))
def test_config_check_refuses_a_threshold_of_zero_in_every_key_naming_the_floor(
        tmp_path: Path, key: str) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(CONFIG_KEYS[key].format(v="0.0"))
    out = subprocess.run([*EDGE, "config", "check", str(path)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 2
    line = one_line(out.stderr)
    assert key.replace("threshold_max", "threshold_min") in line and FLOOR_TEXT in line


def test_replay_refuses_a_threshold_below_the_floor_and_takes_the_floor_itself(
        tmp_path: Path) -> None:
    wav = tmp_path / "quiet.wav"
    write_wav(wav, np.zeros(16000, np.int16))
    home = {"HOME": str(tmp_path), "STATE_DIRECTORY": str(tmp_path / "state"), "PATH": ""}
    for bad in ("0", "0.0", "0.09", "-1", "nan", "-inf"):
        out = subprocess.run([*EDGE, "replay", str(wav), f"--threshold={bad}"],
                             capture_output=True, text=True, timeout=120, env=home)
        assert out.returncode == 2, out.stderr
        line = one_line(out.stderr)
        assert line.startswith("edge: error: --threshold") and "give 0.1 to 1" in line
    out = subprocess.run([*EDGE, "replay", str(wav), "--threshold", "0.1", "--json"],
                         capture_output=True, text=True, timeout=300, env=home)
    assert out.returncode == 0, out.stderr


def test_the_recorder_itself_refuses_a_threshold_below_the_floor(tmp_path: Path) -> None:
    h = Harness(config(tmp_path), {})
    try:
        with pytest.raises(ValueError, match=FLOOR_TEXT):
            h.recorder.set_threshold("m", 0.0)
        assert h.recorder.policy.thresholds == {"m": 0.5}
        h.recorder.set_threshold("m", THRESHOLD_FLOOR)
        assert h.recorder.policy.thresholds == {"m": THRESHOLD_FLOOR}
    finally:
        h.close()


class _Published:
    """The broker connection, as the command worker sees it: what it publishes."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any]]] = []

    def publish(self, topic: str, payload: str, qos: int = 0, retain: bool = False) -> None:
        self.messages.append((topic, json.loads(payload)))


def _mqtt_plugin(commands: Commands) -> MqttPlugin:
    # mqtt.threshold_min = 0 cannot come from a file; built in code, the floor still holds
    cfg = replace(Config(), mqtt=replace(Config().mqtt, threshold_min=0.0))
    plugin = MqttPlugin(cfg, FakeClock(), commands, thresholds={"hey_jarvis": 0.5},
                        mute=None,  # type: ignore[arg-type]
                        device_id="0123456789abcdef")
    plugin.conn = _Published()  # type: ignore[assignment]
    return plugin


@given(value=BELOW)
@example(value=0)
@example(value=THRESHOLD_FLOOR - 1e-12)
def test_no_value_below_the_floor_is_accepted_by_any_way_of_setting_a_threshold(
        value: float) -> None:
    text = repr(value)  # TOML reads Python's repr of a float or an int, -inf included
    with tempfile.TemporaryDirectory() as tmp:
        for key, body in CONFIG_KEYS.items():
            path = Path(tmp) / "edge.toml"
            path.write_text(body.format(v=text))
            with pytest.raises(ConfigError, match="threshold") as caught:
                load_config(path)
            assert "\n" not in str(caught.value), key
    with pytest.raises(UsageError, match="--threshold"):
        replay_config(argparse.Namespace(config=None, threshold=float(value), model=None))
    commands = Commands()
    plugin = _mqtt_plugin(commands)
    payload = json.dumps({"model": "hey_jarvis", "threshold": value}).encode()
    plugin._command("set_threshold", payload)
    (topic, answer), = plugin.conn.messages  # type: ignore[union-attr]
    assert topic.endswith("/cmd/set_threshold/result") and not answer["ok"]
    with pytest.raises(queue.Empty):  # nothing reached the audio loop
        commands.get_nowait()
