"""``edge run``: the live daemon."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edge.audio.sources import AudioSource
    from edge.config import Config

log = logging.getLogger(__name__)

DEMO_NOTICE = """
==============================================================================
  DEMO MODE: no capture device was found on this machine.
  A synthesized stream ("hey jarvis", then a request) is fed through the full
  pipeline instead of a microphone. Nothing here is live audio.
  A service configuration never falls back to this demo.
  Its clip and log go to {state}/
  (replaced by the next demo), never to your own recordings or statistics.
==============================================================================
"""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the live recorder")
    p.add_argument("--config", type=Path, help="config file (TOML)")
    p.add_argument("--input", metavar="DEVICE|FILE",
                   help="capture device (name substring or index) or an audio file")
    p.add_argument("--realtime", action="store_true",
                   help="feed a file --input at real-time pace, like a live microphone")
    p.add_argument("--demo-if-no-device", action="store_true",
                   help="with no capture device, run a synthesized demo (used by `make run`)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    import gc

    from edge.service.startup import pause_collector

    pause_collector()  # until the loop runs (edge.service.startup): 6-8 ms of start-up
    try:
        return _run(args)
    finally:
        gc.enable()


def _run(args: argparse.Namespace) -> int:
    from edge.compose.config import load_checked_config
    from edge.config import replace
    from edge.service.logs import configure, level_in_force

    cfg = load_checked_config(args.config)
    from edge.service.network import check_network_allowed

    check_network_allowed(cfg)  # under install.sh's IP deny, a config that needs the network
    if args.input is not None:
        cfg = replace(cfg, audio=replace(cfg.audio, input=args.input))
    from edge.hardware.profiles import apply_audio

    cfg = apply_audio(cfg)  # the profile's capture device, channel and rate
    from edge.wake.models import model_store

    store = model_store(cfg.wake)  # the daemon's store (Seams.store): one manifest read
    # the model files hashed on another core while this one imports the daemon's modules
    store.prehash(cfg.wake.models)
    logging.getLogger().setLevel(level_in_force(cfg.log_level).upper())  # -v/-q win
    configure(cfg.log_level, cfg.log_levels)
    demo = args.demo_if_no_device or cfg.audio.demo_when_no_device
    is_demo = demo and not cfg.audio.input and not _has_capture_device()
    if is_demo:
        cfg = demo_config(cfg)
        source = demo_source(cfg.state_path)
    else:
        source = open_source(cfg)
    if not _live(source):
        # A file or the demo: nobody is at a microphone to hear a chime, so silence is no
        # downgrade here and the opt-out is set for this run only, never in the file.
        cfg = replace(cfg, hardware=replace(cfg.hardware, chime=False),
                      security=replace(cfg.security, allow_silent_recording=True))
    if args.realtime:
        from edge.audio.sources import PacedSource

        source = PacedSource(source)

    from edge.compose.daemon import Seams, build_device

    daemon = build_device(cfg, source, Seams(store=store)).daemon
    from edge.service.logs import fields

    log.info("listening for %s (state in %s)", ", ".join(daemon.detector.names),
             cfg.state_path, extra=fields(event="start", source=source.name))
    from edge.service.startup import freeze_start_up_heap

    freeze_start_up_heap()
    daemon.run()
    rec = daemon.recorder.stats
    log.info("stopped: %d detections, %d clips kept, %d discarded", rec.detections, rec.clips,
             rec.discarded, extra=fields(event="stop", detections=rec.detections,
                                         clips=rec.clips, discarded=rec.discarded))
    if is_demo:
        print(demo_summary(cfg, rec.detections), flush=True)
    return 0


def _has_capture_device() -> bool:
    from edge.audio import portaudio

    return portaudio.has_capture_device()


def open_source(cfg: Config) -> AudioSource:
    from edge.compose.preflight import open_input

    return open_input(cfg)  # the input check `edge config check` makes too


def _live(source: AudioSource) -> bool:
    from edge.audio.file import FileSource
    from edge.audio.sources import ArraySource

    return not isinstance(source, FileSource | ArraySource)


# ---- the demo (`make run` on a machine with no microphone) -------------------------

DEMO_NAME = "demo (synthesized)"
DEMO_MARK = ".edge-recorder-demo"
"""The file that marks a folder as the demo's own, so the next demo may replace it."""


def demo_state_path(cfg: Config) -> Path:
    """The demo's own state folder, beside the real one: ``~/.local/state/edge-recorder-demo``.

    The demo never writes to the owner's state: its clip, activation log and device id live
    here, so `edge log`, `edge stats`, uploads and the dashboard never see it.
    """
    real = cfg.state_path
    return real.with_name(real.name + "-demo")


def demo_config(cfg: Config) -> Config:
    """``cfg`` for the demo: its own fresh state folder, clips kept there as plain WAV, and
    nothing sent anywhere (no upload, no MQTT): the demo's audio is synthesized, not a room's."""
    import shutil

    from edge.config import replace
    from edge.errors import UsageError

    state = demo_state_path(cfg)
    if state.exists():
        if not (state / DEMO_MARK).exists() and any(state.iterdir()):
            raise UsageError(f"the demo's state folder {state} holds files the demo did not "
                             "make; move it away, or set state_dir to another folder")
        shutil.rmtree(state)  # the last demo's clip and log: each demo starts afresh
    state.mkdir(mode=0o700, parents=True)
    (state / DEMO_MARK).write_text("made by `edge run --demo-if-no-device`; the next demo "
                                   "replaces this folder\n")
    return replace(cfg, state_dir=str(state),
                   output=replace(cfg.output, keep_local=True, clips_dir="clips"),
                   upload=replace(cfg.upload, mode="off", encrypt_to=""),
                   mqtt=replace(cfg.mqtt, enabled=False))


def demo_source(state: Path) -> AudioSource:
    from edge.audio import synth
    from edge.audio.sources import ArraySource

    print(DEMO_NOTICE.format(state=state), file=sys.stderr, flush=True)
    stream = synth.concat([
        synth.silence(2.0), synth.speak("hey jarvis"), synth.silence(0.3),
        synth.speak("what is the weather like today"), synth.silence(2.5),
    ])
    return ArraySource(stream, name=DEMO_NAME)


def demo_summary(cfg: Config, detections: int) -> str:
    """What the demo did, where its clip went, and what to try next (printed at its end)."""
    clips = sorted(cfg.under_state(cfg.output.clips_dir).glob("*.wav"))
    listen = " Listen to it:" if clips else ""
    lines = ["", f"Demo finished: {detections} detection(s), {len(clips)} clip(s).{listen}"]
    lines += [f"  aplay {c}" for c in clips]
    lines += [
        f"The demo keeps its clip and log in {cfg.state_path}/ (replaced by the next",
        "demo); your own recordings, `edge log` and `edge stats` never see them.",
        "",
        "Next, with a microphone plugged in:",
        "  edge devices            the capture devices this machine has",
        "  edge run                listen; say \"hey jarvis\" and a request; Ctrl-C stops",
        "  edge log                every wake, with its score and what became of it",
        "  edge stats              accidental wakes per hour of listening",
        "The README's \"Your first hour\" walks through these, and `edge measure`.",
    ]
    return "\n".join(lines)
