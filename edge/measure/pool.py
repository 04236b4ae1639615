"""Score every task (a file, or a chunk of a long one) on all cores, or on a Dask cluster.

One process per core (this one included), each with its own engine, takes tasks
(longest first; this process takes the ones still waiting, shortest first). A task
is read block by block, never loaded whole, and reports audio seconds done through a
queue, for the progress bar. A file's chunks come back as score tracks that the
parent stitches in order; detections and snippets are then taken from the whole
track (:mod:`edge.measure.snippets`), so a file's results do not depend on how it was
cut, nor on how many processes or machines scored it.

The plan (:func:`edge.measure.chunks.plan`) depends on the files only, never on
``--jobs`` or the cluster, so every way of running gives the same report.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import queue as queue_mod
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge.audio.frames import FRAME_S, FRAME_SAMPLES, SAMPLE_RATE
from edge.config import Config
from edge.errors import EdgeError
from edge.measure import snippets
from edge.measure.batch import SpanScorer, StreamScorer, lead_frames
from edge.measure.chunks import CHUNK_FRAMES, FileInfo, Task, plan, task_blocks
from edge.measure.corpus import Job
from edge.measure.snippets import Snippet
from edge.wake.detector import model_store
from edge.wake.engine import FeatureModels, StreamingEngine
from edge.wake.models import is_micro

if TYPE_CHECKING:
    from multiprocessing import Queue

log = logging.getLogger(__name__)

MODES = ("batched", "exact")
"""``exact``: the device's engine frame by frame, bit for bit; ``batched``: whole spans at
once, within float32 rounding of the device (:class:`edge.measure.batch.SpanScorer`)."""


@dataclass(frozen=True)
class Setup:
    """What every worker needs; picklable."""

    cfg: Config
    out_dir: Path
    pad_s: float = 2.0
    """Digital silence before and after each positive utterance, in s."""
    mode: str = "batched"
    """One of :data:`MODES`."""
    chunk_frames: int = CHUNK_FRAMES
    """Frames per chunk of a long 16 kHz file (:mod:`edge.measure.chunks`)."""


@dataclass
class TaskResult:
    task: Task
    scores: np.ndarray | None = None
    """Scores (frames, models) of the task's own frames, float32."""
    frames_skipped: int = 0
    error: str | None = None
    mode: str = "exact"
    """The mode that scored it (an engine that cannot be batched is run exactly)."""


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
    mode: str = "exact"
    chunks: int = 1
    """Tasks the file was cut into."""


class Worker:
    """One engine, scoring one task after another."""

    def __init__(self, setup: Setup, progress: Callable[[float], Any] | None = None) -> None:
        self.setup = setup
        self.cfg = setup.cfg
        self.progress = progress or (lambda _s: None)
        store = model_store(self.cfg.wake)
        self.scorer = StreamScorer.build(self.cfg.wake, store)
        engine = self.scorer.engine
        self.lead = lead_frames(engine)
        self.span: SpanScorer | None = None
        if setup.mode == "batched" and isinstance(engine, StreamingEngine) \
                and isinstance(engine.features, FeatureModels):
            self.span = SpanScorer(engine, store.path("melspectrogram"))

    @property
    def mode(self) -> str:
        return "batched" if self.span is not None else "exact"

    def run(self, task: Task) -> TaskResult:
        # An engine whose lead is unknown reads its chunk's file from the start.
        lead = task.first if self.lead is None else min(self.lead, task.first)
        blocks = task_blocks(task, self.cfg.audio.channel, lead, self.setup.pad_s)
        try:
            if self.span is not None:
                scores, skipped = self._batched(blocks, lead, self.span)
            else:
                scores, skipped = self._exact(blocks, lead)
        except EdgeError as exc:  # truncated or corrupt part way: the whole file is skipped
            return TaskResult(task, error=str(exc), mode=self.mode)
        return TaskResult(task, scores, skipped, mode=self.mode)

    def _exact(self, blocks: Iterable[np.ndarray], lead: int) -> tuple[np.ndarray, int]:
        """The device's engine over every frame; the lead block's scores are dropped."""
        parts: list[np.ndarray] = []
        skipped0 = self.scorer.frames_skipped
        for i, (block, scores) in enumerate(self.scorer.run(blocks)):
            if i == 0 and lead:
                assert len(block) == lead
                skipped0 = self.scorer.frames_skipped
                continue
            parts.append(scores)
            self.progress(len(block) * FRAME_S)
        return self._stack(parts), self.scorer.frames_skipped - skipped0

    def _batched(self, blocks: Iterable[np.ndarray], lead: int,
                 span: SpanScorer) -> tuple[np.ndarray, int]:
        """Spans of frames at once; a stream's first frames (its warm-up) run exactly."""
        head = self.lead or 0
        parts: list[np.ndarray] = []
        skipped = 0
        carry = np.zeros((0, FRAME_SAMPLES), np.int16)
        keep = 0
        started = lead > 0
        for i, block in enumerate(blocks):
            buf = np.concatenate((carry, block)) if len(carry) else block
            if i == 0 and lead:  # context only
                carry, keep = buf, len(buf)
                continue
            if not started:
                if len(buf) < head:
                    carry = buf
                    continue
                scores, n = self._exact(iter([buf[:head]]), 0)
                parts.append(scores)
                skipped += n
                keep, started = head, True
            if len(buf) > keep:
                scores, n = span.score(buf, keep)
                parts.append(scores)
                skipped += n
                self.progress((len(buf) - keep) * FRAME_S)
            carry = buf[-head:]
            keep = len(carry)
        if not started and len(carry):  # a stream shorter than its warm-up
            scores, n = self._exact(iter([carry]), 0)
            parts.append(scores)
            skipped += n
        return self._stack(parts), skipped

    def _stack(self, parts: list[np.ndarray]) -> np.ndarray:
        if parts:
            return np.concatenate(parts)
        return np.zeros((0, len(self.scorer.model_names)), np.float32)


