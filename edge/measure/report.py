"""The measurement's outputs: report.json, snippets.csv, report.html and the plots.

Every figure is stated with its corpus (hours, files), threshold and grouping
window (the policy's patience and refractory period), so it can be quoted alone.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge import __version__
from edge.config import WakeConfig
from edge.files import atomic_write, private_dir
from edge.measure.corpus import Corpus
from edge.measure.pool import FileResult
from edge.measure.snippets import SNIPPET_AFTER_S, Snippet
from edge.measure.sweep import SweepPoint, at_target, policy_at, sweep

MAX_TIMELINES = 60
MODE_TEXT = {
    "exact": "exact: the device's engine on every frame, scores bit for bit the device's",
    "batched": "batched: the device's arithmetic over whole spans of frames, scores within "
               "float32 rounding of the device's (held within 1e-5 by the tests, with "
               "identical detections)",
}
"""Timeline plots drawn: the first this many negative files (the report says so when cut)."""


@dataclass
class Measurement:
    """Everything the report is made from."""

    names: tuple[str, ...]
    wake: WakeConfig
    thresholds: list[float]
    target_fa_per_hour: float
    corpus: Corpus
    inputs: list[str]
    positives_dir: str | None
    pad_s: float
    pre_roll_s: float
    results: list[FileResult]
    wall_s: float
    jobs: int
    mode: str = "batched"
    """How the scores were computed: ``batched`` or ``exact`` (see :data:`MODE_TEXT`)."""
    cluster: str | None = None
    """The Dask scheduler's address, when the work ran there."""
    plots: bool = True
    """Whether the plots are drawn (matplotlib is imported only then)."""
    curves: dict[str, list[SweepPoint]] = field(default_factory=dict)

    @property
    def negatives(self) -> list[FileResult]:
        return [r for r in self.results if r.job.kind == "negative" and r.scores is not None]

    @property
    def positives(self) -> list[FileResult]:
        return [r for r in self.results if r.job.kind == "positive" and r.scores is not None]

    @property
    def skipped(self) -> list[FileResult]:
        return [r for r in self.results if r.error is not None]

    @property
    def hours(self) -> float:
        return sum(r.audio_s for r in self.negatives) / 3600.0

    @property
    def snippets(self) -> list[Snippet]:
        return [s for r in self.negatives for s in r.snippets]

    def device_threshold(self, model: str) -> float:
        return self.wake.threshold_for(model)

    def run_sweep(self) -> None:
        for k, m in enumerate(self.names):
            policies = [policy_at(self.wake, self.names, m, t) for t in self.thresholds]
            neg = [r.scores[:, k] for r in self.negatives if r.scores is not None]
            pos = [r.scores[:, k] for r in self.positives
                   if r.scores is not None and m in r.job.targets]
            self.curves[m] = sweep(neg, pos, policies, self.hours)

    def grouping(self) -> str:
        w = self.wake
        return f"patience {w.patience} frame(s), {w.refractory_s:g} s refractory grouping"

    def corpus_text(self) -> str:
        n = len(self.negatives)
        return f"{self.hours:.2f} h of audio in {n} negative file{'s' if n != 1 else ''}"

    def statement(self, model: str, p: SweepPoint) -> str:
        """One quotable sentence: the figure with its corpus, threshold and grouping."""
        fa = "n/a" if p.false_accepts_per_hour is None else f"{p.false_accepts_per_hour:.3g}"
        text = (f"{model} at threshold {p.threshold:g} ({self.grouping()}): "
                f"{p.activations} activation{'s' if p.activations != 1 else ''} in "
                f"{self.corpus_text()} = {fa} false accepts per hour")
        if p.miss_rate is not None:
            text += f"; miss rate {100 * p.miss_rate:.1f}% ({p.misses} of {p.positives} positives)"
        return text + "."

    def target_statement(self, model: str) -> str:
        best = at_target(self.curves[model], self.target_fa_per_hour)
        goal = f"{self.target_fa_per_hour:g} false accepts per hour or fewer"
        if best is None:
            return (f"{model}: no swept threshold reaches {goal} on {self.corpus_text()} "
                    f"({self.grouping()}).")
        miss = "no positives given" if best.miss_rate is None else \
            f"miss rate {100 * best.miss_rate:.1f}% ({best.misses} of {best.positives} positives)"
        return (f"{model}: {miss} at {goal}: threshold {best.threshold:g}, the lowest swept "
                f"threshold within the target ({best.false_accepts_per_hour:.3g} per hour, "
                f"{best.activations} activations in {self.corpus_text()}; {self.grouping()}).")


