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
    from edge.compose.config import load_checked_config
    from edge.config import replace
    from edge.service.logs import configure

    cfg = load_checked_config(args.config)
    from edge.service.network import check_network_allowed

    check_network_allowed(cfg)  # under install.sh's IP deny, a config that needs the network
    if args.input is not None:
        cfg = replace(cfg, audio=replace(cfg.audio, input=args.input))
    from edge.hardware.profiles import apply_audio

    cfg = apply_audio(cfg)  # the profile's capture device, channel and rate
    logging.getLogger().setLevel(cfg.log_level.upper())
    configure(cfg.log_level, cfg.log_levels)
    demo = args.demo_if_no_device or cfg.audio.demo_when_no_device
    source = open_source(cfg, demo)
    if not _live(source):
        # A file or the demo: nobody is at a microphone to hear a chime, so silence is no
        # downgrade here and the opt-out is set for this run only, never in the file.
        cfg = replace(cfg, hardware=replace(cfg.hardware, chime=False),
                      security=replace(cfg.security, allow_silent_recording=True))
    if args.realtime:
        from edge.audio.sources import PacedSource

        source = PacedSource(source)

    from edge.compose.daemon import build_device

    daemon = build_device(cfg, source).daemon
    from edge.service.logs import fields

    log.info("listening for %s (state in %s)", ", ".join(daemon.detector.names),
             cfg.state_path, extra=fields(event="start", source=source.name))
    daemon.run()
    rec = daemon.recorder.stats
    log.info("stopped: %d detections, %d clips kept, %d discarded", rec.detections, rec.clips,
             rec.discarded, extra=fields(event="stop", detections=rec.detections,
                                         clips=rec.clips, discarded=rec.discarded))
    return 0


def open_source(cfg: Config, demo: bool) -> AudioSource:
    from edge.audio.file import FileSource

    spec = cfg.audio.input
    if spec and (Path(spec).suffix.lower() in (".wav", ".flac") or Path(spec).is_file()):
        return FileSource(spec, cfg.audio.channel)
    from edge.audio import capture, portaudio

    if not spec and not portaudio.has_capture_device():
        if demo:
            return demo_source()
        from edge.errors import AudioDeviceError

        raise AudioDeviceError(
            "no capture device found; connect a microphone (see `edge devices`) or set "
            "audio.input to a device name, an index or an audio file"
        )
    source = capture.PyAudioSource(spec, cfg.audio.channel, cfg.audio.rate)
    source.check()  # a wrong name or channel fails now, in one line, not in the reopen loop
    return source


def _live(source: AudioSource) -> bool:
    from edge.audio.file import FileSource
    from edge.audio.sources import ArraySource

    return not isinstance(source, FileSource | ArraySource)


def demo_source() -> AudioSource:
    from edge.audio import synth
    from edge.audio.sources import ArraySource

    print(DEMO_NOTICE, file=sys.stderr, flush=True)
    stream = synth.concat([
        synth.silence(2.0), synth.speak("hey jarvis"), synth.silence(0.3),
        synth.speak("what is the weather like today"), synth.silence(2.5),
    ])
    return ArraySource(stream, name="demo (synthesized)")
