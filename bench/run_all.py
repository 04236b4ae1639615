"""Run every bench/*_bench.py in turn (`make bench`); each writes bench/results/<name>.json.

Usage: python bench/run_all.py [NAME ...]   (e.g. `engine latency`; default: all)
Exits non-zero if any benchmark fails its targets or crashes. At the end, one table of the
figures issue 18 asks for side by side, from this run's results (bench/results/measure.json,
daemon_memory.json; soak.json from the last `make soak`).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def summary() -> list[str]:
    """Issue 18's figures, side by side: measure against openwakeword's loop, the daemon's
    memory and start-up, each stage's CPU, Dask against local, and the soak's slope."""
    out = []
    m = _load("measure")
    if m is not None:
        runs = m["runs"]
        out.append(f"measure, one {m['audio_s'] / 60:.1f}-minute file, {m['cores']} cores "
                   f"(wall s, x openwakeword's loop):")
        for name in ("openwakeword", "openwakeword 1 core", "measure -j2",
                     "measure -j2 --no-plots", "measure -j2 --exact", "measure -j1 1 core",
                     "measure --cluster (2 workers)"):
            if name in runs:
                r = runs[name]
                out.append(f"  {name:<32} {r['wall_s']:>7.2f} s "
                           f"{r['speedup_vs_openwakeword']:>6.2f}x")
        out.append(f"  one core against the loop on one core: "
                   f"{m['one_core_speedup_vs_openwakeword']:.2f}x")
        dask, local = runs.get("measure --cluster (2 workers)"), runs.get("measure -j2")
        if dask is not None and local is not None:
            out.append(f"  Dask LocalCluster / local wall: {dask['wall_s'] / local['wall_s']:.2f}")
    d = _load("daemon_memory")
    if d is not None:
        pace = d.get("reference_numpy_import_s")
        out.append("daemon (peak RSS MB, start to first scored frame s, CPU per audio s)"
                   + (f"; the machine's pace, python -c 'import numpy': {pace:.3f} s:"
                      if pace is not None else ":"))
        for name, r in d["rows"].items():
            out.append(f"  {name:<32} {r['peak_rss_mb']:>7.1f} {r['startup_s']:>7.3f} "
                       f"{r['cpu_x_realtime']:>8.5f}")
        out.append("per-frame CPU, us (numpy / onnxruntime):")
        auto, ort = d["stage_cpu_us_per_frame"]["auto"], d["stage_cpu_us_per_frame"]["onnxruntime"]
        out += [f"  {k:<32} {auto[k]:>7.1f} {ort[k]:>7.1f}" for k in auto]
        out += [f"  target {k}: {v['value']:.3f} {'met' if v['pass'] else 'NOT met'}"
                for k, v in d["targets"].items()]
    s = _load("soak")
    if s is not None and "rss_slope_last_half_kb_per_h" in s:
        out.append(f"soak ({s['hours_of_audio']:g} h of audio, last `make soak`): RSS over the "
                   f"last half {s['rss_slope_last_half_kb_per_h']:+.1f} kB per audio hour "
                   f"(standard error {s.get('rss_slope_stderr_kb_per_h', float('nan')):.1f}): "
                   f"{'flat' if s.get('rss_flat_last_half') else 'NOT flat'}")
    return out


def main(argv: list[str]) -> int:
    benches = sorted(HERE.glob("*_bench.py"))
    if argv:
        benches = [b for b in benches if b.stem.removesuffix("_bench") in argv]
    failed = []
    for bench in benches:
        print(f"\n=== {bench.stem} ===", flush=True)
        start = time.monotonic()
        rc = subprocess.call([sys.executable, str(bench)], cwd=HERE.parent)
        print(f"--- {bench.stem}: exit {rc} in {time.monotonic() - start:.0f} s", flush=True)
        if rc != 0:
            failed.append(bench.stem)
    lines = summary()
    if lines:
        print("\n=== issue 18, side by side ===")
        print("\n".join(lines))
    print(f"\n{len(benches) - len(failed)} of {len(benches)} benchmarks met their targets"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
