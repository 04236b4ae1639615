"""Per-frame scores of a whole stream, chunk by chunk, bit for bit the device's.

The live device's :class:`~edge.wake.engine.StreamingEngine` runs every frame here
too, with its idle gate, its streamed embedding and its classifiers, so a score
can never differ from the device's. What is batched is the melspectrogram
model: for a chunk of frames, the rows of every frame (the frame plus its 480
samples of context, as the engine asks for them) come from one onnxruntime call
of shape ``[frames, 1760]``, and the engine is handed them when it asks. The
model floors its output 80 dB below the maximum of the whole batch (the device's
floor is per frame), so a frame with rows near that floor is not taken from the
batch: a second batch tries the frames the first left, and any still left are
computed alone when the engine asks.

Why the embedding is not batched as well: the device streams it
(:mod:`edge.wake.embedding`), which costs less per frame than onnxruntime
over a whole batch of windows, and a batched stream step is not bit-identical
to the per-frame one (BLAS sums in a different order for a different matrix
size), and the tool must never disagree with the device.

Each batch is checked on the kept frame nearest the floor against the unbatched
model; on any difference the cache switches itself off and every row is
computed as the engine would (slower, still exact).

>>> scorer = StreamScorer.build(cfg.wake)
>>> for frames, scores in scorer.run(chunks):   # (n, 1280) int16 -> (n, models)
...     ...
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import numpy as np

from edge.audio.frames import FRAME_SAMPLES
from edge.audio.sources import AudioSource
from edge.config import WakeConfig
from edge.wake.detector import build_engine
from edge.wake.embedding import StreamingEmbedding
from edge.wake.engine import MEL_CONTEXT, FeatureModels, StreamingEngine, WakeEngine
from edge.wake.models import ModelStore

log = logging.getLogger(__name__)

WINDOW = FRAME_SAMPLES + MEL_CONTEXT
"""Samples of one frame's melspectrogram input once the stream has started."""
CHUNK_FRAMES = 256
"""Frames per batch: about 20 s of audio."""
TOP_DB = 80.0
"""The melspectrogram model's floor: ``max(x, max(batch) - 80)``, in dB (its last Clip)."""
PREFETCH_ROUNDS = 3
"""Batches per chunk: each takes the frames the one before had to leave (quieter ones)."""
GATE_MARGIN_FRAMES = 32
"""With the idle gate, rows are prefetched only for frames this close to a loud one
(the engine's catch-up reaches back about 25 frames); any other row the engine
asks for is computed on demand."""


class BatchedMel:
    """The engine's feature models, with melspectrogram rows prefetched in batches.

    Everything but :meth:`melspectrogram` is the wrapped :class:`FeatureModels`.
    Rows are looked up by the exact input samples, so an unexpected request is
    simply computed, never answered wrongly.
    """

    def __init__(self, features: FeatureModels) -> None:
        self._features = features
        self._rows: dict[bytes, np.ndarray] = {}
        self._older: dict[bytes, np.ndarray] = {}
        self.enabled = True
        self.hits = 0
        self.misses = 0

    def embeddings(self, windows: np.ndarray) -> np.ndarray:
        return self._features.embeddings(windows)

    def streaming_embedding(self) -> StreamingEmbedding:
        return self._features.streaming_embedding()

    def prefetch(self, windows: np.ndarray) -> None:
        """Compute the rows of ``windows`` (n, 1760) float32 in one call.

        The model ends by flooring its output at ``TOP_DB`` below the maximum of the
        whole batch, where the device floors each frame at its own maximum. A frame
        whose rows all stay above the batch's floor is unaffected and is kept; any
        other is left to be computed alone when the engine asks for it. The
        previous batch stays available, for the engine's catch-up after a gap.
        """
        self._older, self._rows = self._rows, {}
        if not self.enabled or not len(windows):
            return
        todo = np.arange(len(windows))
        for _ in range(PREFETCH_ROUNDS):
            todo = self._batch(windows, todo)
            if len(todo) < 2 or not self.enabled:
                return

    def _batch(self, windows: np.ndarray, todo: np.ndarray) -> np.ndarray:
        """Keep the rows of the frames ``todo`` that one batch gets right; return the others."""
        f = self._features
        out = f.mel.run(None, {f.mel_input: windows[todo]})[0]
        spec = out.reshape(len(todo), -1, out.shape[-1])
        lows = spec.reshape(len(todo), -1).min(axis=1)
        safe = lows > spec.max() - np.float32(TOP_DB)
        keep = np.flatnonzero(safe)
        if not len(keep):
            return todo[:0]
        spec /= 10.0  # the transform of FeatureModels.melspectrogram, checked below
        spec += 2.0
        # The check: the kept frame nearest to the floor, computed alone.
        probe = keep[np.argmin(lows[keep])]
        alone = f.melspectrogram(windows[todo[probe]].copy())
        if not np.array_equal(alone, spec[probe]):
            log.warning("batched melspectrogram rows differ from per-frame rows (by up to %g); "
                        "computing them frame by frame", float(np.abs(alone - spec[probe]).max()))
            self.enabled = False
            self._rows = {}
            self._older = {}
            return todo[:0]
        for i in keep:
            rows = spec[i]
            rows.flags.writeable = False
            self._rows[windows[todo[i]].tobytes()] = rows
        return todo[~safe]

    def melspectrogram(self, samples: np.ndarray) -> np.ndarray:
        if samples.shape == (WINDOW,):
            key = samples.tobytes()
            rows = self._rows.get(key)
            if rows is None:
                rows = self._older.get(key)
            if rows is not None:
                self.hits += 1
                return rows
        self.misses += 1
        return self._features.melspectrogram(samples)

    def clear(self) -> None:
        self._rows = {}
        self._older = {}


