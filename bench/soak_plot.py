"""Plot a soak's RSS against hours of audio (the README's curve).

    .venv/bin/python bench/soak_plot.py bench/results/soak.json docs/soak_rss.png

The line over the last half is the least-squares fit ``bench/soak.py`` reports
(``rss_slope_last_half_kb_per_h``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from soak import last_half  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: soak_plot.py SOAK_JSON OUT_PNG", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = json.loads(Path(argv[0]).read_text())
    half = last_half(result["samples"])
    samples = result["samples"][:-1]  # the last one is taken after shutdown
    h = np.array([s["audio_h"] for s in samples])
    mb = np.array([s["rss_kb"] for s in samples]) / 1024
    hh = np.array([s["audio_h"] for s in half])
    slope, icept = np.polyfit(hh, np.array([s["rss_kb"] for s in half], dtype=float), 1)
    stderr = result.get("rss_slope_stderr_kb_per_h")
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
    ax.plot(h, mb, ".-", lw=1, ms=3, label="daemon RSS")
    ax.plot(hh, (slope * hh + icept) / 1024, "-", lw=2,
            label=f"last half: {result.get('rss_slope_last_half_kb_per_h', slope):+.1f} kB per "
                  "audio hour"
                  + (f" (± {2 * stderr:.1f}, 95 %)" if stderr is not None else ""))
    ax.set_xlabel("hours of audio (accelerated)")
    ax.set_ylabel("RSS (MB)")
    lo = float(mb.min())
    ax.set_ylim(lo - 2, lo + 6)
    ax.set_title(f"Soak: {result['hours_of_audio']:g} h of audio, {result['clips']} clips, "
                 f"{result['broker_restarts']} broker restarts", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    Path(argv[1]).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(argv[1])
    print(f"wrote {argv[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
