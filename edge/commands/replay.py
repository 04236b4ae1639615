"""``edge replay FILE...``: the live pipeline, fed from files as fast as the CPU allows.

Each file is its own stream from a fresh state. With ``--json`` stdout carries
one JSON object per line and nothing else; times are seconds from the file's start:

- ``detection``: ``t``, ``model``, ``score`` (the highest frame up to the trigger) and
  ``started_clip``;
- ``clip``: the end of every activation, kept or not: ``reason``, ``kept``, ``peak`` (the
  whole run's peak, the number every other report shows) and ``path`` (None when the
  audio was discarded, e.g. ``no_speech``, or without ``--clips``);
- ``transcript`` (with ``[assist] mode = "stt"``): ``activation_id``, ``seconds`` and the
  ``text`` the speech-to-text server heard in the utterance (pre-roll included), sent once.
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
    from edge.pipeline.clip import Clip
    from edge.pipeline.events import ActivationEnded
    from edge.sinks.local import LocalDirSink
    from edge.wake.detector import Detector
    from edge.wake.models import ModelStore


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="run the detection pipeline over audio files")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE",
                   help="audio files (WAV, FLAC); each is a fresh stream")
    p.add_argument("--config", type=Path, help="config file (TOML)")
    p.add_argument("--model", action="append", metavar="NAME",
                   help="manifest name (micro:okay_nabu: a microWakeWord model), or an "
                        ".onnx, .tflite or .json path; may be repeated")
    p.add_argument("--threshold", type=float, metavar="X",
                   help="threshold for every model (0.1 to 1: never below the threshold floor)")
    p.add_argument("--combine", choices=("off", "any", "both"),
                   help="a wake word both model families run (alexa and micro:alexa): wake on "
                        "either, only on both, or keep them apart (default: wake.combine)")
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
    if args.threshold is not None:  # every model, a micro model's own cutoff too
        wake = replace(wake, thresholds={m: args.threshold for m in wake.models})
    if args.combine:
        wake = replace(wake, combine=args.combine)
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
    from edge.pipeline.events import ActivationEnded, EventBus

    detector.reset()
    bus = EventBus(inline=True)  # each activation's end is told as the recorder ends it
    delivered: dict[str, tuple[Clip, str | None]] = {}
    ended: list[dict[str, Any]] = []

    def clip_out(clip: Clip) -> None:
        delivered[clip.id] = (clip, sink.deliver(clip) if sink is not None else None)

    def on_event(ev: object) -> None:
        if isinstance(ev, ActivationEnded):
            ended.append(clip_event(path, ev, delivered.pop(ev.clip_id, None)
                                    if ev.clip_id else None))

    bus.subscribe("replay", on_event)
    taps = []
    if cfg.assist.mode == "stt":
        from edge.assist.stt import SttTap

        def transcript(activation_id: str, _wake_word: str, samples: Any) -> None:
            ended.append(transcript_event(cfg, path, activation_id, samples))

        taps.append(SttTap(transcript))
    recorder = build_recorder(cfg, detector, bus, clip_out, store=store, taps=taps)

    def emit_ended() -> None:
        for obj in ended:
            emit(obj)
        ended.clear()

    try:
        while (frame := source.read()) is not None:
            for d, started in recorder.feed(frame):
                emit({"event": "detection", "file": str(path), "t": d.t, "model": d.model,
                      "score": d.score, "started_clip": started})
            emit_ended()
        recorder.end_of_stream()
        return 0
    except Exception as exc:
        print(f"edge: error: {exc}", file=sys.stderr)
        recorder.end_of_stream()
        return 1
    finally:
        recorder.shutdown()
        emit_ended()
        source.close()
        bus.close()


def clip_event(path: Path, ev: ActivationEnded, kept: tuple[Clip, str | None] | None
               ) -> dict[str, Any]:
    """The end of one activation, kept or not: ``kept`` says whether its clip went to the
    sinks, ``path`` where it was written (None when discarded, or without ``--clips``)."""
    clip, where = kept if kept is not None else (None, None)
    return {"event": "clip", "file": str(path), "id": ev.clip_id,
            "activation_id": ev.activation_id, "model": ev.detection.model,
            "t": ev.detection.t, "peak": ev.peak, "reason": ev.reason, "kept": clip is not None,
            "start": clip.start if clip else None, "end": clip.end if clip else None,
            "duration_s": round(ev.duration_s, 3), "path": where}


def transcript_event(cfg: Config, path: Path, activation_id: str, samples: Any
                     ) -> dict[str, Any]:
    """What the speech-to-text server heard in one utterance ('text' None when it failed:
    the reason is on stderr)."""
    from edge.assist.stt import transcribe
    from edge.audio.frames import SAMPLE_RATE
    from edge.errors import UploadError

    try:
        text: str | None = transcribe(cfg.assist.stt, activation_id, samples)
    except UploadError as exc:
        print(f"edge: error: transcribing activation {activation_id[:8]}: {exc}",
              file=sys.stderr)
        text = None
    return {"event": "transcript", "file": str(path), "activation_id": activation_id,
            "seconds": round(len(samples) / SAMPLE_RATE, 3), "text": text}


def _json_out(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _text_out(obj: dict[str, Any]) -> None:
    if obj["event"] == "transcript":
        print(f"{obj['file']}: activation {obj['activation_id'][:8]} heard: "
              f"{obj['text']!r}" if obj["text"] is not None else
              f"{obj['file']}: activation {obj['activation_id'][:8]} not transcribed")
    elif obj["event"] == "detection":
        note = "" if obj["started_clip"] else " (during a recording: ignored)"
        print(f"{obj['file']}: {obj['t']:8.2f}s  detection {obj['model']} "
              f"score {obj['score']:.3f} at the trigger{note}")
    elif obj["kept"]:
        print(f"{obj['file']}: {obj['start']:8.2f}s-{obj['end']:.2f}s  clip {obj['id']} "
              f"({obj['reason']}, peak {obj['peak']:.3f})"
              f"{' -> ' + obj['path'] if obj['path'] else ''}")
    else:
        print(f"{obj['file']}: {obj['t']:8.2f}s  activation discarded ({obj['reason']}, "
              f"peak {obj['peak']:.3f})")
