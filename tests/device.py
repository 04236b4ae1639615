"""The daemon as ``edge run`` builds it (edge.compose), for tests.

Everything is the real part but what this machine lacks: no systemd notifies it, and
chimes go to a ``FakeChime`` (there is no sound card to play them on).
"""

from __future__ import annotations

from typing import Any

from edge.audio.sources import AudioSource
from edge.compose.daemon import Device, Seams, build_device
from edge.config import Config
from tests.fakes import FakeChime


def device_seams(**seams: Any) -> Seams:
    """``Seams`` for a test: no systemd, a fake chime, and whatever the test passes."""
    return Seams(**{"systemd": lambda _models: None, "chime_output": FakeChime(), **seams})


def build(cfg: Config, source: AudioSource, **seams: Any) -> Device:
    """Build (and start the subsystems of) the device for ``cfg`` reading ``source``."""
    return build_device(cfg, source, device_seams(**seams))
