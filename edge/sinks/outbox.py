"""The sinks that stand for the way out: the outbox (uploads on) and discarding (off, nothing kept).

``OutboxSink.deliver`` only enqueues, durably; the upload subsystem's uploader does
the network on its own thread.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from edge.pipeline.clip import Clip
from edge.privacy.bundle import pack
from edge.privacy.crypto import SEALED_CONTENT_TYPE, Sealer
from edge.sinks.local import wav_bytes

log = logging.getLogger(__name__)


class ClipQueue(Protocol):
    """The durable queue behind the sink (the upload subsystem's ``Outbox``)."""

    def put(self, entry_id: str, payload: bytes, content_type: str,
            meta: dict[str, Any]) -> object: ...


class OutboxSink:
    """Puts each clip in the outbox (sealed first when ``upload.encrypt_to`` is set).

    ``guard`` is held around each put; a purge holds it while it swaps ``outbox``.
    """

    name = "outbox"

    def __init__(self, outbox: ClipQueue, sealer: Sealer | None,
                 queued: Callable[[], None] | None = None,
                 guard: threading.RLock | None = None) -> None:
        self.outbox = outbox
        self.sealer = sealer
        self.queued = queued
        self.guard = guard or threading.RLock()

    def deliver(self, clip: Clip) -> str:
        meta = clip.metadata()
        if self.sealer is not None:
            payload = self.sealer.seal(pack(meta, wav_bytes(clip)))
            content_type, meta = SEALED_CONTENT_TYPE, {"id": clip.id, "sealed": True}
        else:
            payload, content_type = wav_bytes(clip), "audio/wav"
        with self.guard:
            self.outbox.put(clip.id, payload, content_type, meta)
        if self.queued is not None:
            self.queued()
        return clip.id

    def close(self) -> None:
        pass


class DiscardSink:
    """Upload off and nothing kept: log the clip's metadata, then let the audio go."""

    name = "discard"

    def deliver(self, clip: Clip) -> None:
        log.info("clip %s discarded (upload is off and output.keep_local is false): %s",
                 clip.id, json.dumps(clip.metadata(), sort_keys=True))
        return None

    def close(self) -> None:
        pass
