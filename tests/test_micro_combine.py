"""wake.combine: a wake word both families run, as one decision (any, both, off)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from edge.audio import synth
from edge.audio.frames import FRAME_SAMPLES
from edge.config import WakeConfig
from edge.wake.detector import build_detector
from edge.wake.models import ModelStore
from tests.fixtures.audio import phrase, prose, write_wav

PAIR = ("alexa", "micro:alexa")


def streams() -> dict[str, np.ndarray]:
    """"alexa" that both families hear, one only openWakeWord hears, one only microWakeWord
    hears (espeak voices found by trying them), each its own stream from 1 s of silence."""
    said = {"both": phrase("alexa"), "oww only": synth.speak("alexa", "en-us+f2", 130),
            "micro only": synth.speak("alexa", "en-us+f3", 160)}
    return {k: synth.concat([synth.silence(1.0), v, synth.silence(2.0)]) for k, v in said.items()}


def wakes(combine: str, store: ModelStore) -> dict[str, list[str]]:
    detector = build_detector(WakeConfig(models=PAIR, combine=combine), store)
    out = {}
    for name, audio in streams().items():
        detector.reset()
        found = []
        for i in range(len(audio) // FRAME_SAMPLES):
            scores = detector.engine.process(audio[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES])
            found += [d.model for d in detector.policy.step(scores, i)]
        out[name] = found
    return out


def test_off_keeps_the_families_apart(store):
    found = wakes("off", store)
    assert {k: sorted(v) for k, v in found.items()} == {
        "both": ["alexa", "micro:alexa"], "oww only": ["alexa"], "micro only": ["micro:alexa"]}


def test_any_wakes_once_for_each_utterance_either_family_heard(store):
    found = wakes("any", store)
    assert len(found["both"]) == 1
    assert found["oww only"] == ["alexa"] and found["micro only"] == ["micro:alexa"]


def test_both_wakes_only_where_both_families_heard(store):
    found = wakes("both", store)
    assert len(found["both"]) == 1
    assert found["oww only"] == [] and found["micro only"] == []


def test_replay_takes_combine(store, tmp_path):
    files = [str(write_wav(tmp_path / f"{i}.wav", a)) for i, a in enumerate(streams().values())]
    counts = {}
    for mode in ("off", "any", "both"):
        out = subprocess.run([sys.executable, "-m", "edge", "replay", "--json", "--model", "alexa",
                              "--model", "micro:alexa", "--combine", mode, *files],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        counts[mode] = sum(json.loads(line)["event"] == "detection"
                           for line in out.stdout.splitlines())
    assert counts == {"off": 4, "any": 3, "both": 1}


def test_measure_reports_each_modes_miss_rate_and_false_accepts_side_by_side(store, tmp_path):
    (tmp_path / "neg").mkdir()
    write_wav(tmp_path / "neg" / "prose.wav", prose(60.0, seed=9))
    (tmp_path / "pos" / "alexa").mkdir(parents=True)
    for name, audio in streams().items():
        write_wav(tmp_path / "pos" / "alexa" / f"{name.replace(' ', '_')}.wav", audio)
    out = subprocess.run([sys.executable, "-m", "edge", "measure", str(tmp_path / "neg"),
                          "--positives", str(tmp_path / "pos"), "--model", "alexa",
                          "--model", "micro:alexa", "--combine", "any", "--jobs", "1", "--pad", "0",
                          "--quiet", "--out", str(tmp_path / "report")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    rows = json.loads((tmp_path / "report" / "combine.json").read_text())
    got = {(r["mode"], r["models"]): (r["missed"], r["positives"], r["false_accepts"])
           for r in rows}
    assert got == {("off", "alexa"): (1, 3, 0), ("off", "micro:alexa"): (1, 3, 0),
                   ("any", "alexa+micro:alexa"): (0, 3, 0),
                   ("both", "alexa+micro:alexa"): (2, 3, 0)}
    assert "micro:alexa" in out.stdout and "false accepts per hour" in out.stdout
