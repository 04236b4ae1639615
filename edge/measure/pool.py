"""Score every file of a corpus on all cores, cutting snippets as the audio streams by.

One process per core, each with its own engine, takes whole files (longest
first): a stream depends on its whole past, so a file is never split. A file is
read block by block, never loaded whole. Workers report audio seconds done
through a queue, for the progress bar.

Snippets: on negatives, every detection at the device's own threshold (the
config's, per model) is written as a WAV of the pre-roll (``audio.pre_roll_s``,
ending with the triggering frame, as the device's clip starts) plus
``SNIPPET_AFTER_S`` after it, from a small rolling buffer.
"""

from __future__ import annotations

import io
import logging
import multiprocessing as mp
import queue as queue_mod
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.audio.file import FileSource
from edge.audio.frames import FRAME_S, FRAME_SAMPLES, SAMPLE_RATE
from edge.audio.ringbuffer import RingBuffer
from edge.config import Config
from edge.errors import EdgeError
from edge.files import atomic_write, name_part, private_dir
from edge.measure.batch import StreamScorer, frame_chunks
from edge.measure.corpus import Job
from edge.pipeline.recorder import frames_for
from edge.wake.detector import build_policy, model_store
from edge.wake.policy import Detection

if TYPE_CHECKING:
    from multiprocessing import Queue

log = logging.getLogger(__name__)

SNIPPET_AFTER_S = 2.0
SNIPPETS_DIR = "snippets"


@dataclass(frozen=True)
class Setup:
    """What every worker needs; picklable."""

    cfg: Config
    out_dir: Path
    pad_s: float = 1.0
    """Digital silence before and after each positive utterance, in s."""


@dataclass(frozen=True)
class Snippet:
    file: str
    t: float
    """Stream time of the detection (end of the triggering frame), s."""
    model: str
    score: float
    threshold: float
    start: float
    """Stream time of the snippet's first sample, s."""
    path: str
    """Relative to the output folder."""


@dataclass
class FileResult:
    job: Job
    audio_s: float = 0.0
    """Seconds of audio in the file (positives: without the padding)."""
    scores: np.ndarray | None = None
    """Per-frame scores (frames, models), float32; positives include the padding."""
    snippets: list[Snippet] = field(default_factory=list)
    error: str | None = None
    frames_skipped: int = 0
    """Frames the idle gate skipped (scored 0, as on the device)."""


class Worker:
    """One engine, scoring one file after another."""

    def __init__(self, setup: Setup, progress: Callable[[float], Any]) -> None:
        self.setup = setup
        self.cfg = setup.cfg
        self.progress = progress
        self.scorer = StreamScorer.build(self.cfg.wake, model_store(self.cfg.wake))
        self.names = self.scorer.model_names
        self.policy = build_policy(self.cfg.wake, self.names)
        self.pad_frames = round(setup.pad_s / FRAME_S)

    def run(self, job: Job) -> FileResult:
        try:
            source = FileSource(job.path, self.cfg.audio.channel)
        except EdgeError as exc:
            return FileResult(job, error=str(exc))
        pad = self.pad_frames if job.kind == "positive" else 0
        cutter = SnippetCutter(self, job) if job.kind == "negative" else None
        skipped0 = self.scorer.frames_skipped
        parts: list[np.ndarray] = []
        try:
            for block, scores in self.scorer.run(frame_chunks(source, lead_frames=pad,
                                                              tail_frames=pad)):
                parts.append(scores)
                if cutter is not None:
                    cutter.feed(block, scores)
                self.progress(len(block) * FRAME_S)
        except EdgeError as exc:  # truncated or corrupt part way: the whole file is skipped
            if cutter is not None:
                cutter.discard()
            return FileResult(job, error=str(exc))
        finally:
            source.close()
        if cutter is not None:
            cutter.finish()
        scores = np.concatenate(parts) if parts else np.zeros((0, len(self.names)), np.float32)
        return FileResult(job, round((len(scores) - 2 * pad) * FRAME_S, 6), scores,
                          cutter.snippets if cutter is not None else [],
                          frames_skipped=self.scorer.frames_skipped - skipped0)


@dataclass
class _Cut:
    detection: Detection
    start: int
    """Frame index of the snippet's first frame."""
    parts: list[np.ndarray]
    left: int
    """Frames still to append after the detection."""


