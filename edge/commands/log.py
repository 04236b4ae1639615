"""``edge log``: browse the activation log, or export it for research.

>>> edge log --false-only --since 7d
>>> edge log --export wakes.csv        # or .json (one array) / .jsonl (one object a line)
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from edge.activations.store import ActivationLog, db_path, parse_since
from edge.errors import UsageError
from edge.files import write_output

FIELDS = ("n", "id", "time", "wall_time", "model", "threshold", "peak_score", "frames_over",
          "clip_id", "duration_s", "vad_speech_ratio", "end_reason", "outcome", "likely_false",
          "flags", "verifier", "verifier_accept", "verifier_score", "label", "label_source",
          "labelled_time", "audio_file")
"""Columns of the CSV export, in order (JSON adds ``label_history`` and ``period``)."""
EXPORT_FORMATS = (".csv", ".json", ".jsonl")


def add_log_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="config file (TOML); finds the log under "
                                               "its state_dir")
    p.add_argument("--db", type=Path, metavar="FILE", help="read this activation log file "
                                                           "instead")


def open_log(args: argparse.Namespace) -> ActivationLog:
    if args.db is not None:
        return ActivationLog.open(args.db, create=False)
    from edge.compose.config import load_checked_config

    return ActivationLog.open(db_path(load_checked_config(args.config)), create=False)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("log", help="list the activation log (every wake, flagged and labelled)")
    add_log_options(p)
    p.add_argument("--since", metavar="DATE", help="only activations from DATE on: YYYY-MM-DD, "
                                                   "an ISO time (UTC), or an age like 7d")
    p.add_argument("--false-only", action="store_true",
                   help="only false activations: labelled false, or flagged and not labelled")
    p.add_argument("--limit", type=int, metavar="N", help="only the N most recent")
    p.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    p.add_argument("--export", type=Path, metavar="FILE",
                   help="write to FILE instead: .csv, .json (an array) or .jsonl")
    p.add_argument("--force", action="store_true", help="replace the --export FILE if it exists")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit {args.limit} is not allowed; give 1 or more")
    if args.limit is not None and args.limit > 10**9:  # SQLite's integers hold 64 bits
        raise UsageError(f"--limit {str(args.limit)[:30]} is too large; give at most 1000000000")
    if args.export is not None and args.export.suffix.lower() not in EXPORT_FORMATS:
        raise UsageError(f"--export {args.export}: cannot tell the format from the name; end "
                         f"it in {', '.join(EXPORT_FORMATS)}")
    since = parse_since(args.since) if args.since else None
    with open_log(args) as store:
        rows = store.rows(since=since, false_only=args.false_only, limit=args.limit,
                          newest_first=args.limit is not None)
    rows.sort(key=lambda r: r["n"])
    if args.export is not None:
        data = render(rows, args.export.suffix.lower())
        write_output(args.export, data.encode(), args.force)
        print(f"wrote {len(rows)} activation(s) to {args.export}", file=sys.stderr)
    elif args.json:
        sys.stdout.write(render(rows, ".jsonl"))
    else:
        sys.stdout.write(table(rows))
    return 0


def render(rows: list[dict[str, Any]], fmt: str) -> str:
    if fmt == ".csv":
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    if fmt == ".json":
        return json.dumps(rows, indent=1) + "\n"
    return "".join(json.dumps(r) + "\n" for r in rows)


def table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no activations\n"
    out = [f"{'#':>5} {'time (UTC)':<20} {'id':<8} {'model':<12} {'peak':>5} {'fr':>3} "
           f"{'dur':>5} {'speech':>6} {'outcome':<17} {'flags':<18} label"]
    for r in rows:
        label = r["label"] if r["label"] == "unknown" else f"{r['label']} ({r['label_source']})"
        out.append(f"{r['n']:>5} {r['time'][:19].replace('T', ' '):<20} {r['id'][:8]:<8} "
                   f"{r['model'][:12]:<12} {r['peak_score']:>5.2f} {r['frames_over']:>3} "
                   f"{r['duration_s']:>5.1f} {r['vad_speech_ratio']:>6.2f} "
                   f"{r['outcome']:<17} {r['flags'] or '-':<18} {label}")
    return "\n".join(out) + "\n"
