"""microWakeWord engines: CPU per audio second and peak RSS of our numpy engine against
pymicro-wakeword (TensorFlow Lite) and against our openWakeWord engine.

Each engine runs in a fresh process (so its peak RSS is its own) over the same audio:
espeak-ng prose (speech) and quiet pink noise at -60 dBFS (a quiet room, where the idle
gate applies). Writes bench/results/micro.json.

Targets (the bench fails when one is missed): no more CPU than pymicro-wakeword on speech
(the issue's target), and an idle gate that skips at least 80 % of what the networks cost
in a quiet room. The front end keeps running while the room is quiet (its noise estimate
and gain must adapt), so it is measured alone too, as the floor: the gate's share is
``(ungated - gated) / (ungated - front end alone)``.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]
SECONDS = 180.0
ENGINES = {
    "micro (edge, numpy)": ("micro", "okay_nabu", False),
    "micro (edge, numpy, idle gate)": ("micro", "okay_nabu", True),
    "pymicro-wakeword 2.5.0 (TFLite)": ("pymicro", "okay_nabu", False),
    "micro front end alone (pymicro-features)": ("front", "okay_nabu", False),
    "openWakeWord models (edge engine)": ("oww", "hey_jarvis", False),
    "openWakeWord models (edge engine, idle gate)": ("oww", "hey_jarvis", True),
}
MAX_RATIO_VS_PYMICRO = 1.0
MIN_GATE_SHARE = 0.8


CACHE = Path(__file__).parent / ".cache"


def audio(kind: str) -> Path:
    """The test audio as .npy, made once here (the children only load it: 5.8 MB)."""
    from edge.audio import synth

    path = CACHE / f"micro_{kind}.npy"
    samples = (synth.prose(SECONDS, seed=5)[:int(SECONDS * 16000)] if kind == "speech"
               else synth.pink_noise(SECONDS, -60.0, seed=6))
    CACHE.mkdir(exist_ok=True)
    np.save(path, samples)
    return path


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss, not inherited over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def child(family: str, model: str, gate: bool, kind: str) -> dict[str, float]:
    """Run in the child process: load, process, report CPU and peak RSS."""
    samples = np.load(CACHE / f"micro_{kind}.npy")
    frames = [samples[i:i + 1280] for i in range(0, len(samples) - 1279, 1280)]
    rss_before = peak_rss_mb()
    if family == "pymicro":
        from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures

        from edge.wake.models import ModelStore

        store = ModelStore.default()
        ref = MicroWakeWord.from_config(store.resolve(model)[1])
        feats = MicroWakeWordFeatures()

        def process(frame: np.ndarray) -> None:
            for f in feats.process_streaming(frame.tobytes()):
                ref.process_streaming(f)
    elif family == "front":
        from edge.wake.micro.frontend import Frontend

        process = Frontend().rows  # type: ignore[assignment]
    else:
        from edge.config import WakeConfig
        from edge.wake.detector import build_engine

        engine = build_engine(WakeConfig(models=(model,), idle_gate=gate))
        process = engine.process  # type: ignore[assignment]
    t0 = time.process_time()
    for frame in frames:
        process(frame)
    cpu = time.process_time() - t0
    return {"cpu_ms_per_audio_s": round(cpu / (len(frames) * 0.08) * 1000, 3),
            "peak_rss_mb": peak_rss_mb(), "peak_rss_before_loading_mb": rss_before}


def run_child(family: str, model: str, gate: bool, kind: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, __file__, family, model, "1" if gate else "0", kind],
                         capture_output=True, text=True, cwd=ROOT, check=True)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    if "-h" in sys.argv or "--help" in sys.argv:
        print(__doc__.strip() + "\n\nusage: micro_bench.py [--repeat N]  (default 3; each "
              "figure is the median of N runs, taken in turn so the load falls on all alike)")
        return 0
    if len(sys.argv) == 5:  # the child
        family, model, flag, kind = sys.argv[1:]
        print(json.dumps(child(family, model, flag == "1", kind)))
        return 0
    repeat = int(sys.argv[sys.argv.index("--repeat") + 1]) if "--repeat" in sys.argv else 3
    for kind in ("speech", "quiet"):
        audio(kind)
    runs: dict[str, dict[str, list[dict[str, float]]]] = {
        name: {"speech": [], "quiet": []} for name in ENGINES}
    for _ in range(repeat):
        for name, (family, model, gate) in ENGINES.items():
            for kind in ("speech", "quiet"):
                runs[name][kind].append(run_child(family, model, gate, kind))
    results: dict[str, dict[str, dict[str, object]]] = {}
    for name, kinds in runs.items():
        results[name] = {}
        for kind, rs in kinds.items():
            cpus = [r["cpu_ms_per_audio_s"] for r in rs]
            rss = statistics.median(r["peak_rss_mb"] for r in rs)
            results[name][kind] = {"cpu_ms_per_audio_s": round(statistics.median(cpus), 3),
                                   "peak_rss_mb": rss, "runs_cpu_ms_per_audio_s": cpus}
            print(f"{name:<46} {kind:<7} {statistics.median(cpus):7.2f} ms CPU per audio s "
                  f"(median of {len(cpus)}), peak RSS {rss:6.1f} MB", flush=True)

    def cpu_of(name: str, kind: str, i: int) -> float:
        return runs[name][kind][i]["cpu_ms_per_audio_s"]

    # ratios run by run (runs taken side by side share the load), then their median
    ratio = statistics.median(cpu_of("micro (edge, numpy)", "speech", i)
                              / cpu_of("pymicro-wakeword 2.5.0 (TFLite)", "speech", i)
                              for i in range(repeat))
    saving: list[float] = []
    share: list[float] = []
    for i in range(repeat):
        ungated = cpu_of("micro (edge, numpy)", "quiet", i)
        gated = cpu_of("micro (edge, numpy, idle gate)", "quiet", i)
        front = cpu_of("micro front end alone (pymicro-features)", "quiet", i)
        saving.append(ungated / max(gated, 1e-9))
        share.append((ungated - gated) / max(ungated - front, 1e-9))
    summary = {
        "speech_cpu_ratio_vs_pymicro": round(ratio, 2),
        "issue_target_no_more_cpu_than_pymicro_met": ratio <= MAX_RATIO_VS_PYMICRO,
        "quiet_gate_saving": round(statistics.median(saving), 1),
        "quiet_gate_share_of_network_cpu_skipped": round(statistics.median(share), 2),
        "ok": ratio <= MAX_RATIO_VS_PYMICRO and statistics.median(share) >= MIN_GATE_SHARE,
    }
    OUT.mkdir(exist_ok=True)
    (OUT / "micro.json").write_text(json.dumps({"audio_s": SECONDS, "repeat": repeat,
                                                "results": results, "summary": summary},
                                               indent=2) + "\n")
    print(json.dumps(summary))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
