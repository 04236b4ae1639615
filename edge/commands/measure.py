"""``edge measure PATH...``: false accepts per hour, miss rates and DET curves.

The device's own engine and detection policy run over hours of recordings on
every core, faster than real time; one pass over the audio serves the whole
threshold sweep. Writes report.json, report.html, plots/, snippets/ and
snippets.csv into ``--out``.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.audio.file import FileSource
from edge.commands import output_folder
from edge.compose.config import load_checked_config
from edge.config import Config, replace
from edge.errors import EdgeError, UsageError
from edge.wake.detector import model_store

if TYPE_CHECKING:
    from edge.measure.corpus import Job
    from edge.measure.pool import FileResult
    from edge.measure.report import Measurement


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("measure", help="accidental-wake and miss rates over recordings")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="long recordings (negatives): files, or folders searched recursively")
    p.add_argument("--config", type=Path, help="config file (TOML): the device's settings")
    p.add_argument("--model", action="append", metavar="NAME",
                   help="manifest name or .onnx path; may be repeated (default: the config's)")
    p.add_argument("--threshold", type=_threshold_list, metavar="LIST",
                   help="thresholds to sweep, comma-separated (default 0.05,0.1,...,0.95; "
                        "the device's threshold is always added). Values below the threshold "
                        "floor (0.1) are allowed here: the sweep only counts, offline")
    p.add_argument("--positives", type=Path, metavar="DIR",
                   help="one utterance per file, or a subfolder per keyword (model name)")
    p.add_argument("--out", type=Path, default=Path("measure-report"), metavar="DIR",
                   help="where the report goes (default ./measure-report)")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1, metavar="N",
                   help="processes (default: the number of cores)")
    p.add_argument("--target-fa", type=float, default=0.1, metavar="PER_HOUR",
                   help="false accepts per hour at which to state the miss rate (default 0.1)")
    p.add_argument("--pad", type=float, default=1.0, metavar="S",
                   help="silence before and after each positive, in s (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


def _threshold_list(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of numbers; give e.g. 0.3,0.5,0.7") from None
    if not values or any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: give thresholds from 0 to 1, e.g. 0.3,0.5")
    return values


def measure_config(args: argparse.Namespace) -> Config:
    cfg = load_checked_config(args.config)
    if args.model:
        cfg = replace(cfg, wake=replace(cfg.wake, models=list(args.model)))
    return cfg


def main(args: argparse.Namespace) -> int:
    from edge.measure.corpus import find_corpus
    from edge.measure.pool import Setup, score_all
    from edge.measure.report import Measurement, write_report
    from edge.measure.sweep import thresholds_for

    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs} is not allowed; give 1 or more processes")
    if args.target_fa < 0 or args.pad < 0:
        raise UsageError("--target-fa and --pad must not be negative")
    output_folder(args.out, "--out")
    cfg = measure_config(args)
    store = model_store(cfg.wake)
    names = tuple(store.resolve(m)[0] for m in cfg.wake.models)
    for feature in ("melspectrogram", "embedding"):
        store.path(feature)  # a missing model is an error now, not in every worker
    corpus = find_corpus(list(args.paths), args.positives, names, exclude=args.out)
    sizes, unreadable = _probe(corpus.jobs, cfg)
    setup = Setup(cfg, args.out.resolve(), args.pad)
    _clear_previous(args.out)
    todo = [j for j in corpus.jobs if j.index not in unreadable]
    total_s = sum(sizes[j.index] + (2 * args.pad if j.kind == "positive" else 0) for j in todo)
    bar = _Progress(total_s, args.quiet)
    started = time.monotonic()
    try:
        results = score_all(todo, setup, args.jobs, sizes, bar.update)
    finally:
        bar.close()
    wall = time.monotonic() - started
    results = sorted(results + list(unreadable.values()), key=lambda r: r.job.index)
    thresholds = thresholds_for(args.threshold, [cfg.wake.threshold_for(n) for n in names])
    m = Measurement(names, cfg.wake, thresholds, args.target_fa, corpus,
                    [str(p) for p in args.paths],
                    str(args.positives) if args.positives else None, args.pad,
                    cfg.audio.pre_roll_s, results, wall, min(args.jobs, max(len(todo), 1)))
    m.run_sweep()
    write_report(m, args.out)
    _summary(m, args.out)
    if not m.negatives:
        raise EdgeError(f"none of the {len(corpus.negatives)} input files could be read as "
                        f"audio (see {args.out / 'report.json'}); give WAV or FLAC recordings")
    return 0


_OURS = {"snippets": re.compile(r"[0-9]{5}_[A-Za-z0-9_-]*_[0-9]+\.[0-9]{2}s\.wav"),
         "plots": re.compile(r"det\.png|timeline_[0-9]{5}\.png")}
"""The names ``edge measure`` gives its snippets and plots: the only files it removes."""


def _clear_previous(out: Path) -> None:
    """Snippets and plots of an earlier run in the same folder would read as this run's.
    Only names we give are removed, never through a symlink (``--out`` may be any folder)."""
    for sub, ours in _OURS.items():
        folder = out / sub
        if folder.is_symlink() or not folder.is_dir():
            continue
        for f in folder.iterdir():
            if ours.fullmatch(f.name) and not f.is_symlink() and f.is_file():
                f.unlink()


def _probe(jobs: list[Job], cfg: Config) -> tuple[dict[int, float], dict[int, FileResult]]:
    """Durations of the readable files; a result with the error for each other one."""
    from edge.measure.pool import FileResult

    sizes: dict[int, float] = {}
    bad: dict[int, FileResult] = {}
    for job in jobs:
        try:
            src = FileSource(job.path, cfg.audio.channel)
        except EdgeError as exc:
            bad[job.index] = FileResult(job, error=str(exc))
            continue
        sizes[job.index] = src.duration_s
        src.close()
    return sizes, bad


class _Progress:
    """Hours of audio done, on stderr with the ETA; silent when not a terminal or --quiet."""

    def __init__(self, total_s: float, quiet: bool) -> None:
        self.left = total_s / 3600.0
        self.bar: Any = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=self.left, unit="h", file=sys.stderr, desc="audio",
                            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total:.2f} h "
                                       "[{elapsed}<{remaining}]")

    def update(self, seconds: float) -> None:
        step = min(seconds / 3600.0, self.left)  # the last frame's padding is not audio
        self.left -= step
        if self.bar is not None:
            self.bar.update(step)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _summary(m: Measurement, out: Path) -> None:
    print(f"{m.corpus_text()}, {len(m.positives)} positives, "
          f"{len(m.skipped)} skipped; {m.wall_s:.1f} s with {m.jobs} job(s)")
    for n in m.names:
        dev = next(p for p in m.curves[n] if p.threshold == round(m.device_threshold(n), 6))
        print("  " + m.statement(n, dev))
        print("  " + m.target_statement(n))
    for r in m.skipped:
        print(f"edge: skipped {r.job.path}: {r.error}", file=sys.stderr)
    print(f"report: {out / 'report.html'}")
