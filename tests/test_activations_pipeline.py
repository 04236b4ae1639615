"""The activation log on the real pipeline: synthesized sessions through the live daemon."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge.activations.store import ActivationLog
from edge.audio import synth
from edge.audio.frames import FRAME_SAMPLES
from edge.audio.sources import ArraySource
from edge.cli import main as edge
from edge.clock import FakeClock
from edge.compose.daemon import Device
from edge.config import WakeConfig, replace
from edge.pipeline.daemon import Daemon
from tests.activation_helpers import config
from tests.device import build
from tests.fixtures.audio import phrase, prose

FRAME_S = 0.08


def frames_in(stream: np.ndarray) -> int:
    return -(-len(stream) // FRAME_SAMPLES)


def run_daemon(cfg, stream: np.ndarray,  # type: ignore[no-untyped-def]
               on_detection=None) -> tuple[Daemon, FakeClock]:
    """Run the live daemon over ``stream`` with a fake wall clock that keeps pace with it.

    ``on_detection[k]`` (k counted from 1) is called with the device five frames into
    the k-th activation's recording, on the audio thread, as a GPIO or MQTT command would.
    """
    clock = FakeClock()
    device = build(cfg, ArraySource(stream), clock=clock)
    daemon = device.daemon
    fired: set[int] = set()
    started: dict[int, int] = {}

    def hook() -> None:
        clock.advance(FRAME_S)
        rec = daemon.recorder
        k = rec.stats.detections
        if on_detection and k in on_detection and k not in fired:
            started.setdefault(k, rec.frame_index)
            if rec.frame_index - started[k] >= 5:
                fired.add(k)
                on_detection[k](device, clock)

    daemon.on_frame.append(hook)
    daemon.run(install_signals=False)
    return daemon, clock


def cancel(device: Device, clock: FakeClock) -> None:
    device.daemon.post(lambda r: r.cancel())


def mute_ten_minutes(device: Device, clock: FakeClock) -> None:
    mute = device.hardware.mute

    def command(r) -> None:  # type: ignore[no-untyped-def]
        mute.soft_mute(r, "a test")
        clock.advance(600.0)
        mute.soft_unmute(r, "a test", remote=False)

    device.daemon.post(command)


@pytest.fixture(scope="module")
def household() -> np.ndarray:
    """Wakes with and without a request, between stretches of ordinary talk and silence."""
    hj = phrase("hey jarvis")
    return synth.concat([
        synth.silence(2.0), hj, synth.silence(0.3), phrase("turn on the kitchen lights"),
        synth.silence(4.0),
        prose(15.0), synth.silence(2.0),
        hj, synth.silence(5.0),                     # nobody speaks after the wake
        prose(10.0, seed=1), synth.silence(2.0),
        hj, synth.silence(0.3), phrase("what is the weather like today"),  # cancelled
        synth.silence(4.0),
        hj, synth.silence(0.3), phrase("play some music in the living room"),  # muted
        synth.silence(4.0),
    ])


def test_household_session_counts_outcomes_labels_hours_and_rates(tmp_path, store, household,
                                                                   capsys):
    cfg = config(tmp_path, verifier="score_margin")
    daemon, _ = run_daemon(cfg, household, {3: cancel, 4: mute_ten_minutes})
    db = tmp_path / "activations.sqlite3"
    with ActivationLog.open(db) as log:
        got = log.rows()
        periods = log.periods()
    assert [(r["outcome"], r["likely_false"]) for r in got] == [
        ("kept", False), ("no_speech", True), ("cancelled_by_user", True),
        ("aborted_by_mute", True)]
    assert [r["model"] for r in got] == ["hey_jarvis"] * 4
    assert got[0]["clip_id"] == json.loads(next(
        (tmp_path / "clips").glob("*.json")).read_text())["id"]
    assert got[0]["frames_over"] >= 2 and got[0]["peak_score"] >= 0.9
    assert all(r["threshold"] == 0.5 and r["label"] == "unknown" for r in got)
    # listening: two periods (before and after the mute) that cover every frame heard
    assert [p.end_reason for p in periods] == ["muted", "stopped"]
    heard = sum(p.heard_s for p in periods)
    assert heard == pytest.approx(frames_in(household) * FRAME_S, abs=1e-6)

    # a person labels: the no-speech wake was false, the first one true
    assert edge(["label", "2", "false", "--db", str(db)]) == 0
    assert edge(["label", got[0]["id"][:8], "true", "--db", str(db)]) == 0
    capsys.readouterr()
    assert edge(["stats", "--json", "--db", str(db)]) == 0
    report = json.loads(capsys.readouterr().out)
    hours = heard / 3600
    assert report["listening_hours"] == pytest.approx(hours, rel=1e-4)
    c = report["counts"]
    assert (c["activations"], c["labelled_true"], c["labelled_false"],
            c["flagged_likely_false"], c["false"]) == (4, 1, 1, 3, 3)
    assert c["by_outcome"]["kept"] == 1 and c["by_outcome"]["no_speech"] == 1
    assert report["rates_per_hour"]["false"] == pytest.approx(3 / hours, rel=1e-3)
    assert report["rates_per_hour"]["labelled_false"] == pytest.approx(1 / hours, rel=1e-3)
    assert report["false_durations"]["count"] == 3
    assert daemon.recorder.stats.clips == 1


def test_rates_are_kept_apart_per_threshold(tmp_path, store):
    request = synth.concat([synth.silence(1.0), phrase("hey jarvis"), synth.silence(0.3),
                            phrase("turn on the kitchen lights"), synth.silence(3.0)])
    quiet = synth.concat([request, synth.silence(20.0)])
    run_daemon(config(tmp_path), request)
    cfg = config(tmp_path)
    run_daemon(replace(cfg, wake=replace(WakeConfig(), threshold=0.7)), quiet)
    with ActivationLog.open(tmp_path / "activations.sqlite3") as log:
        from edge.activations.stats import compute

        report = compute(log)
    g5, g7 = report["by_model_threshold"]
    assert (g5["model"], g5["threshold"], g5["activations"]) == ("hey_jarvis", 0.5, 1)
    assert (g7["threshold"], g7["activations"]) == (0.7, 1)
    assert g5["hours"] == pytest.approx(frames_in(request) * FRAME_S / 3600, rel=1e-4)
    assert g7["hours"] == pytest.approx(frames_in(quiet) * FRAME_S / 3600, rel=1e-4)
    assert report["listening_hours"] == pytest.approx(g5["hours"] + g7["hours"], rel=1e-6)


def test_a_clip_nobody_keeps_is_logged_as_discarded(tmp_path, store):
    cfg = config(tmp_path)
    cfg = replace(cfg, output=replace(cfg.output, keep_local=False))
    request = synth.concat([synth.silence(1.0), phrase("hey jarvis"), synth.silence(0.3),
                            phrase("turn on the kitchen lights"), synth.silence(3.0)])
    run_daemon(cfg, request)  # upload off, no local copy: the clip is discarded
    with ActivationLog.open(tmp_path / "activations.sqlite3") as log:
        (r,) = log.rows()
    assert (r["outcome"], r["end_reason"], r["likely_false"]) == ("discarded", "silence", False)
    assert r["clip_id"] is not None