class SnippetCutter:
    """Detections at the device's thresholds, each cut as pre-roll plus 2 s while streaming."""

    def __init__(self, worker: Worker, job: Job) -> None:
        self.job = job
        self.policy = worker.policy
        self.policy.reset()
        self.ring = RingBuffer(frames_for(worker.cfg.audio.pre_roll_s), FRAME_SAMPLES)
        self.after = frames_for(SNIPPET_AFTER_S)
        self.index = 0
        self.open: list[_Cut] = []
        self.snippets: list[Snippet] = []
        self.folder = worker.setup.out_dir / SNIPPETS_DIR
        self.stem = name_part(job.path.stem)

    def feed(self, block: np.ndarray, scores: np.ndarray) -> None:
        for frame, s in zip(block, scores, strict=True):
            for cut in self.open:
                cut.parts.append(frame.copy())
                cut.left -= 1
            if self.open and self.open[0].left <= 0:
                self._write(done_only=True)
            self.ring.push(frame)
            for d in self.policy.step(s, self.index):
                start = self.index + 1 - self.ring.filled_frames
                self.open.append(_Cut(d, start, [self.ring.snapshot()], self.after))
            self.index += 1

    def finish(self) -> None:
        """The stream ended: write what is still open, however short."""
        self._write(done_only=False)

    def discard(self) -> None:
        """Remove the snippets already written (the file is being skipped)."""
        for s in self.snippets:
            (self.folder.parent / s.path).unlink(missing_ok=True)
        self.snippets = []
        self.open = []

    def _write(self, done_only: bool) -> None:
        import soundfile as sf

        keep = []
        for cut in self.open:
            if done_only and cut.left > 0:
                keep.append(cut)
                continue
            d = cut.detection
            name = f"{self.job.index:05d}_{self.stem}_{name_part(d.model)}_{d.t:.2f}s.wav"
            private_dir(self.folder)
            buf = io.BytesIO()
            sf.write(buf, np.concatenate(cut.parts), SAMPLE_RATE, subtype="PCM_16",
                     format="WAV")
            atomic_write(self.folder / name, buf.getvalue())  # 0600: it is someone's speech
            self.snippets.append(Snippet(str(self.job.path), d.t, d.model, d.score, d.threshold,
                                         round(cut.start * FRAME_S, 6), f"{SNIPPETS_DIR}/{name}"))
        self.open = keep


# ---- the pool --------------------------------------------------------------

_setup: Setup | None = None
_queue: Queue[float] | None = None
_worker: Worker | None = None


def _init(setup: Setup, progress_queue: Queue[float]) -> None:
    global _setup, _queue
    _setup, _queue = setup, progress_queue


def _run(job: Job) -> FileResult:
    global _worker
    assert _setup is not None
    if _worker is None:  # built here, not in the initializer, so its errors reach the caller
        assert _queue is not None
        _worker = Worker(_setup, _queue.put)
    return _worker.run(job)


def score_all(jobs: list[Job], setup: Setup, n_jobs: int, sizes: dict[int, float],
              progress: Callable[[float], Any]) -> list[FileResult]:
    """Results for every job, in job order. ``sizes``: seconds per job index, for ordering."""
    order = sorted(jobs, key=lambda j: -sizes.get(j.index, 0.0))
    results: list[FileResult] = []
    if not jobs:
        return results
    if n_jobs <= 1 or len(jobs) == 1:
        worker = Worker(setup, progress)
        results = [worker.run(j) for j in order]
    else:
        results = _pooled(order, setup, min(n_jobs, len(jobs)), progress)
    return sorted(results, key=lambda r: r.job.index)


def _pooled(order: list[Job], setup: Setup, n_jobs: int,
            progress: Callable[[float], Any]) -> list[FileResult]:
    ctx = mp.get_context("spawn")
    progress_queue = ctx.Queue()

    def drain() -> None:
        while True:
            try:
                progress(progress_queue.get_nowait())
            except queue_mod.Empty:
                return

    results: list[FileResult] = []
    pool = ProcessPoolExecutor(n_jobs, mp_context=ctx, initializer=_init,
                               initargs=(setup, progress_queue))
    try:
        pending = {pool.submit(_run, job) for job in order}
        while pending:
            done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            drain()
            results += [f.result() for f in done]
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    drain()
    return results