class StreamScorer:
    """Scores of one stream at a time from ``engine``; the engine is reset per stream.

    An engine without the streaming engine's feature models (the upstream
    openwakeword engine) is run frame by frame, unbatched.
    """

    def __init__(self, engine: WakeEngine, mel: BatchedMel | None = None,
                 chunk_frames: int = CHUNK_FRAMES) -> None:
        self.engine = engine
        self.mel = mel
        """The batched melspectrogram the engine was built on (None: unbatched)."""
        self.chunk_frames = chunk_frames
        self.gate_dbfs = engine.idle_gate_dbfs if isinstance(engine, StreamingEngine) else None

    @classmethod
    def build(cls, wake: WakeConfig, store: ModelStore | None = None,
              chunk_frames: int = CHUNK_FRAMES) -> StreamScorer:
        """The engine ``[wake]`` names, built on a batched melspectrogram where it has one."""
        batched: list[BatchedMel] = []

        def batch(features: FeatureModels) -> BatchedMel:
            batched.append(BatchedMel(features))
            return batched[-1]

        engine = build_engine(wake, store, features=batch)
        return cls(engine, batched[0] if batched else None, chunk_frames)

    @property
    def frames_skipped(self) -> int:
        """Frames the engine's idle gate skipped so far (0 for an engine without one)."""
        return self.engine.frames_skipped if isinstance(self.engine, StreamingEngine) else 0

    @property
    def model_names(self) -> tuple[str, ...]:
        return self.engine.model_names

    def run(self, chunks: Iterable[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """For each chunk of int16 frames (n, 1280): the chunk and its scores (n, models)."""
        self.engine.reset()
        n_models = len(self.engine.model_names)
        context = np.zeros(MEL_CONTEXT, dtype=np.float32)
        index = 0
        try:
            for block in chunks:
                if self.mel is not None:
                    self.mel.prefetch(self._windows(block, context, index))
                scores = np.empty((len(block), n_models), dtype=np.float32)
                for i, frame in enumerate(block):
                    scores[i] = self.engine.process(frame)
                context = block[-1, -MEL_CONTEXT:].astype(np.float32)
                index += len(block)
                yield block, scores
        finally:
            if self.mel is not None:
                self.mel.clear()

    def _windows(self, block: np.ndarray, context: np.ndarray, index: int) -> np.ndarray:
        """The melspectrogram inputs of the chunk's frames, as the engine will ask for them."""
        flat = np.concatenate((context, block.reshape(-1).astype(np.float32)))
        starts = np.arange(len(block)) * FRAME_SAMPLES
        wanted = np.ones(len(block), dtype=bool)
        if index == 0:
            wanted[0] = False  # the first frame of a stream has no context: computed alone
        if self.gate_dbfs is not None:
            wanted &= _near_loud(block, self.gate_dbfs)
        starts = starts[wanted]
        if not len(starts):
            return np.zeros((0, WINDOW), dtype=np.float32)
        return flat[starts[:, None] + np.arange(WINDOW)[None, :]]


def _near_loud(block: np.ndarray, gate_dbfs: float) -> np.ndarray:
    """Frames within :data:`GATE_MARGIN_FRAMES` of a frame at or above the gate (1 dB slack)."""
    f = block.astype(np.float64)
    ms = np.einsum("ij,ij->i", f, f) / FRAME_SAMPLES
    limit = (32768.0 ** 2) * 10.0 ** ((gate_dbfs - 1.0) / 10.0)
    loud = (ms >= limit).astype(np.int32)
    m = GATE_MARGIN_FRAMES
    spread = np.convolve(loud, np.ones(2 * m + 1, dtype=np.int32), mode="full")[m:m + len(loud)]
    near: np.ndarray = spread > 0
    return near


def frame_chunks(source: AudioSource, chunk_frames: int = CHUNK_FRAMES,
                 lead_frames: int = 0, tail_frames: int = 0) -> Iterator[np.ndarray]:
    """Chunks (n, 1280) of a source's frames, with optional silent frames before and after."""
    buf = np.zeros((chunk_frames, FRAME_SAMPLES), dtype=np.int16)
    n = 0

    def frames() -> Iterator[np.ndarray]:
        silent = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        for _ in range(lead_frames):
            yield silent
        while (frame := source.read()) is not None:
            yield frame
        for _ in range(tail_frames):
            yield silent

    for frame in frames():
        buf[n] = frame
        n += 1
        if n == chunk_frames:
            yield buf.copy()
            n = 0
    if n:
        yield buf[:n].copy()
