"""``edge measure``: the device's detector over recordings, counted, swept and reported."""

from __future__ import annotations

import base64
import csv
import json
import re
import struct

import numpy as np
import pytest
import soundfile as sf
import soxr

from edge.audio import synth
from edge.audio.frames import FRAME_S, FRAME_SAMPLES, SAMPLE_RATE
from edge.audio.sources import ArraySource
from edge.cli import main as edge_main
from edge.config import WakeConfig
from edge.measure.batch import StreamScorer, frame_chunks
from edge.measure.sweep import activations
from edge.wake.detector import build_engine, build_policy
from edge.wake.policy import ModelPolicy, detections_over
from tests.fixtures.audio import phrase, prose, write_wav

MODELS = ["hey_jarvis", "alexa"]


def engine_scores(samples: np.ndarray, gate: bool = True) -> np.ndarray:
    """The live device's scores: the streaming engine, one frame at a time."""
    engine = build_engine(WakeConfig(models=MODELS, idle_gate=gate))
    src = ArraySource(samples)
    out = []
    while (frame := src.read()) is not None:
        out.append(engine.process(frame))
    return np.array(out)


def noisy(parts: list[np.ndarray], dbfs: float = -55.0, seed: int = 0) -> np.ndarray:
    audio = synth.concat(parts)
    return (audio.astype(np.int32) + synth.pink_noise(len(audio) / SAMPLE_RATE, dbfs, seed)
            ).clip(-32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def placed() -> tuple[np.ndarray, list[float]]:
    """About 100 s of prose over room noise with "hey jarvis" ending at known times."""
    hj = phrase("hey jarvis")
    parts: list[np.ndarray] = []
    ends: list[float] = []
    for i, gap in enumerate((20.0, 25.0, 15.0)):
        parts.append(prose(gap, seed=10 + i))
        parts.append(hj)
        ends.append(sum(len(p) for p in parts) / SAMPLE_RATE)
    parts.append(prose(12.0, seed=20))
    return noisy(parts), ends


@pytest.fixture(scope="module")
def run(tmp_path_factory, placed):  # type: ignore[no-untyped-def]
    """One `edge measure` over negatives (one file converted from 44.1 kHz stereo, one not
    audio) and a positives folder laid out per keyword."""
    root = tmp_path_factory.mktemp("measure")
    audio, ends = placed
    neg = root / "neg"
    neg.mkdir()
    write_wav(neg / "placed.wav", audio)
    other = noisy([prose(14.0, seed=30), phrase("hey jarvis"), prose(6.0, seed=31)], seed=1)
    x = soxr.resample(other.astype(np.float32) / 32768.0, SAMPLE_RATE, 44100)
    sf.write(str(neg / "stereo44k.wav"), np.stack([x, 0.5 * x], axis=1), 44100,
             subtype="PCM_16")
    (neg / "readme.txt").write_text("not audio\n")
    pos = root / "positives"
    (pos / "Hey Jarvis").mkdir(parents=True)
    for i, text in enumerate(["hey jarvis", "hey jarvis", "good morning", "what time is it"]):
        write_wav(pos / "Hey Jarvis" / f"{i}.wav", phrase(text))
    (pos / "ok_google").mkdir()
    write_wav(pos / "ok_google" / "0.wav", phrase("okay google"))
    out = root / "out"
    rc = edge_main(["measure", str(neg), "--positives", str(pos), "--out", str(out),
                    *sum((["--model", m] for m in MODELS), []), "--jobs", "2", "--quiet"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    return root, out, report


def test_exact_scores_equal_the_streaming_engine_on_every_frame():
    hj = phrase("hey jarvis")
    audio = synth.concat([synth.pink_noise(4.0, -65.0), prose(12.0, seed=3), synth.silence(5.0),
                          hj, synth.pink_noise(3.0, -70.0, seed=2), prose(6.0, seed=4), hj,
                          synth.silence(0.5)])
    for gate in (True, False):
        ref = engine_scores(audio, gate)
        scorer = StreamScorer.build(WakeConfig(models=MODELS, idle_gate=gate))
        for _ in range(2):  # a second stream through the same scorer starts afresh
            got = np.vstack([s for _, s in scorer.run(frame_chunks(ArraySource(audio), 37))])
            assert got.shape == ref.shape
            assert np.array_equal(got, ref)  # bit for bit, every frame
        assert ref[:, 0].max() > 0.9


def test_sweep_policy_equals_the_device_policy_frame_by_frame():
    rng = np.random.default_rng(1)
    scores = rng.random(3000).astype(np.float32) ** 6
    scores[100:140] = 0.7
    scores[141] = np.float32(0.7)  # float32(0.7) < 0.7: the comparison must be the policy's
    for patience in (1, 3):
        for t in (0.1, 0.3, 0.5, 0.7, 0.9):
            p = ModelPolicy("m", t, patience, 2.0)
            assert activations(scores, p) == detections_over(scores[:, None], [p])


def test_placed_phrases_are_counted_once_each_at_the_engines_frames(run, placed):
    _, out, report = run
    audio, ends = placed
    rows = list(csv.DictReader((out / "snippets.csv").open()))
    mine = [r for r in rows if r["file"].endswith("placed.wav")]
    assert [r["model"] for r in mine] == ["hey_jarvis"] * 3
    for r, end in zip(mine, ends, strict=True):
        assert end - 0.3 <= float(r["time_s"]) <= end + 0.5
    ref = engine_scores(audio)
    policy = build_policy(WakeConfig(models=MODELS), tuple(MODELS))
    expected = detections_over(ref, policy.models)
    assert [(d.model, f"{d.t:.2f}") for d in expected] == [(r["model"], r["time_s"]) for r in mine]
    for d, r in zip(expected, mine, strict=True):  # batched scoring: within rounding
        assert abs(d.score - float(r["score"])) <= 1e-5
    placed_file = next(f for f in report["files"] if f["path"].endswith("placed.wav"))
    assert placed_file["activations_at_device_threshold"] == {"hey_jarvis": 3, "alexa": 0}
    assert placed_file["audio_s"] == pytest.approx(len(audio) / SAMPLE_RATE, abs=FRAME_S)


def test_measure_and_replay_agree_on_the_same_files(run, capsys):
    root, out, _ = run
    rows = list(csv.DictReader((out / "snippets.csv").open()))
    files = sorted(str(p) for p in (root / "neg").glob("*.wav"))
    capsys.readouterr()
    edge_main(["replay", *files, "--json", *sum((["--model", m] for m in MODELS), [])])
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    replayed = sorted((e["file"], f"{e['t']:.2f}", e["model"], e["score"])
                      for e in events if e["event"] == "detection")
    measured = sorted((r["file"], r["time_s"], r["model"], float(r["score"])) for r in rows)
    assert [r[:3] for r in replayed] == [m[:3] for m in measured]
    assert all(abs(r[3] - m[3]) <= 1e-5 for r, m in zip(replayed, measured, strict=True))
    assert any(f.endswith("stereo44k.wav") for f, *_ in measured)  # converted, and it counts


def test_positives_give_the_miss_rate_per_keyword_folder(run):
    _, _, report = run
    assert report["corpus"]["positives"]["per_model"] == {"hey_jarvis": 4, "alexa": 0}
    assert report["corpus"]["positives"]["unmatched_folders"] == ["ok_google"]
    at = {p["threshold"]: p for p in report["models"]["hey_jarvis"]["sweep"]}
    assert at[0.5]["positives"] == 4 and at[0.5]["misses"] == 2
    assert at[0.5]["miss_rate"] == 0.5
    assert all(p["miss_rate"] is None for p in report["models"]["alexa"]["sweep"])


def test_threshold_sweep_is_monotone_and_includes_the_device_threshold(run):
    _, _, report = run
    hours = report["audio_hours"]
    assert hours == pytest.approx(sum(f["audio_s"] for f in report["files"]) / 3600, abs=1e-6)
    for name in MODELS:
        sweep = report["models"][name]["sweep"]
        ts = [p["threshold"] for p in sweep]
        assert ts == sorted(ts) and 0.5 in ts and len(ts) == 19
        acts = [p["activations"] for p in sweep]
        assert acts == sorted(acts, reverse=True)
        assert all(p["false_accepts_per_hour"] == pytest.approx(p["activations"] / hours,
                                                                rel=1e-4) for p in sweep)
        miss = [p["miss_rate"] for p in sweep if p["miss_rate"] is not None]
        assert miss == sorted(miss)
        assert report["models"][name]["det"] == [[p["false_accepts_per_hour"], p["miss_rate"]]
                                                 for p in sweep]
    assert report["models"]["hey_jarvis"]["sweep"][0]["activations"] > 3  # 0.05 wakes more


def test_unreadable_files_are_listed_and_skipped(run):
    _, out, report = run
    assert [s["path"].rsplit("/", 1)[-1] for s in report["skipped"]] == ["readme.txt"]
    assert "not a readable audio file" in report["skipped"][0]["error"]
    assert report["corpus"]["negatives"]["files"] == 2
    assert "readme.txt" in (out / "report.html").read_text()


def test_snippets_are_pre_roll_plus_two_seconds_of_the_heard_audio(run, placed):
    _, out, _ = run
    audio, _ = placed
    rows = [r for r in csv.DictReader((out / "snippets.csv").open())
            if r["file"].endswith("placed.wav")]
    for r in rows:
        data, rate = sf.read(str(out / r["snippet"]), dtype="int16")
        assert rate == SAMPLE_RATE
        start = round(float(r["snippet_start_s"]) * SAMPLE_RATE)
        assert len(data) == (19 + 25) * FRAME_SAMPLES  # 1.5 s pre-roll in frames, then 2 s
        assert np.array_equal(data, audio[start:start + len(data)])
        assert start + 19 * FRAME_SAMPLES == round(float(r["time_s"]) * SAMPLE_RATE)


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_report_html_embeds_its_plots(run):
    _, out, report = run
    page = (out / "report.html").read_text()
    assert page.startswith("<!doctype html>") and page.rstrip().endswith("</html>")
    images = re.findall(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 3  # the DET curve and one timeline per readable negative
    assert images[0][0] == "DET curve"
    for _, b64 in images:
        w, h = _png_size(base64.b64decode(b64, validate=True))
        assert w >= 600 and h >= 200
    assert _png_size((out / report["plots"]["det"]).read_bytes()) == (700, 450)
    for f in report["files"]:
        assert (out / f["timeline"]).exists()
    for name in MODELS:  # each figure is stated with its corpus, threshold and grouping
        text = report["models"][name]["statement"]
        assert "threshold 0.5" in text and "2 s refractory" in text and " h of audio" in text
        assert text in page


def test_an_empty_input_set_is_an_error_that_says_so(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = edge_main(["measure", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "no input files" in err and "holds no files" in err
    assert not (tmp_path / "o").exists()


def test_inputs_that_are_all_unreadable_still_get_a_report_and_fail(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.wav").write_bytes(b"RIFF....nonsense")
    rc = edge_main(["measure", str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--quiet"])
    assert rc != 0 and "could be read" in capsys.readouterr().err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["audio_hours"] == 0 and len(report["skipped"]) == 1


def test_corpus_reads_keyword_folders_and_leaves_out_its_own_report(tmp_path):
    from edge.measure.corpus import find_corpus

    (tmp_path / "rec" / "old-report" / "snippets").mkdir(parents=True)
    (tmp_path / "rec" / "night.wav").write_bytes(b"x")
    (tmp_path / "rec" / "old-report" / "snippets" / "a.wav").write_bytes(b"x")
    (tmp_path / "rec" / ".DS_Store").write_bytes(b"x")
    pos = tmp_path / "pos"
    (pos / "Hey-Jarvis").mkdir(parents=True)
    (pos / "Hey-Jarvis" / "1.wav").write_bytes(b"x")
    (pos / "any.wav").write_bytes(b"x")
    corpus = find_corpus([tmp_path / "rec"], pos, ("hey_jarvis", "alexa"),
                         exclude=tmp_path / "rec" / "old-report")
    assert [j.path.name for j in corpus.negatives] == ["night.wav"]
    assert [(j.path.name, j.targets) for j in corpus.positives] == [
        ("1.wav", ("hey_jarvis",)), ("any.wav", ("hey_jarvis", "alexa"))]
    assert [j.index for j in corpus.jobs] == [0, 1, 2]


def test_report_html_opens_in_chromium_with_its_plots(run, browser):
    """The report opened in real headless Chromium: every plot decodes and is drawn."""
    _, out, _ = run
    browser.get((out / "report.html").as_uri())
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, "
        "i.naturalHeight, i.getBoundingClientRect().width])")
    assert len(images) == 3
    assert images[0][0] == "DET curve"
    for _alt, complete, nat_w, nat_h, shown_w in images:
        assert complete and nat_w >= 600 and nat_h >= 200 and shown_w > 0
    assert "false accepts per hour" in browser.page_source.lower()
    browser.save_screenshot(str(out / "report.png"))
    assert (out / "report.png").stat().st_size > 10_000