def to_json(m: Measurement, plots: dict[str, Any]) -> dict[str, Any]:
    w = m.wake
    per_model = {}
    for name in m.names:
        pts = m.curves[name]
        best = at_target(pts, m.target_fa_per_hour)
        dev = next(p for p in pts if p.threshold == round(m.device_threshold(name), 6))
        per_model[name] = {
            "device_threshold": m.device_threshold(name),
            "sweep": [p.as_dict() for p in pts],
            "det": [[p.false_accepts_per_hour, p.miss_rate] for p in pts],
            "at_target": None if best is None else best.as_dict(),
            "statement": m.statement(name, dev),
            "target_statement": m.target_statement(name),
        }
    pos_counts = {n: sum(1 for r in m.positives if n in r.job.targets) for n in m.names}
    return {
        "tool": "edge measure",
        "version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "audio_hours": round(m.hours, 6),
        "corpus": {
            "negatives": {"inputs": m.inputs, "files": len(m.negatives),
                          "audio_hours": round(m.hours, 6)},
            "positives": {"folder": m.positives_dir, "files": len(m.positives),
                          "per_model": pos_counts, "padding_s": m.pad_s,
                          "unmatched_folders": m.corpus.unmatched},
        },
        "detector": {
            "engine": w.engine, "models": list(m.names), "patience_frames": w.patience,
            "refractory_s": w.refractory_s, "grouping_window_s": w.refractory_s,
            "idle_gate": w.idle_gate, "idle_gate_dbfs": w.idle_gate_dbfs if w.idle_gate else None,
            "device_thresholds": {n: m.device_threshold(n) for n in m.names},
            "scoring": m.mode, "scoring_note": MODE_TEXT[m.mode],
        },
        "thresholds": m.thresholds,
        "target_false_accepts_per_hour": m.target_fa_per_hour,
        "target_rule": "lowest swept threshold whose false accepts per hour are at or below "
                       "the target; no interpolation",
        "models": per_model,
        "files": [{"path": str(r.job.path), "audio_s": r.audio_s,
                   "frames_skipped_by_idle_gate": r.frames_skipped, "chunks": r.chunks,
                   "activations_at_device_threshold": {
                       n: sum(1 for s in r.snippets if s.model == n) for n in m.names},
                   "timeline": plots["timelines"].get(r.job.index)} for r in m.negatives],
        "skipped": [{"path": str(r.job.path), "kind": r.job.kind, "error": r.error}
                    for r in m.skipped],
        "snippets": {"csv": "snippets.csv", "count": len(m.snippets),
                     "threshold": "device threshold per model",
                     "pre_roll_s": m.pre_roll_s, "after_s": SNIPPET_AFTER_S},
        "plots": {"det": plots["det"], "timelines_drawn": len(plots["timelines"]),
                  "timelines_cut": plots["timelines_cut"]},
        "speed": {"jobs": m.jobs, "cluster": m.cluster, "wall_s": round(m.wall_s, 3),
                  "x_realtime": round(sum(r.audio_s for r in m.results) / m.wall_s, 1)
                  if m.wall_s > 0 else None},
    }


def write_csv(path: Path, snippets: Sequence[Snippet]) -> None:
    f = io.StringIO(newline="")
    w = csv.writer(f)
    w.writerow(["file", "time_s", "model", "score", "threshold", "snippet", "snippet_start_s"])
    for s in snippets:
        w.writerow([s.file, f"{s.t:.2f}", s.model, f"{s.score:.6f}", f"{s.threshold:g}",
                    s.path, f"{s.start:.2f}"])
    atomic_write(path, f.getvalue().encode())


def draw_plots(m: Measurement, out: Path) -> dict[str, Any]:
    if not m.plots:
        return {"det": None, "timelines": {}, "timelines_cut": len(m.negatives)}
    from edge.measure import plots

    folder = private_dir(out / "plots")
    title = f"{m.corpus_text()}; {len(m.positives)} positives; {m.grouping()}"
    det = plots.det_curve(m.curves, m.hours, title, folder / "det.png")
    timelines: dict[int, str] = {}
    thresholds = {n: m.device_threshold(n) for n in m.names}
    for r in m.negatives[:MAX_TIMELINES]:
        assert r.scores is not None
        name = f"timeline_{r.job.index:05d}.png"
        acts = [(s.model, s.t, s.score) for s in r.snippets]
        plots.timeline(r.scores, m.names, thresholds, acts,
                       f"{r.job.path.name}: {len(acts)} activation(s) at the device threshold",
                       folder / name)
        timelines[r.job.index] = f"plots/{name}"
    return {"det": f"plots/{det.name}", "timelines": timelines,
            "timelines_cut": max(0, len(m.negatives) - MAX_TIMELINES)}


