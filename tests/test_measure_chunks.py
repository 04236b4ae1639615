"""``edge measure`` on one long file: chunks, batched scoring, a Dask cluster, padding.

The reference is always the live device's engine, one frame at a time over the whole
file. The file puts wake phrases across every chunk boundary, one right after a quiet
stretch that began before the chunk's lead (the idle gate's hardest catch-up), and one
that starts inside a chunk's lead.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge.audio import synth
from edge.audio.frames import FRAME_SAMPLES, SAMPLE_RATE
from edge.audio.sources import ArraySource
from edge.cli import main as edge_main
from edge.config import Config, WakeConfig, replace
from edge.measure.chunks import Task, file_info, padded, plan
from edge.measure.corpus import Job
from edge.measure.pool import Setup, Worker
from edge.measure.sweep import DEFAULT_THRESHOLDS, activations, policy_at
from edge.wake.detector import build_engine
from tests.fixtures.audio import phrase, prose, write_wav

MODELS = ["hey_jarvis", "alexa"]
CHUNK = 250
"""Frames per chunk here: 20 s, so 100 s of audio is five chunks."""


def _at(base: np.ndarray, start_s: float, part: np.ndarray) -> float:
    """Mix ``part`` into ``base`` at ``start_s``; returns where it ends, in s."""
    a = round(start_s * SAMPLE_RATE)
    base[a:a + len(part)] = np.clip(base[a:a + len(part)].astype(np.int32) + part,
                                    -32768, 32767)
    return (a + len(part)) / SAMPLE_RATE


@pytest.fixture(scope="module")
def long_file(tmp_path_factory) -> tuple[Path, np.ndarray]:  # type: ignore[no-untyped-def]
    """100 s over quiet room noise; chunk boundaries at 20, 40, 60 and 80 s."""
    audio = synth.pink_noise(100.0, -62.0, seed=5)
    hj, alexa = phrase("hey jarvis"), phrase("alexa")

    def talk(seconds: float, seed: int) -> np.ndarray:
        return prose(seconds, seed=seed)[:round(seconds * SAMPLE_RATE)]

    _at(audio, 6.0, talk(12.0, 40))
    _at(audio, 19.4, hj)       # across the boundary at 20 s
    _at(audio, 22.0, talk(7.0, 41))
    _at(audio, 39.9, alexa)    # after 10 s of quiet that began before the lead (33 s)
    _at(audio, 45.0, talk(13.0, 42))
    _at(audio, 59.5, hj)       # across the boundary at 60 s
    _at(audio, 79.1, hj)       # after quiet, starting inside the lead of the chunk at 80 s
    _at(audio, 85.0, talk(9.0, 43))
    path = write_wav(tmp_path_factory.mktemp("long") / "long.wav", audio)
    return path, audio


_device: dict[tuple[int, bool], tuple[np.ndarray, int]] = {}


def device_scores(audio: np.ndarray, gate: bool) -> tuple[np.ndarray, int]:
    """The live device's scores, one frame at a time over the whole file (and its count of
    frames the idle gate skipped); computed once per file and gate."""
    key = (id(audio), gate)
    if key not in _device:
        _device[key] = _device_scores(audio, gate)
    return _device[key]


def _device_scores(audio: np.ndarray, gate: bool) -> tuple[np.ndarray, int]:
    engine = build_engine(WakeConfig(models=MODELS, idle_gate=gate))
    src = ArraySource(audio)
    out = []
    while (frame := src.read()) is not None:
        out.append(engine.process(frame))
    return np.array(out), engine.frames_skipped


def scored(path: Path, mode: str, gate: bool, out: Path,
           onnxruntime: bool = True) -> tuple[np.ndarray, int, list[Task]]:
    cfg = Config()
    cfg = replace(cfg, wake=replace(cfg.wake, models=MODELS, idle_gate=gate))
    job = Job(0, path, "negative")
    tasks = plan([job], {0: file_info(path)}, True, CHUNK)
    worker = Worker(Setup(cfg, out, mode=mode, chunk_frames=CHUNK))
    if mode == "batched":
        assert worker.span is not None and worker.span.sequence is not None
        if not onnxruntime:  # as without onnxruntime installed: numpy streams the embedding
            worker.span.sequence = None
    results = [worker.run(t) for t in tasks]
    assert all(r.error is None and r.mode == mode for r in results)
    scores = np.concatenate([r.scores for r in results if r.scores is not None])
    return scores, sum(r.frames_skipped for r in results), tasks


def detections_at(scores: np.ndarray, threshold: float) -> list[tuple[str, int]]:
    wake = WakeConfig(models=MODELS)
    return [(m, d.frame_index) for k, m in enumerate(MODELS)
            for d in activations(scores[:, k], policy_at(wake, tuple(MODELS), m, threshold))]


@pytest.mark.parametrize("gate", [True, False])
def test_chunks_score_every_frame_bit_for_bit_as_the_whole_file(long_file, tmp_path, gate):
    path, audio = long_file
    ref, ref_skipped = device_scores(audio, gate)
    got, skipped, tasks = scored(path, "exact", gate, tmp_path)
    assert [(t.first, t.end) for t in tasks] == [(a, a + CHUNK) for a in range(0, 1250, CHUNK)]
    assert got.shape == ref.shape == (1250, 2)
    assert np.array_equal(got, ref)  # every frame, across every boundary
    assert skipped == ref_skipped and (skipped > 100 if gate else skipped == 0)
    found = sorted(detections_at(ref, 0.5), key=lambda d: d[1])
    assert [m for m, _ in found] == ["hey_jarvis", "alexa", "hey_jarvis", "hey_jarvis"]
    assert [f // CHUNK for _, f in found] == [1, 2, 3, 4]  # each just after a boundary


@pytest.mark.parametrize(("gate", "onnxruntime"), [(True, True), (False, True), (True, False)])
def test_batched_scores_stay_within_1e5_of_the_device_with_identical_detections(
        long_file, tmp_path, gate, onnxruntime):
    path, audio = long_file
    ref, ref_skipped = device_scores(audio, gate)
    got, skipped, _ = scored(path, "batched", gate, tmp_path, onnxruntime)
    assert got.shape == ref.shape
    assert float(np.abs(got - ref).max()) <= 1e-5
    assert np.array_equal(got == 0, ref == 0)  # the gate skips the same frames
    assert skipped == ref_skipped
    for t in (*DEFAULT_THRESHOLDS, 0.5):
        assert detections_at(got, t) == detections_at(ref, t)


def _report(out: Path) -> dict:  # type: ignore[type-arg]
    report = json.loads((out / "report.json").read_text())
    for volatile in ("created", "speed"):
        report.pop(volatile)
    return report


def _cli(path: Path, out: Path, *extra: str) -> dict:  # type: ignore[type-arg]
    """`edge measure` as a user runs it: its own process (OpenBLAS set up by `edge`)."""
    cmd = [sys.executable, "-m", "edge", "measure", str(path), "--out", str(out), "--quiet",
           "--no-plots", *sum((["--model", m] for m in MODELS), []), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return _report(out)


def test_jobs_and_a_dask_cluster_give_the_same_report(long_file, tmp_path):
    """`edge measure` as a user runs it, in its own process each time: one job, two jobs
    and a Dask LocalCluster of two worker processes on loopback, the file in five chunks."""
    from distributed import LocalCluster

    path, _ = long_file
    chunks = ["--chunk-s", str(CHUNK * 0.08)]
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        on_dask = _cli(path, tmp_path / "dask", *chunks, "--cluster", cluster.scheduler_address)
    one = _cli(path, tmp_path / "one", *chunks, "--jobs", "1")
    assert _cli(path, tmp_path / "two", *chunks, "--jobs", "2") == one
    assert on_dask == one
    assert one["files"][0]["chunks"] == 5
    assert one["detector"]["scoring"] == "batched"
    assert one["models"]["hey_jarvis"]["sweep"][9]["activations"] == 3  # at 0.5
    assert one["models"]["alexa"]["sweep"][9]["activations"] == 1
    rows = (tmp_path / "dask" / "snippets.csv").read_text()
    assert rows == (tmp_path / "one" / "snippets.csv").read_text().replace("/one/", "/dask/")


def test_pad_is_exact_to_the_sample_before_a_positive(tmp_path):
    from edge.audio.file import FileSource

    utterance = np.arange(1, 1001, dtype=np.int16)
    path = write_wav(tmp_path / "u.wav", utterance)
    frames = padded(FileSource(path), 1.0)
    flat = frames.reshape(-1)
    assert not flat[:SAMPLE_RATE].any()
    assert np.array_equal(flat[SAMPLE_RATE:SAMPLE_RATE + 1000], utterance)
    assert not flat[SAMPLE_RATE + 1000:].any() and len(flat) - SAMPLE_RATE - 1000 >= SAMPLE_RATE
    assert len(flat) % FRAME_SAMPLES == 0 and len(flat) - FRAME_SAMPLES < 2 * SAMPLE_RATE + 1280


def test_console_warns_of_unmatched_positive_folders_and_skipped_files(tmp_path, capsys):
    neg = tmp_path / "neg"
    neg.mkdir()
    write_wav(neg / "room.wav", synth.pink_noise(3.0, -50.0))
    (neg / "notes.txt").write_text("not audio\n")
    pos = tmp_path / "pos"
    (pos / "hey_siri").mkdir(parents=True)
    write_wav(pos / "hey_siri" / "0.wav", phrase("hey siri"))
    write_wav(pos / "0.wav", phrase("hey jarvis"))
    assert edge_main(["measure", str(neg), "--positives", str(pos), "--model", "hey_jarvis",
                      "--out", str(tmp_path / "o"), "--quiet", "--no-plots"]) == 0
    err = capsys.readouterr().err
    assert "warning: positives folder" in err and "hey_siri" in err and "--model" in err
    assert "warning: skipping" in err and "notes.txt" in err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["corpus"]["positives"]["unmatched_folders"] == ["hey_siri"]
    assert report["plots"]["det"] is None


@pytest.mark.parametrize(("subtype", "channel"), [("PCM_16", 1), ("PCM_16", -1), ("FLOAT", -1)])
def test_a_chunk_reads_the_frames_the_whole_stream_has(tmp_path, subtype, channel):
    import soundfile as sf

    from edge.audio.file import FileSource
    from edge.measure.chunks import read_frames

    rng = np.random.default_rng(3)
    stereo = rng.uniform(-0.5, 0.5, (SAMPLE_RATE * 3 + 77, 2)).astype(np.float32)
    path = tmp_path / "s.wav"
    sf.write(str(path), stereo, SAMPLE_RATE, subtype=subtype)
    src = FileSource(path, channel)
    whole = []
    while (frame := src.read()) is not None:
        whole.append(frame)
    ref = np.stack(whole)
    got = np.concatenate([read_frames(path, channel, a, min(a + 7, len(ref)))
                          for a in range(0, len(ref), 7)])
    assert np.array_equal(got, ref)


def test_a_positive_with_2_s_of_lead_in_scores_as_after_long_silence(tmp_path):
    """The documented rule for --pad: from 2 s (25 frames) of lead-in on, the utterance is
    scored as by a device that has listened to a silent room for long; with less, the
    classifier still sees the stream's start-up state (by 0.015 at the old 0.96 s)."""
    from edge.audio.file import FileSource
    from edge.measure.batch import StreamScorer

    path = write_wav(tmp_path / "hj.wav", phrase("hey jarvis"))
    scorer = StreamScorer.build(WakeConfig(models=["hey_jarvis"]))

    def utterance_scores(pad_s: float) -> np.ndarray:
        frames = padded(FileSource(path), pad_s)
        scores = np.vstack([s for _, s in scorer.run([frames])])
        start = round(pad_s / 0.08)
        return scores[start:start + 40]  # the utterance (15 frames) and what follows it

    long = utterance_scores(9.92)
    assert long.max() > 0.5
    for enough in (2.0, 2.16, 3.2):
        assert np.array_equal(utterance_scores(enough), long)
    for short in (0.48, 0.96):
        got = utterance_scores(short)  # its tail is short too
        assert np.abs(got - long[:len(got)]).max() > 1e-3


def test_no_plots_means_no_matplotlib_in_the_process(tmp_path):
    write_wav(tmp_path / "room.wav", synth.pink_noise(2.0, -50.0))
    code = ("import sys; from edge.cli import main; "
            f"rc = main(['measure', {str(tmp_path / 'room.wav')!r}, '--model', 'hey_jarvis', "
            f"'--out', {str(tmp_path / 'o')!r}, '--quiet', '--no-plots', '--jobs', '1']); "
            "print(rc, 'matplotlib' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.split()[-2:] == ["0", "False"], proc.stderr
