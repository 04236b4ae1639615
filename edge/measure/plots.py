"""The report's plots, as PNG files: DET curves and per-file score timelines.

matplotlib (the ``measure`` extra) is imported here only, with the Agg backend.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio.frames import FRAME_S
from edge.files import atomic_write
from edge.measure.sweep import SweepPoint

MAX_POINTS = 4000
"""A timeline longer than this is drawn as the maximum score per bin, so no peak is lost."""


def _figure(width: float, height: float) -> tuple[Any, Any]:
    """A figure and its axes, without pyplot (no global figure registry, a lighter import);
    saving to PNG draws it with Agg."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    return fig, fig.subplots()


def det_curve(curves: Mapping[str, Sequence[SweepPoint]], hours: float, title: str,
              path: Path) -> Path:
    """Miss rate against false accepts per hour (log axis), one line per model.

    Without positives there is no miss rate: false accepts per hour are drawn
    against the threshold instead.
    """
    fig, ax = _figure(7, 4.5)
    has_miss = any(p.miss_rate is not None for pts in curves.values() for p in pts)
    if has_miss and hours > 0:
        # No false accept at all cannot sit on a log axis: such points go at half of
        # the smallest rate the corpus can show (one per `hours`), drawn hollow.
        floor = 0.5 / hours
        for model, pts in curves.items():
            pts = [p for p in pts if p.miss_rate is not None]
            x = [max(p.false_accepts_per_hour or 0.0, floor) for p in pts]
            y = [100.0 * (p.miss_rate or 0.0) for p in pts]
            (line,) = ax.plot(x, y, "-", label=model)
            zero = [p.false_accepts_per_hour == 0 for p in pts]
            ax.scatter([a for a, z in zip(x, zero, strict=True) if not z],
                       [b for b, z in zip(y, zero, strict=True) if not z], color=line.get_color(),
                       s=14, zorder=3)
            ax.scatter([a for a, z in zip(x, zero, strict=True) if z],
                       [b for b, z in zip(y, zero, strict=True) if z], facecolors="none",
                       edgecolors=line.get_color(), s=24, zorder=3)
            for label, a, b in _point_labels(pts, x, y):
                ax.annotate(label, (a, b), textcoords="offset points", xytext=(4, 3),
                            fontsize=7, color=line.get_color())
        ax.set_xscale("log")
        ax.set_xlabel(f"false accepts per hour (log; hollow: none in {hours:.2f} h)")
        ax.set_ylabel("miss rate (%)")
        ax.set_ylim(bottom=0)
    else:
        for model, pts in curves.items():
            ok = [p for p in pts if p.false_accepts_per_hour is not None]
            ax.plot([p.threshold for p in ok], [p.false_accepts_per_hour for p in ok], "o-",
                    markersize=3, label=model)
        ax.set_yscale("symlog", linthresh=max(1.0 / max(hours, 1e-9), 1e-3))
        ax.set_xlabel("threshold")
        ax.set_ylabel("false accepts per hour")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return path


def _save(fig: Any, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write(path, buf.getvalue())  # 0600, like every file we write


def _point_labels(pts: Sequence[SweepPoint], x: Sequence[float],
                  y: Sequence[float]) -> list[tuple[str, float, float]]:
    """One label per distinct point: its threshold, or the range of thresholds that share it."""
    groups: list[tuple[float, float, float, float]] = []  # first, last threshold, x, y
    for p, a, b in zip(pts, x, y, strict=True):
        if groups and (groups[-1][2], groups[-1][3]) == (a, b):
            groups[-1] = (groups[-1][0], p.threshold, a, b)
        else:
            groups.append((p.threshold, p.threshold, a, b))
    step = max(1, len(groups) // 10)
    return [(f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}", a, b)
            for lo, hi, a, b in groups[::step]]


def timeline(scores: np.ndarray, names: Sequence[str], thresholds: Mapping[str, float],
             activations: Sequence[tuple[str, float, float]], title: str, path: Path) -> Path:
    """Scores over time, one line per model, with the device's activations marked.

    ``activations``: (model, time in s, score).
    """
    n = scores.shape[0]
    seconds = n * FRAME_S
    unit, scale = ("h", 3600.0) if seconds > 3 * 3600 else \
        ("min", 60.0) if seconds > 300 else ("s", 1.0)
    if n > MAX_POINTS:
        per = -(-n // MAX_POINTS)
        padded = np.zeros((per * (-(-n // per)), scores.shape[1]), dtype=np.float32)
        padded[:n] = scores
        shown = padded.reshape(-1, per, scores.shape[1]).max(axis=1)
        t = (np.arange(len(shown)) * per + per / 2) * FRAME_S / scale
    else:
        shown = scores
        t = (np.arange(n) + 1) * FRAME_S / scale
    fig, ax = _figure(10, 2.6)
    for k, name in enumerate(names):
        (line,) = ax.plot(t, shown[:, k], lw=0.7, label=name)
        ax.axhline(thresholds[name], color=line.get_color(), ls="--", lw=0.6)
        hits = [(at, s) for m, at, s in activations if m == name]
        if hits:
            ax.plot([a / scale for a, _ in hits], [s for _, s in hits], "v",
                    color=line.get_color(), markersize=7)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlim(0, max(seconds / scale, 1e-9))
    ax.set_xlabel(f"time ({unit})")
    ax.set_ylabel("score")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    _save(fig, path)
    return path
