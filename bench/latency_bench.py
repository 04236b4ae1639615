"""Detection latency: from the end of a spoken wake word to the detection and to recording start.

    .venv/bin/python bench/latency_bench.py

Each wake phrase of ``edge.audio.synth.WAKE_PHRASES`` (but hey_mycroft, which espeak's
voice may not trigger) is synthesized once and placed in a stream at several
positions: four lead-ins (1.5, 2, 3 and 5 s) times four sub-frame offsets (0, 20,
40 and 60 ms, so the word ends at every phase of the 80 ms frame), over digital
silence, over pink noise at -60 dBFS (a quiet room) and, as a stress row that is
reported but not judged against the targets, over pink noise at -45 dBFS. The word ends at its last
sample above -40 dBFS (espeak's trailing silence trimmed). Every stream runs
through the real recorder (all three models loaded at once, default config,
Silero VAD) via ``ArraySource`` and ``Runner``, exactly as the daemon feeds it.

Measured in stream time (independent of the machine's speed):

* ``detection``: the detection's time (end of its triggering frame) minus the
  word's end;
* ``recording start``: the RecordingStarted event's time minus the detection's.

Targets: detection within 250 ms of the word's end (the p95), recording start
within one frame (80 ms) of the detection. Results: a table on stdout and
bench/results/latency.json. Exit status 1 if a target is missed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge.audio import synth  # noqa: E402
from edge.audio.frames import FRAME_S, SAMPLE_RATE  # noqa: E402
from edge.audio.sources import ArraySource  # noqa: E402
from edge.clock import FakeClock  # noqa: E402
from edge.config import Config, WakeConfig, replace  # noqa: E402
from edge.pipeline.events import DetectionEvent, EventBus, RecordingStarted  # noqa: E402
from edge.pipeline.recorder import Recorder  # noqa: E402
from edge.pipeline.runner import Runner  # noqa: E402
from edge.wake.detector import build_detector, model_store  # noqa: E402
from edge.wake.vad import SileroVad  # noqa: E402

RESULTS = ROOT / "bench" / "results"
PHRASES = {k: v for k, v in synth.WAKE_PHRASES.items() if k != "hey_mycroft"}
LEADS_S = (1.5, 2.0, 3.0, 5.0)
OFFSETS_S = (0.0, 0.02, 0.04, 0.06)
BACKGROUNDS = {"silence": None, "pink -60 dBFS": -60.0, "pink -45 dBFS": -45.0}
# Targets are judged on the clean phrases and in a quiet room (-60 dBFS). -45 dBFS pink noise
# is a stress row, reported but not judged: there espeak's "alexa" is often not detected at
# all and detections come later, with the upstream engine exactly as with ours.
INFORMATIONAL = {"pink -45 dBFS"}
TAIL_S = 3.0
WORD_END_DBFS = -40.0
TARGET_DETECTION_MS = 250.0
TARGET_START_MS = FRAME_S * 1000


def word_end(pcm: np.ndarray) -> int:
    """Samples up to the last one above WORD_END_DBFS: espeak's trailing silence trimmed."""
    above = np.nonzero(np.abs(pcm.astype(np.int32)) > 32767 * 10 ** (WORD_END_DBFS / 20))[0]
    return int(above[-1]) + 1


def stream(pcm: np.ndarray, lead_s: float, dbfs: float | None, seed: int) -> np.ndarray:
    total = int(round(lead_s * SAMPLE_RATE)) + len(pcm) + int(TAIL_S * SAMPLE_RATE)
    x = np.zeros(total, np.int32)
    if dbfs is not None:
        x += synth.pink_noise(total / SAMPLE_RATE, dbfs, seed=seed)[:total]
    start = int(round(lead_s * SAMPLE_RATE))
    x[start:start + len(pcm)] += pcm
    return np.clip(x, -32768, 32767).astype(np.int16)


class Trial:
    def __init__(self, cfg: Config, detector: Any, vad: Any) -> None:
        self.cfg, self.detector, self.vad = cfg, detector, vad

    def run(self, samples: np.ndarray) -> list[Any]:
        self.detector.reset()
        self.vad.reset()
        bus = EventBus()
        events: list[Any] = []
        bus.subscribe("bench", events.append, maxsize=100000)
        rec = Recorder(self.detector.engine, self.detector.policy, self.vad, self.cfg.record,
                       self.cfg.audio.pre_roll_s, bus, lambda clip: None, FakeClock())
        Runner(ArraySource(samples), rec).run()
        bus.close(timeout=30.0)
        return events


def percentile(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 1) if xs else None


