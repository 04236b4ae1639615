"""``edge replay FILE...``: the live pipeline, fed from files as fast as the CPU allows.

Each file is its own stream from a fresh state. With ``--json`` stdout carries
one JSON object per line and nothing else; times are seconds from the file's start.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.commands import output_folder
from edge.compose.config import load_checked_config
from edge.config import Config, replace
from edge.config.rules import threshold_refusal
from edge.errors import UsageError

if TYPE_CHECKING:
    from edge.audio.sources import AudioSource
    from edge.sinks.local import LocalDirSink
    from edge.wake.detector import Detector
    from edge.wake.models import ModelStore


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="run the detection pipeline over audio files")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--config", type=Path, help="config file (TOML)")
    p.add_argument("--model", action="append", metavar="NAME",
                   help="manifest name or .onnx path; may be repeated")
    p.add_argument("--threshold", type=float, metavar="X",
                   help="threshold for every model (0.1 to 1: never below the threshold floor)")
    p.add_argument("--json", action="store_true", help="one JSON object per line on stdout")
    p.add_argument("--clips", type=Path, metavar="DIR", help="also write the clips here")
    p.set_defaults(func=main)


def replay_config(args: argparse.Namespace) -> Config:
    cfg = load_checked_config(args.config)
    wake = cfg.wake
    if args.threshold is not None:
        refusal = threshold_refusal(args.threshold, "--threshold")
        if refusal:
            raise UsageError(refusal)
        wake = replace(wake, threshold=args.threshold, thresholds={})
    if args.model:
        wake = replace(wake, models=list(args.model))
    return replace(cfg, wake=wake)


def main(args: argparse.Namespace) -> int:
    from edge.audio.file import FileSource
    from edge.sinks.local import LocalDirSink
    from edge.wake.detector import build_detector, model_store

    cfg = replay_config(args)
    if args.clips is not None:
        output_folder(args.clips, "--clips")
    store = model_store(cfg.wake)
    detector = build_detector(cfg.wake, store)
    sink = LocalDirSink(args.clips) if args.clips else None
    emit = _json_out if args.json else _text_out
    failures = 0
    for path in args.files:
        try:
            source = FileSource(path, cfg.audio.channel)
        except Exception as exc:
            failures += 1
            print(f"edge: error: {exc}", file=sys.stderr)
            continue
        failures += replay_file(cfg, detector, store, source, path, sink, emit)
    return 1 if failures else 0


def replay_file(cfg: Config, detector: Detector, store: ModelStore, source: AudioSource,
                path: Path, sink: LocalDirSink | None, emit: Callable[[dict[str, Any]], None]
                ) -> int:
    from edge.compose.daemon import build_recorder
    from edge.pipeline.clip import Clip
    from edge.pipeline.events import EventBus

    detector.reset()
    bus = EventBus()

    def clip_out(clip: Clip) -> None:
        where = sink.deliver(clip) if sink is not None else None
        emit({"event": "clip", "file": str(path), "id": clip.id, "start": clip.start,
              "end": clip.end, "reason": clip.reason, "path": where})

    recorder = build_recorder(cfg, detector, bus, clip_out, store=store)
    try:
        while (frame := source.read()) is not None:
            for d, started in recorder.feed(frame):
                emit({"event": "detection", "file": str(path), "t": d.t, "model": d.model,
                      "score": d.score, "started_clip": started})
        recorder.end_of_stream()
        return 0
    except Exception as exc:
        print(f"edge: error: {exc}", file=sys.stderr)
        recorder.end_of_stream()
        return 1
    finally:
        recorder.shutdown()
        source.close()
        bus.close()


def _json_out(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _text_out(obj: dict[str, Any]) -> None:
    if obj["event"] == "detection":
        note = "" if obj["started_clip"] else " (during a recording: ignored)"
        print(f"{obj['file']}: {obj['t']:8.2f}s  detection {obj['model']} "
              f"score {obj['score']:.3f}{note}")
    else:
        print(f"{obj['file']}: {obj['start']:8.2f}s-{obj['end']:.2f}s  clip {obj['id']} "
              f"({obj['reason']}){' -> ' + obj['path'] if obj['path'] else ''}")
