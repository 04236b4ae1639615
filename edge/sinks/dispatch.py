"""Hands finished clips from the audio loop to the sinks on a worker thread.

The audio loop only appends to a queue. The worker delivers each clip to every
sink; ``close`` waits until every clip handed over has been delivered, so a
clean shutdown never loses a finished clip.

A sink that fails with an ``OSError`` (a full or read-only disk) keeps the clip in
memory (at most ``max_held`` clips, the oldest dropped beyond that, logged) and is
tried again every ``retry_s`` seconds and at ``close``; what still cannot be written
then is named in the log as lost.

``paused()`` delivers what was handed over until then, then keeps the worker between two clips
for as long as the caller needs the sinks' places to itself (a purge while running).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence

from edge.pipeline.clip import Clip
from edge.sinks.base import ClipSink

log = logging.getLogger(__name__)
_STOP = object()


class ClipDispatcher:
    def __init__(self, sinks: Sequence[ClipSink],
                 on_delivered: Callable[[Clip, dict[str, str | None]], None] | None = None,
                 retry_s: float = 5.0, max_held: int = 16) -> None:
        self.sinks = list(sinks)
        self.on_delivered = on_delivered
        self.retry_s = retry_s
        self.max_held = max_held
        self._q: queue.Queue[object] = queue.Queue()
        self._held: list[tuple[Clip, ClipSink]] = []
        """Clips a sink could not write (disk full), waiting in memory for another try."""
        self.delivered = 0
        self.failed = 0
        self.retried = 0
        self.lost = 0
        self._busy = threading.Lock()
        """Held by the worker while it writes; ``paused`` takes it to keep the sinks still."""
        self._thread = threading.Thread(target=self._run, name="clip-dispatch", daemon=True)
        self._thread.start()

    def submit(self, clip: Clip) -> None:
        self._q.put(clip)

    def _run(self) -> None:
        while True:
            try:
                item = self._q.get(timeout=self.retry_s if self._held else None)
            except queue.Empty:
                with self._busy:
                    self._retry_held()
                continue
            try:
                if isinstance(item, threading.Event):
                    item.set()  # a pause waits for the clips before it, never for later ones
                    continue
                with self._busy:
                    if item is _STOP:
                        self._retry_held(final=True)
                        return
                    assert isinstance(item, Clip)
                    self._retry_held()
                    self._deliver(item)
            finally:
                self._q.task_done()

    def _retry_held(self, final: bool = False) -> None:
        held, self._held = self._held, []
        for clip, sink in held:
            try:
                sink.deliver(clip)
            except OSError as exc:
                if final:
                    self.lost += 1
                    log.error("clip %s is lost: sink %s still cannot write it at exit (%s)",
                              clip.id, sink.name, exc)
                else:
                    self._held.append((clip, sink))
                continue
            except Exception as exc:
                self.lost += 1
                log.error("clip %s is lost: sink %s failed on retry: %s", clip.id, sink.name,
                          exc)
                continue
            self.retried += 1
            log.warning("sink %s took clip %s on a later try: the fault has cleared",
                        sink.name, clip.id)

    def _hold(self, clip: Clip, sink: ClipSink, exc: OSError) -> None:
        if len(self._held) >= self.max_held:
            old, old_sink = self._held.pop(0)
            self.lost += 1
            log.error("clip %s is lost: %d clips already wait in memory for sink %s",
                      old.id, self.max_held, old_sink.name)
        self._held.append((clip, sink))
        log.error("sink %s could not write clip %s (%s); it is kept in memory and tried again "
                  "every %g s; free space or fix the directory", sink.name, clip.id, exc,
                  self.retry_s)

    def _deliver(self, clip: Clip) -> None:
        where: dict[str, str | None] = {}
        for sink in self.sinks:
            try:
                where[sink.name] = sink.deliver(clip)
            except OSError as exc:
                self.failed += 1
                where[sink.name] = None
                self._hold(clip, sink, exc)
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

    @contextlib.contextmanager
    def paused(self, drop_held: bool = False) -> Iterator[int]:
        """Deliver every clip submitted so far, then keep every sink still for the ``with``
        block; with ``drop_held``, forget the clips waiting in memory for a failed sink
        (a purge: they must not be written after it). Yields how many were dropped."""
        reached = threading.Event()
        self._q.put(reached)
        while not reached.wait(0.1) and self._thread.is_alive():
            pass
        with self._busy:
            dropped = 0
            if drop_held and self._held:
                dropped = len({id(clip) for clip, _sink in self._held})
                self._held = []
                log.warning("%d clip(s) waiting in memory for a failed sink were dropped",
                            dropped)
            yield dropped

    def close(self) -> None:
        self._q.put(_STOP)
        self._thread.join()
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                log.exception("closing sink %s failed", sink.name)