def summarize(det_ms: list[float], start_ms: list[float], trials: int) -> dict[str, Any]:
    return {
        "trials": trials,
        "detected": len(det_ms),
        "detection_ms_median": percentile(det_ms, 50),
        "detection_ms_p95": percentile(det_ms, 95),
        "detection_ms_min": percentile(det_ms, 0),
        "detection_ms_max": percentile(det_ms, 100),
        "recording_start_ms_median": percentile(start_ms, 50),
        "recording_start_ms_p95": percentile(start_ms, 95),
    }


def main() -> int:
    wake = WakeConfig(models=list(PHRASES))
    cfg = replace(Config(), wake=wake)
    store = model_store(wake)
    trial = Trial(cfg, build_detector(wake, store), SileroVad.load(store.path("silero_vad")))

    rows: dict[str, Any] = {}
    by_bg: dict[str, tuple[list[float], list[float]]] = {bg: ([], []) for bg in BACKGROUNDS}
    misses: list[dict[str, Any]] = []
    for model, text in PHRASES.items():
        pcm = synth.speak(text)
        end = word_end(pcm)
        for bg, dbfs in BACKGROUNDS.items():
            det_ms: list[float] = []
            start_ms: list[float] = []
            n = 0
            for i, lead in enumerate(LEADS_S):
                for j, off in enumerate(OFFSETS_S):
                    n += 1
                    lead_s = lead + off
                    events = trial.run(stream(pcm, lead_s, dbfs, seed=10 * i + j))
                    t_end = lead_s + end / SAMPLE_RATE
                    dets = [e.detection for e in events if isinstance(e, DetectionEvent)
                            and e.detection.model == model and e.detection.t >= lead_s]
                    starts = [e.t for e in events if isinstance(e, RecordingStarted)]
                    if not dets:
                        misses.append({"model": model, "background": bg, "lead_s": lead_s})
                        continue
                    det_ms.append((dets[0].t - t_end) * 1000)
                    start_ms.append((starts[0] - dets[0].t) * 1000 if starts else float("inf"))
            rows[f"{model} / {bg}"] = summarize(det_ms, start_ms, n)
            by_bg[bg][0].extend(det_ms)
            by_bg[bg][1].extend(start_ms)
    per_trial = len(LEADS_S) * len(OFFSETS_S) * len(PHRASES)
    overall = {f"all / {bg}": summarize(d, s, per_trial) for bg, (d, s) in by_bg.items()}
    met: dict[str, bool] = {}
    for name, r in overall.items():
        bg = name.removeprefix("all / ")
        if bg in INFORMATIONAL:
            continue
        met[f"{bg}: detection p95 <= {TARGET_DETECTION_MS:.0f} ms"] = \
            r["detection_ms_p95"] is not None and r["detection_ms_p95"] <= TARGET_DETECTION_MS
        met[f"{bg}: recording start p95 <= {TARGET_START_MS:.0f} ms"] = \
            r["recording_start_ms_p95"] is not None \
            and r["recording_start_ms_p95"] <= TARGET_START_MS
        if bg == "silence":  # in noise, espeak's "alexa" is sometimes missed (upstream too)
            met[f"{bg}: every trial detected"] = r["detected"] == r["trials"]
    result = {
        "what": "stream-time latency from the end of the wake word (last sample above "
                f"{WORD_END_DBFS} dBFS) to the detection and to recording start",
        "setup": {"models": list(PHRASES), "leads_s": LEADS_S, "offsets_s": OFFSETS_S,
                  "backgrounds": list(BACKGROUNDS), "config": "defaults (threshold 0.5, "
                  "patience 1, idle gate on)"},
        "overall": overall,
        "by_phrase": rows,
        "misses": misses,
        "targets": met,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "latency.json").write_text(json.dumps(result, indent=2) + "\n")

    head = (f"{'phrase / background':<28} {'found':>7} {'det med':>8} {'det p95':>8} "
            f"{'det min':>8} {'det max':>8} {'rec p95':>8}")
    print(head)
    print("-" * len(head))
    for name, r in [*rows.items(), *overall.items()]:
        print(f"{name:<28} {r['detected']:>3}/{r['trials']:<3} "
              + " ".join(f"{_ms(r[k]):>8}" for k in ("detection_ms_median", "detection_ms_p95",
                                                    "detection_ms_min", "detection_ms_max",
                                                    "recording_start_ms_p95")))
    print("(ms of stream time after the word ends; rec = recording start after the detection)")
    for k, ok in met.items():
        print(f"target {k}: {'met' if ok else 'MISSED'}")
    return 0 if all(met.values()) else 1


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


if __name__ == "__main__":
    raise SystemExit(main())
