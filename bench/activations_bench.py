"""The activation log: what a write costs, and what the score-margin verifier tells apart.

1. Writes: one activation row (one transaction, WAL, synchronous=FULL, fsynced) on
   the disk holding this checkout; milliseconds per row and bytes per row.
2. Verifier: espeak-ng "hey jarvis" in several voices and speeds (true wakes), and
   near misses ("hey jervis", "hey travis", ...) in three voices plus ten minutes
   of espeak-ng prose (every detection a false wake), through the real engine and
   policy at thresholds 0.5 (default) and 0.2; how many of each the score-margin
   verifier (margin 0.1, 2 frames) accepts. Reported, not a target.

Writes bench/results/activations.json. Targets: a row costs under 50 ms (median)
and under 2 KB on disk.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edge.activations.store import ActivationLog, ActivationRow
from edge.audio import synth
from edge.audio.frames import FRAME_SAMPLES
from edge.config import WakeConfig
from edge.wake.detector import build_engine
from edge.wake.policy import DetectionPolicy, ModelPolicy, ScoreRun
from edge.wake.verifier import Candidate, ScoreMarginVerifier

HERE = Path(__file__).resolve().parent
OUT = HERE / "results"
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-029", "en-us+f3", "en-gb-x-rp")
SPEEDS = (130, 160, 190)
NEAR_MISSES = ("hey travis", "jarvis", "hey jarvie", "hey charles", "hey darvish", "hey jarred",
               "hey jervis", "hey javis", "hey marvin", "hey service")
NEAR_VOICES = ("en-us", "en-gb", "en-029")


def write_cost(n: int = 200) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix=".activations-bench-", dir=HERE))
    try:
        log = ActivationLog.open(tmp / "a.sqlite3")
        period = log.open_period(1.7e9, {"hey_jarvis": 0.5})
        times = []
        for i in range(n):
            row = ActivationRow(f"{i:08d}-0000-4000-8000-000000000000", 1.7e9 + i, "hey_jarvis",
                                0.5, 0.93, 6, f"{i:08d}-clip", 4.32, 0.41, "silence", "kept",
                                False, period=period, period_heard_s=float(i))
            t0 = time.perf_counter()
            log.record(row)
            times.append((time.perf_counter() - t0) * 1000)
        log.close()  # checkpoints the WAL into the database file
        size = sum(f.stat().st_size for f in tmp.iterdir())
        times.sort()
        return {"rows": n, "median_ms": round(statistics.median(times), 3),
                "p95_ms": round(times[int(0.95 * n)], 3),
                "bytes_per_row": round(size / n, 1), "filesystem_dir": str(HERE)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def detections(engine, stream: np.ndarray, threshold: float):  # type: ignore[no-untyped-def]
    """Each detection with the whole run of frames over the threshold that it started."""
    engine.reset()
    runs: list[ScoreRun] = []
    policy = DetectionPolicy([ModelPolicy("hey_jarvis", threshold)], on_run_end=runs.append)
    found = []
    pad = (-len(stream)) % FRAME_SAMPLES
    x = np.concatenate([stream, np.zeros(pad + FRAME_SAMPLES * 5, np.int16)])
    for i in range(len(x) // FRAME_SAMPLES):
        found += policy.step(engine.process(x[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES]), i)
    policy.reset()
    out = []
    for d in found:
        run = next((r for r in runs if r.model == d.model and r.first <= d.frame_index <= r.last),
                   None)
        out.append((max(d.score, run.peak) if run else d.score,
                    max(d.frames_over, run.frames) if run else d.frames_over))
    return out


def verifier_split() -> dict[str, object]:
    engine = build_engine(WakeConfig(models=["hey_jarvis"]))
    v = ScoreMarginVerifier(0.1, 2)
    positives = [synth.concat([synth.silence(1.0), synth.speak("hey jarvis", voice, speed),
                               synth.silence(1.5)]) for voice in VOICES for speed in SPEEDS]
    near = [synth.concat([synth.silence(1.0), synth.speak(text, voice), synth.silence(1.5)])
            for text in NEAR_MISSES for voice in NEAR_VOICES]
    prose = synth.prose(600.0, seed=21)
    result: dict[str, object] = {"true_wake_recordings": len(positives),
                                 "near_miss_recordings": len(near), "prose_minutes": 10.0}
    for threshold in (0.5, 0.2):
        true = [d for p in positives for d in detections(engine, p, threshold)[:1]]
        false = [d for n in near for d in detections(engine, n, threshold)]
        false += detections(engine, prose, threshold)
        def accepted(ds: list[tuple[float, int]], th: float = threshold) -> int:
            return sum(1 for peak, frames in ds
                       if v.verify(Candidate("", "hey_jarvis", th, peak, frames)).accept)
        result[f"threshold_{threshold}"] = {
            "true_wakes_detected": len(true), "true_wakes_accepted": accepted(true),
            "false_wakes": len(false), "false_wakes_rejected": len(false) - accepted(false),
            "true_frames_over": sorted(f for _, f in true),
            "false_peaks_frames": sorted((round(p, 3), f) for p, f in false),
        }
    return result


def main() -> int:
    writes = write_cost()
    split = verifier_split()
    results = {"writes": writes, "verifier": split}
    OUT.mkdir(exist_ok=True)
    (OUT / "activations.json").write_text(json.dumps(results, indent=2))
    print(f"activation row: median {writes['median_ms']} ms, p95 {writes['p95_ms']} ms, "
          f"{writes['bytes_per_row']} bytes")
    for k, r in split.items():
        if isinstance(r, dict):
            print(f"{k}: true wakes accepted {r['true_wakes_accepted']}/"
                  f"{r['true_wakes_detected']} (of {split['true_wake_recordings']}); "
                  f"false wakes rejected {r['false_wakes_rejected']}/{r['false_wakes']}")
    ok = writes["median_ms"] < 50 and writes["bytes_per_row"] < 2048
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
