"""``edge measure PATH...``: false accepts per hour, miss rates and DET curves.

The device's own engine and detection policy run over hours of recordings on
every core (a long file is cut into chunks that each start early enough to score
exactly as the whole file does), or on a Dask cluster (``--cluster``), faster than
real time; one pass over the audio serves the whole threshold sweep. Writes
report.json, report.html, plots/, snippets/ and snippets.csv into ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.audio.file import FileSource
from edge.audio.frames import FRAME_S
from edge.commands import output_folder
from edge.compose.config import load_checked_config
from edge.config import Config, replace
from edge.errors import EdgeError, UsageError
from edge.wake.detector import model_store

if TYPE_CHECKING:
    from edge.measure.chunks import FileInfo
    from edge.measure.corpus import Job
    from edge.measure.pool import FileResult
    from edge.measure.report import Measurement


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("measure", help="accidental-wake and miss rates over recordings")
    p.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                   help="long recordings (negatives): files, or folders searched recursively")
    p.add_argument("--config", type=Path, help="config file (TOML): the device's settings")
    p.add_argument("--model", action="append", metavar="NAME",
                   help="manifest name (micro:okay_nabu: a microWakeWord model), or an "
                        ".onnx, .tflite or .json path; may be repeated (default: the config's)")
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
    p.add_argument("--pad", type=float, default=2.0, metavar="S",
                   help="digital silence before each positive, exactly S s (to the sample), "
                        "and at least S s after it (default 2: from 2 s on, a positive is "
                        "scored as by a device that has listened to a silent room)")
    p.add_argument("--exact", action="store_true",
                   help="score with the device's engine frame by frame, bit for bit (slower); "
                        "default: batched, within float32 rounding of the device")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="run the work on the Dask scheduler at ADDRESS (tcp://HOST:8786); "
                        "needs the cluster extra, the models and the files on every worker")
    p.add_argument("--chunk-s", type=float, default=150.0, metavar="S",
                   help="seconds per chunk of a long 16 kHz file, each chunk a task of its own "
                        "(default 150; smaller chunks spread one file over more workers)")
    p.add_argument("--no-plots", dest="plots", action="store_false",
                   help="skip the DET and timeline plots (and the matplotlib import)")
    p.add_argument("--combine", choices=("off", "any", "both"),
                   help="the device's wake.combine for this run; with a wake word both model "
                        "families run (alexa and micro:alexa) every mode's miss rate and false "
                        "accepts per hour are reported side by side (combine.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=main)


MIN_CHUNK_S = 10.0
"""The shortest chunk ``--chunk-s`` allows: longer than the lead each chunk reads first."""


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
    if getattr(args, "combine", None):
        cfg = replace(cfg, wake=replace(cfg.wake, combine=args.combine))
    return cfg


def need_measure_extra() -> None:
    """matplotlib and tqdm come with the ``measure`` extra, not with `make run`'s install:
    say so before hours of audio are scored, not in a traceback at the end."""
    import importlib.util

    missing = [m for m in ("matplotlib", "tqdm") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"edge measure needs {' and '.join(missing)} (the measure extra); in "
                         "the checkout run: .venv/bin/pip install -e '.[measure]'")


def main(args: argparse.Namespace) -> int:
    from edge.measure.corpus import find_corpus
    from edge.measure.pool import Setup, score_all
    from edge.measure.report import Measurement, write_report
    from edge.measure.sweep import thresholds_for

    need_measure_extra()
    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs} is not allowed; give 1 or more processes")
    if args.target_fa < 0 or args.pad < 0:
        raise UsageError("--target-fa and --pad must not be negative")
    if not args.chunk_s >= MIN_CHUNK_S:
        raise UsageError(f"--chunk-s {args.chunk_s:g} is too short; give {MIN_CHUNK_S:g} s or "
                         "more (each chunk also reads about 7 s before it)")
    output_folder(args.out, "--out")
    cfg = measure_config(args)
    store = model_store(cfg.wake)
    cfg = replace(cfg, wake=store.with_model_thresholds(cfg.wake))  # micro models' cutoffs
    names = tuple(store.resolve(m)[0] for m in cfg.wake.models)
    for feature in ("melspectrogram", "embedding"):
        store.path(feature)  # a missing model is an error now, not in every worker
    corpus = find_corpus(list(args.paths), args.positives, names, exclude=args.out)
    for folder in corpus.unmatched:
        _warn(f"positives folder {args.positives / folder} names no model measured "
              f"({', '.join(names)}); its files are not used. Name the folder after a "
              "model, or add the model with --model")
    sizes, infos, unreadable = _probe(corpus.jobs, cfg)
    for r in unreadable.values():
        _warn(f"skipping {r.job.path}: {r.error}")
    mode = "exact" if args.exact or cfg.wake.engine == "openwakeword" else "batched"
    setup = Setup(cfg, args.out.resolve(), args.pad, mode, round(args.chunk_s / FRAME_S))
    _clear_previous(args.out)
    todo = [j for j in corpus.jobs if j.index not in unreadable]
    total_s = sum(sizes[j.index] + (2 * args.pad if j.kind == "positive" else 0) for j in todo)
    bar = _Progress(total_s, args.quiet)
    started = time.monotonic()
    if args.plots:  # matplotlib's import (~0.3 s) overlaps the scoring, not the report
        threading.Thread(target=_import_plotting, name="import-matplotlib", daemon=True).start()
    try:
        results = score_all(todo, setup, names, infos, args.jobs, bar.update, args.cluster)
    finally:
        bar.close()
    wall = time.monotonic() - started
    modes = {r.mode for r in results if r.error is None}
    mode = modes.pop() if len(modes) == 1 else mode
    for r in results:
        if r.error is not None:
            _warn(f"skipping {r.job.path}: {r.error}")
    results = sorted(results + list(unreadable.values()), key=lambda r: r.job.index)
    thresholds = thresholds_for(args.threshold, [cfg.wake.threshold_for(n) for n in names])
    jobs = 0 if args.cluster else min(args.jobs, max(len(todo), 1))
    m = Measurement(names, cfg.wake, thresholds, args.target_fa, corpus,
                    [str(p) for p in args.paths],
                    str(args.positives) if args.positives else None, args.pad,
                    cfg.audio.pre_roll_s, results, wall, jobs, mode, args.cluster, args.plots)
    m.run_sweep()
    write_report(m, args.out)
    _summary(m, args.out)
    _combine_modes(m, cfg, args.out)
    if not m.negatives:
        raise EdgeError(f"none of the {len(corpus.negatives)} input files could be read as "
                        f"audio (see {args.out / 'report.json'}); give WAV or FLAC recordings")
    return 0


def _combine_modes(m: Measurement, cfg: Config, out: Path) -> None:
    """With a wake word both families run: each ``wake.combine`` mode side by side."""
    import json

    from edge.wake.combine import compare_modes, partners
    from edge.wake.detector import build_policy

    if not partners(m.names):
        return
    rows = compare_modes(
        lambda mode: build_policy(replace(cfg.wake, combine=mode), m.names), m.names,
        [r.scores for r in m.negatives if r.scores is not None], m.hours,
        [(r.scores, r.job.targets) for r in m.positives if r.scores is not None])
    (out / "combine.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("wake.combine modes, at the device's thresholds:")
    for r in rows:
        miss = "no positives" if r["miss_rate"] is None else (
            f"miss rate {100 * float(str(r['miss_rate'])):.1f}% ({r['missed']} of "
            f"{r['positives']})")
        print(f"  {r['mode']:<5} {r['models']:<26} {r['false_accepts_per_hour']} false accepts "
              f"per hour ({r['false_accepts']}); {miss}")


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


def _probe(jobs: list[Job], cfg: Config
           ) -> tuple[dict[int, float], dict[int, FileInfo], dict[int, FileResult]]:
    """Durations and rates of the readable files; a result with the error for each other."""
    from edge.measure.chunks import file_info
    from edge.measure.pool import FileResult

    sizes: dict[int, float] = {}
    infos: dict[int, FileInfo] = {}
    bad: dict[int, FileResult] = {}
    for job in jobs:
        try:
            src = FileSource(job.path, cfg.audio.channel)
        except EdgeError as exc:
            bad[job.index] = FileResult(job, error=str(exc))
            continue
        sizes[job.index] = src.duration_s
        src.close()
        infos[job.index] = file_info(job.path)
    return sizes, infos, bad


def _import_plotting() -> None:
    with contextlib.suppress(ImportError):  # reported where the plots are drawn
        import matplotlib.backends.backend_agg  # noqa: F401
        import matplotlib.figure  # noqa: F401

        import edge.measure.plots  # noqa: F401


def _warn(text: str) -> None:
    print(f"edge: warning: {text}", file=sys.stderr)


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
    where = f"on the cluster at {m.cluster}" if m.cluster else f"with {m.jobs} job(s)"
    print(f"{m.corpus_text()}, {len(m.positives)} positives, "
          f"{len(m.skipped)} skipped; {m.wall_s:.1f} s {where}; {m.mode} scoring")
    for n in m.names:
        dev = next(p for p in m.curves[n] if p.threshold == round(m.device_threshold(n), 6))
        print("  " + m.statement(n, dev))
        print("  " + m.target_statement(n))
    if m.skipped:
        _warn(f"{len(m.skipped)} file(s) skipped, listed in {out / 'report.json'}")
    if m.corpus.unmatched:
        _warn(f"{len(m.corpus.unmatched)} positives folder(s) matched no model: "
              f"{', '.join(m.corpus.unmatched)}")
    print(f"report: {out / 'report.html'}")