# ---- running the tasks -----------------------------------------------------------

_setup: Setup | None = None
_queue: Queue[float] | None = None
_worker: Worker | None = None


def _init(setup: Setup, progress_queue: Queue[float]) -> None:
    global _setup, _queue
    _setup, _queue = setup, progress_queue


def _run(task: Task) -> TaskResult:
    global _worker
    assert _setup is not None
    if _worker is None:  # built here, not in the initializer, so its errors reach the caller
        assert _queue is not None
        _worker = Worker(_setup, _queue.put)
    return _worker.run(task)


_cluster_workers = threading.local()


def run_task(setup: object, token: str, task: Task) -> TaskResult:
    """A task on a cluster worker: one engine per worker thread and run (``token``)."""
    assert isinstance(setup, Setup)
    held = getattr(_cluster_workers, "worker", None)
    if held is None or held[0] != token:
        held = (token, Worker(setup))
        _cluster_workers.worker = held
    result: TaskResult = held[1].run(task)
    return result


def score_all(jobs: list[Job], setup: Setup, names: tuple[str, ...],
              infos: dict[int, FileInfo], n_jobs: int, progress: Callable[[float], Any],
              cluster: str | None = None) -> list[FileResult]:
    """Results for every job, in job order, with their snippets cut."""
    # The streaming engine's chunks start their lead early; any other engine would have to
    # read each chunk's file from the start, so its files are not cut.
    split = setup.cfg.wake.engine != "openwakeword" and not any(is_micro(n) for n in names)
    tasks = plan(jobs, infos, split, setup.chunk_frames)
    tasks.sort(key=lambda t: -_frames(t, infos))
    if not tasks:
        return []
    if cluster is not None:
        from edge.measure.cluster import run_on_cluster

        def arrived(r: TaskResult) -> None:
            progress(0.0 if r.scores is None else len(r.scores) * FRAME_S)

        done = run_on_cluster(cluster, run_task, setup, tasks, arrived)
    elif n_jobs <= 1 or len(tasks) == 1:
        worker = Worker(setup, progress)
        done = [worker.run(t) for t in tasks]
    else:
        done = _pooled(tasks, setup, min(n_jobs, len(tasks)), progress)
    return [_stitch(job, [r for r in done if r.task.job.index == job.index], setup, names,
                    infos) for job in jobs]


def _frames(task: Task, infos: dict[int, FileInfo]) -> int:
    if task.end is not None:
        return task.end - task.first
    info = infos.get(task.job.index)
    return 0 if info is None else info.frames * SAMPLE_RATE // info.rate // FRAME_SAMPLES


def _stitch(job: Job, parts: list[TaskResult], setup: Setup, names: tuple[str, ...],
            infos: dict[int, FileInfo]) -> FileResult:
    parts.sort(key=lambda r: r.task.first)
    mode = parts[0].mode if parts else setup.mode
    bad = next((r.error for r in parts if r.error is not None), None)
    if bad is not None or not parts:
        return FileResult(job, error=bad or "not scored", mode=mode)
    scores = np.concatenate([r.scores for r in parts if r.scores is not None])
    skipped = sum(r.frames_skipped for r in parts)
    if job.kind == "positive":
        info = infos.get(job.index)
        seconds = info.frames / info.rate if info is not None else 0.0
        return FileResult(job, round(seconds, 6), scores, frames_skipped=skipped, mode=mode)
    found = snippets.detections(setup.cfg, names, scores)
    cut = snippets.cut(setup.cfg, job, found, len(scores), setup.out_dir)
    return FileResult(job, round(len(scores) * FRAME_S, 6), scores, cut, frames_skipped=skipped,
                      mode=mode, chunks=len(parts))


def _pooled(tasks: list[Task], setup: Setup, n_jobs: int,
            progress: Callable[[float], Any]) -> list[TaskResult]:
    """``n_jobs - 1`` worker processes and this one: it takes the tasks no process has
    started yet, from the shortest (a cancelled future is one a process will not run)."""
    ctx = mp.get_context("spawn")
    progress_queue = ctx.Queue()

    def drain() -> None:
        while True:
            try:
                progress(progress_queue.get_nowait())
            except queue_mod.Empty:
                return

    results: list[TaskResult] = []
    pool = ProcessPoolExecutor(n_jobs - 1, mp_context=ctx, initializer=_init,
                               initargs=(setup, progress_queue))
    try:
        futures = [pool.submit(_run, task) for task in tasks]
        here = Worker(setup, progress)  # built while the processes start
        for task, future in zip(reversed(tasks), reversed(futures), strict=True):
            drain()
            if future.cancel():
                results.append(here.run(task))
        pending = {f for f in futures if not f.cancelled()}
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
