"""Accidental-wake statistics from the activation log, comparable with published figures.

Listening time is the audio actually heard while running and unmuted (80 ms
frames fed to the detector), summed over listening periods; a wall-clock jump
(a Pi without a real-time clock setting its time at boot) cannot inflate it.

A *false activation* is one labelled false, or flagged likely-false (no speech
after the wake, cancelled, aborted by mute, rejected by the verifier) and not
labelled either way. The labelled-only and flagged-only counts are given too.

For comparison: Dubois et al. (PoPETs 2020) measured commercial smart speakers
at about 0.95 accidental activations per hour of TV audio, some recording for
20 to 43 seconds; openWakeWord aims for under 0.5 false accepts per hour.

>>> report = compute(store, since=None)              # doctest: +SKIP
>>> report["rates_per_hour"]["false"]                # doctest: +SKIP
0.42
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from edge.activations.rows import Period, boot_id, pid_alive
from edge.activations.schema import OUTCOMES
from edge.activations.store import ActivationLog
from edge.clock import iso
from edge.pipeline.outcome import counts_as_false

DURATION_BUCKETS = (0.0, 2.0, 5.0, 10.0, 20.0, 30.0, 45.0)
"""Bucket edges (s) for the duration histogram; the last bucket is open-ended."""
REFERENCE = {
    "dubois_2020_accidental_per_hour": 0.95,
    "dubois_2020_long_recordings_s": [20, 43],
    "openwakeword_target_false_per_hour": 0.5,
}


def _is_false(r: dict[str, Any]) -> bool:
    return counts_as_false(r["label"], r["likely_false"])


def period_heard(p: Period, since: float | None, now: float, me: str) -> float:
    """Seconds heard in ``p`` after ``since`` (spread evenly over the period's span)."""
    heard, end = p.heard_s, p.end_wall
    if end is None:
        if me and p.boot_id == me and pid_alive(p.pid):
            heard += max(0.0, now - p.checkpoint_wall)  # a running daemon, still listening
            end = now
        else:
            end = p.checkpoint_wall
    if since is None or p.start_wall >= since:
        return heard
    if end <= since:
        return 0.0
    return heard * (end - since) / (end - p.start_wall)


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of already sorted values."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def durations(values: Sequence[float]) -> dict[str, Any]:
    v = sorted(values)
    edges = DURATION_BUCKETS
    hist = []
    for i, lo in enumerate(edges):
        hi = edges[i + 1] if i + 1 < len(edges) else None
        n = sum(1 for x in v if x >= lo and (hi is None or x < hi))
        hist.append({"from_s": lo, "to_s": hi, "count": n})
    summary: dict[str, Any] = {"count": len(v), "histogram": hist}
    if v:
        summary.update({"min_s": v[0], "median_s": round(quantile(v, 0.5), 3),
                        "p90_s": round(quantile(v, 0.9), 3), "max_s": v[-1],
                        "mean_s": round(sum(v) / len(v), 3),
                        "over_20_s": sum(1 for x in v if x >= 20.0)})
    return summary


def _rate(n: int, hours: float) -> float | None:
    return round(n / hours, 4) if hours > 0 else None


def compute(store: ActivationLog, since: float | None = None,
            now: float | None = None) -> dict[str, Any]:
    """The statistics of the log (from ``since``, epoch seconds, if given), as a dict."""
    now = datetime.now(UTC).timestamp() if now is None else now
    me = boot_id()
    rows = store.rows(since=since)
    periods = store.periods()
    heard_by_period = [(p, period_heard(p, since, now, me)) for p in periods]
    hours = sum(h for _, h in heard_by_period) / 3600.0
    false_rows = [r for r in rows if _is_false(r)]
    labelled_false = sum(1 for r in rows if r["label"] == "false")
    flagged = sum(1 for r in rows if r["likely_false"])
    counts = {
        "activations": len(rows),
        "labelled_true": sum(1 for r in rows if r["label"] == "true"),
        "labelled_false": labelled_false,
        "unlabelled": sum(1 for r in rows if r["label"] == "unknown"),
        "flagged_likely_false": flagged,
        "false": len(false_rows),
        "verifier_rejected": sum(1 for r in rows if r["verifier_accept"] is False),
        "by_outcome": {o: sum(1 for r in rows if r["outcome"] == o) for o in OUTCOMES},
    }
    groups: dict[tuple[str, float], dict[str, Any]] = {}
    for p, heard in heard_by_period:
        for model, threshold in p.models.items():
            g = groups.setdefault((model, threshold), _group(model, threshold))
            g["hours"] += heard / 3600.0
    for r in rows:
        g = groups.setdefault((r["model"], r["threshold"]), _group(r["model"], r["threshold"]))
        g["activations"] += 1
        g["labelled_false"] += r["label"] == "false"
        g["flagged_likely_false"] += bool(r["likely_false"])
        g["false"] += _is_false(r)
    by_model = []
    for key in sorted(groups):
        g = groups[key]
        g["false_per_hour"] = _rate(g["false"], g["hours"])
        g["labelled_false_per_hour"] = _rate(g["labelled_false"], g["hours"])
        by_model.append(g)
    return {
        "since": iso(since) if since is not None else None,
        "until": iso(now),
        "listening_hours": hours,
        "listening_periods": sum(1 for _, h in heard_by_period if h > 0),
        "counts": counts,
        "rates_per_hour": {
            "activations": _rate(len(rows), hours),
            "false": _rate(len(false_rows), hours),
            "labelled_false": _rate(labelled_false, hours),
            "flagged_likely_false": _rate(flagged, hours),
        },
        "by_model_threshold": by_model,
        "false_durations": durations([float(r["duration_s"]) for r in false_rows]),
        "reference": REFERENCE,
    }


def _group(model: str, threshold: float) -> dict[str, Any]:
    return {"model": model, "threshold": threshold, "hours": 0.0, "activations": 0,
            "labelled_false": 0, "flagged_likely_false": 0, "false": 0}


def _fmt_rate(x: float | None) -> str:
    return "n/a (no listening time)" if x is None else f"{x:.2f}"


def render(report: dict[str, Any]) -> str:
    """The report as text for a person."""
    c, r = report["counts"], report["rates_per_hour"]
    span = f"since {report['since']}" if report["since"] else "all time"
    outcomes = ", ".join(f"{k} {v}" for k, v in c["by_outcome"].items() if v)
    lines = [
        f"Listening: {report['listening_hours']:.2f} h "
        f"({report['listening_hours'] * 60:.1f} min; {span})",
        f"Activations: {c['activations']}" + (f" ({outcomes})" if outcomes else ""),
        f"Labels: {c['labelled_true']} true, {c['labelled_false']} false, "
        f"{c['unlabelled']} unlabelled; flagged likely-false: {c['flagged_likely_false']}",
        f"False activations: {c['false']} (labelled false, or flagged and not labelled)",
        f"False activations per listening hour: {_fmt_rate(r['false'])} "
        f"(labelled false only: {_fmt_rate(r['labelled_false'])}; all activations: "
        f"{_fmt_rate(r['activations'])})",
    ]
    if report["by_model_threshold"]:
        lines += ["", f"{'model':<20} {'threshold':>9} {'hours':>8} {'wakes':>6} "
                      f"{'false':>6} {'false/h':>8}"]
        for g in report["by_model_threshold"]:
            fph = "-" if g["false_per_hour"] is None else f"{g['false_per_hour']:.2f}"
            lines.append(f"{g['model']:<20} {g['threshold']:>9.2f} {g['hours']:>8.2f} "
                         f"{g['activations']:>6} {g['false']:>6} {fph:>8}")
    d = report["false_durations"]
    if d["count"]:
        lines += ["", f"Recording durations of false activations (s): n={d['count']}, "
                      f"median {d['median_s']:.1f}, p90 {d['p90_s']:.1f}, max {d['max_s']:.1f}, "
                      f"{d['over_20_s']} of 20 s or more"]
        lines.append("  " + "  ".join(
            f"{b['from_s']:g}-{b['to_s']:g} s: {b['count']}" if b["to_s"] is not None
            else f">={b['from_s']:g} s: {b['count']}" for b in d["histogram"]))
    ref = report["reference"]
    lines += ["", f"For comparison: commercial speakers ~{ref['dubois_2020_accidental_per_hour']}"
                  " accidental wakes per hour of TV, some recording 20-43 s (Dubois et al., "
                  f"PoPETs 2020); openWakeWord's target: < "
                  f"{ref['openwakeword_target_false_per_hour']} per hour."]
    return "\n".join(lines)