def write_report(m: Measurement, out: Path) -> dict[str, Any]:
    """Write every output into ``out``; returns the JSON report."""
    private_dir(out)
    plots = draw_plots(m, out)
    report = to_json(m, plots)
    atomic_write(out / "report.json", (json.dumps(report, indent=2) + "\n").encode())
    write_csv(out / "snippets.csv", m.snippets)
    atomic_write(out / "report.html", to_html(m, report, out).encode())
    return report


def _img(out: Path, rel: str, alt: str) -> str:
    data = base64.b64encode((out / rel).read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "&ndash;"
    return f"{100 * x:.1f}%" if pct else f"{x:.3g}"


def to_html(m: Measurement, report: dict[str, Any], out: Path) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>edge measure report</title><style>",
        "body{font:14px/1.45 system-ui,sans-serif;max-width:1040px;margin:2em auto;padding:0 1em}",
        "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;",
        "padding:2px 8px;text-align:right}th{background:#f3f3f3}td.l,th.l{text-align:left}",
        "img{max-width:100%}.dev{font-weight:bold}</style></head><body>",
        "<h1>Accidental wakes and misses</h1>",
        f"<p>{e(m.corpus_text())}; {len(m.positives)} positive utterances"
        f"{f' from {e(m.positives_dir)}' if m.positives_dir else ''}. Detector: the device's "
        f"{e(m.wake.engine)} engine and detection policy ({e(m.grouping())}). "
        f"Created {e(report['created'])} by edge-recorder {e(__version__)}.</p>",
        "<h2>Figures</h2><ul>",
    ]
    for n in m.names:
        parts.append(f"<li>{e(report['models'][n]['statement'])}</li>")
        parts.append(f"<li>{e(report['models'][n]['target_statement'])}</li>")
    parts.append(f"</ul><p>Scoring: {e(MODE_TEXT[m.mode])}.</p>")
    if report["plots"]["det"] is not None:
        parts.append("<h2>DET curve</h2>")
        parts.append(_img(out, report["plots"]["det"], "DET curve"))
    else:
        parts.append("<p>Plots were not drawn (--no-plots).</p>")
    for n in m.names:
        parts.append(f"<h2>Sweep: {e(n)}</h2><table><tr><th>threshold</th><th>activations</th>"
                     "<th>false accepts / h</th><th>misses</th><th>miss rate</th></tr>")
        for p in m.curves[n]:
            cls = " class='dev'" if p.threshold == round(m.device_threshold(n), 6) else ""
            parts.append(f"<tr{cls}><td>{p.threshold:g}</td><td>{p.activations}</td>"
                         f"<td>{_fmt(p.false_accepts_per_hour)}</td>"
                         f"<td>{p.misses if p.positives else '&ndash;'}</td>"
                         f"<td>{_fmt(p.miss_rate, pct=True)}</td></tr>")
        parts.append("</table>")
    parts.append(f"<h2>Activations at the device threshold ({len(m.snippets)})</h2>")
    if m.snippets:
        parts.append("<table><tr><th class='l'>file</th><th>time (s)</th><th class='l'>model"
                     "</th><th>score</th><th class='l'>snippet</th></tr>")
        for s in m.snippets:
            parts.append(f"<tr><td class='l'>{e(s.file)}</td><td>{s.t:.2f}</td>"
                         f"<td class='l'>{e(s.model)}</td><td>{s.score:.3f}</td>"
                         f"<td class='l'><audio controls preload='none' src='{e(s.path)}'>"
                         f"</audio> <a href='{e(s.path)}'>wav</a></td></tr>")
        parts.append("</table>")
    parts.append("<h2>Score timelines</h2>")
    timelines = {f["path"]: f["timeline"] for f in report["files"]}
    for r in m.negatives:
        rel = timelines.get(str(r.job.path))
        if rel:
            parts.append(f"<h3>{e(str(r.job.path))} ({r.audio_s / 60:.1f} min)</h3>")
            parts.append(_img(out, rel, f"score timeline of {r.job.path.name}"))
    if report["plots"]["timelines_cut"]:
        parts.append(f"<p>{report['plots']['timelines_cut']} more files have no timeline "
                     "drawn; their figures are in report.json.</p>")
    if m.skipped:
        parts.append(f"<h2>Skipped files ({len(m.skipped)})</h2><ul>")
        parts += [f"<li>{e(str(r.job.path))}: {e(r.error or '')}</li>" for r in m.skipped]
        parts.append("</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
