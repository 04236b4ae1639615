"""Where finished clips go. Every sink has ``deliver(clip) -> str | None`` and ``close()``."""

from __future__ import annotations

from typing import Protocol

from edge.pipeline.clip import Clip


class ClipSink(Protocol):
    name: str

    def deliver(self, clip: Clip) -> str | None:
        """Take the clip durably; return where it went (a path or id), or None."""
        ...

    def close(self) -> None: ...
