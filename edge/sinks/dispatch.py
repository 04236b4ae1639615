"""Hands finished clips from the audio loop to the sinks on a worker thread.

The audio loop only appends to a queue. The worker delivers each clip to every
sink; ``close`` waits until every clip handed over has been delivered, so a
clean shutdown never loses a finished clip.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

from edge.clip import Clip
from edge.sinks import ClipSink

log = logging.getLogger(__name__)
_STOP = object()


class ClipDispatcher:
    def __init__(self, sinks: Sequence[ClipSink],
                 on_delivered: Callable[[Clip, dict[str, str | None]], None] | None = None
                 ) -> None:
        self.sinks = list(sinks)
        self.on_delivered = on_delivered
        self._q: queue.Queue[object] = queue.Queue()
        self.delivered = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="clip-dispatch", daemon=True)
        self._thread.start()

    def submit(self, clip: Clip) -> None:
        self._q.put(clip)

    def _run(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is _STOP:
                    return
                assert isinstance(item, Clip)
                self._deliver(item)
            finally:
                self._q.task_done()

    def _deliver(self, clip: Clip) -> None:
        where: dict[str, str | None] = {}
        for sink in self.sinks:
            try:
                where[sink.name] = sink.deliver(clip)
            except Exception as exc:
                self.failed += 1
                where[sink.name] = None
                log.error("sink %s could not take clip %s: %s", sink.name, clip.id, exc)
        self.delivered += 1
        if self.on_delivered is not None:
            try:
                self.on_delivered(clip, where)
            except Exception:
                log.exception("clip delivery observer failed for %s", clip.id)

    def flush(self) -> None:
        """Wait until every clip submitted so far has been delivered."""
        self._q.join()

    def close(self) -> None:
        self._q.put(_STOP)
        self._thread.join()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing sink %s failed", sink.name)
