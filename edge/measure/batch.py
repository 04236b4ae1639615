"""Per-frame scores of a stream: bit for bit the device's, or batched within rounding.

Two modes.

``exact`` (``edge measure --exact``): the live device's
:class:`~edge.wake.engine.StreamingEngine` runs every frame, with its idle gate, its
streamed embedding and its classifiers (:class:`StreamScorer`), so a score can never
differ from the device's.

``batched`` (the default): what the device computes one frame at a time, computed
over whole spans of frames (:class:`SpanScorer`): the melspectrogram over contiguous
audio, the embedding over whole runs of mel rows (:class:`SequenceEmbedding`; without
onnxruntime, 8 frames per matrix product with
:meth:`~edge.wake.embedding.StreamingEmbedding.step_batched`), the classifiers over
all frames at once, and the idle gate as the mask it is (a frame is scored when a
frame at or above the gate level lies within the engine's catch-up reach before it).
Sums then run in another order, so scores differ from the device's by float32
rounding; the tests hold them within 1e-5 of the device's on every frame, with
identical detections at every threshold.

Chunks: the engine forgets. After :func:`lead_frames` frames of a stream every
buffer it holds (raw audio, mel rows, the streamed embedding's context rows, the
classifiers' embeddings, the gate's hangover and catch-up) depends only on those
frames, so a chunk of a long file that starts that many frames early scores every
frame of its own exactly as the device does over the whole file; the tests hold
this bit for bit, with and without the idle gate, across chunk boundaries.

Bit for bit assumes one OpenBLAS set-up: it sums in another order when it was
started with more threads, even if later limited to one. ``edge`` sets
``OPENBLAS_NUM_THREADS=1`` before numpy loads, in every process it starts (and a Dask
worker's nanny does the same), so all of them, and the device, agree.

>>> scorer = StreamScorer.build(cfg.wake)
>>> for frames, scores in scorer.run(chunks):   # (n, 1280) int16 -> (n, models)
...     ...
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edge.audio.frames import FRAME_SAMPLES
from edge.audio.sources import AudioSource
from edge.config import WakeConfig
from edge.wake.detector import build_engine
from edge.wake.embedding import StreamingEmbedding
from edge.wake.engine import (
    EMB_STEP,
    EMB_WINDOW,
    MEL_BINS,
    MEL_CONTEXT,
    FeatureModels,
    StreamingEngine,
    WakeEngine,
    frame_dbfs,
)
from edge.wake.models import ModelStore

CHUNK_FRAMES = 256
"""Frames per block handed to the engine (about 20 s of audio)."""
TOP_DB = 80.0
"""The melspectrogram model's floor: ``max(x, max(call) - 80)``, in dB (its last Clip)."""


class StreamScorer:
    """Exact mode: scores of one stream at a time from ``engine``, reset per stream."""

    def __init__(self, engine: WakeEngine) -> None:
        self.engine = engine

    @classmethod
    def build(cls, wake: WakeConfig, store: ModelStore | None = None) -> StreamScorer:
        """The engine ``[wake]`` names, as the device builds it."""
        return cls(build_engine(wake, store))

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
        for block in chunks:
            scores = np.empty((len(block), n_models), dtype=np.float32)
            for i, frame in enumerate(block):
                scores[i] = self.engine.process(frame)
            yield block, scores


WINDOW_FRAMES = math.ceil(EMB_WINDOW / EMB_STEP)
"""Frames whose mel rows one embedding window spans (10)."""
LEAD_MARGIN = 8
"""Frames of lead beyond the bound of :func:`lead_frames` (the tests hold the bound itself)."""
MEL_PIECE = 256
"""Frames per melspectrogram call in batched mode (its 80 dB floor is per call)."""
EMB_BATCH = 8
"""Embeddings per matrix product in batched mode."""


def lead_frames(engine: WakeEngine) -> int | None:
    """Frames a chunk must start before its first scored frame so that every frame it
    scores is scored as in the whole stream (None: this engine is never split).

    Of the streaming engine's state, the idle gate's decision for a frame depends on the
    last ``catchup`` frames (its hangover); a catch-up that differs from the whole
    stream's (a quiet stretch that began before the chunk) is over within ``2 catchup +
    1`` frames; from then on, the classifiers' embeddings, their mel windows and the
    streamed embedding's context rows are all refilled within ``n_feat + 10`` frames.
    """
    if not isinstance(engine, StreamingEngine):
        return None
    n_feat = max(c.n_embeddings for c in engine.classifiers)
    catchup = n_feat - 1 + WINDOW_FRAMES
    return 2 * catchup + 1 + n_feat + WINDOW_FRAMES + LEAD_MARGIN


class SpanScorer:
    """Batched mode: the scores of a span of a stream, computed for the whole span at once.

    The arithmetic is the device's, arranged for throughput: the melspectrogram of
    contiguous audio (:data:`MEL_PIECE` frames per call; a frame whose rows the call's
    80 dB floor would change is computed alone, as the device does), the embedding of
    every window of a stretch at once, the classifiers only on frames the idle
    gate lets through (a frame is processed when a frame at or above the gate level lies
    within the engine's catch-up reach before it, the hangover's rule), each stretch of
    processed frames computed from the mel rows and embeddings its classifiers see.
    """

    def __init__(self, engine: StreamingEngine, mel_path: Path | None = None) -> None:
        if not isinstance(engine.features, FeatureModels):
            raise TypeError("SpanScorer needs the engine's own feature models")
        features = self.features = engine.features
        self.mel: Any = features.mel
        """The melspectrogram over long audio: onnxruntime's when installed (about twice
        as fast there as the device's numpy FFT, the same to float32 rounding)."""
        if mel_path is not None:
            self.mel = _onnxruntime(mel_path.read_bytes()) or features.mel
        self.classifiers = engine.classifiers
        self.n_feat = max(c.n_embeddings for c in engine.classifiers)
        self.catchup = self.n_feat - 1 + WINDOW_FRAMES
        self.gate = engine.idle_gate_dbfs
        self.stream = features.streaming_embedding() if engine.streaming else None
        self.sequence = None
        if self.stream is not None and features.emb_path is not None:
            self.sequence = SequenceEmbedding.load(features.emb_path, self.stream)
        self.reach = self.n_feat - 1 + WINDOW_FRAMES
        """Frames before a scored frame whose mel rows it depends on."""
        self.need_lead = max(self.catchup, self.reach) + 1

    def score(self, frames: np.ndarray, keep: int) -> tuple[np.ndarray, int]:
        """Scores (n - keep, models) of ``frames[keep:]`` and how many of those the gate skips.

        ``frames`` (n, 1280) int16 are consecutive frames of a stream, the first ``keep``
        (at least :attr:`need_lead`) only for context; none is the stream's first frame.
        """
        n = len(frames)
        if keep < self.need_lead:
            raise ValueError(f"a span needs {self.need_lead} frames of lead; got {keep}")
        out = np.zeros((max(n - keep, 0), len(self.classifiers)), np.float32)
        if n <= keep:
            return out, 0
        idx = np.arange(keep, n)
        if self.gate is None:
            active = np.ones(n - keep, dtype=bool)
        else:
            loud = np.fromiter((frame_dbfs(f) >= self.gate for f in frames), bool, n)
            csum = np.concatenate(([0], np.cumsum(loud)))
            active = csum[idx + 1] - csum[idx - self.catchup] > 0
        for a, b in _stretches(active, self.reach):
            self._stretch(frames, keep + a, keep + b, active[a:b], out[a:b])
        return out, int(n - keep - active.sum())

    def _stretch(self, frames: np.ndarray, s0: int, e0: int, active: np.ndarray,
                 out: np.ndarray) -> None:
        """Scores of the processed frames among ``frames[s0:e0]``, into ``out``."""
        m0 = s0 - self.reach  # first frame whose mel rows are needed
        raw = frames[m0 - 1:e0].reshape(-1)[FRAME_SAMPLES - MEL_CONTEXT:].astype(np.float32)
        rows = self._mel_rows(raw, e0 - m0)
        j0 = m0 + WINDOW_FRAMES - 1  # the first frame with a whole window of these rows
        first = 8 * (j0 - m0) + EMB_STEP
        if self.sequence is not None:
            embeddings = self.sequence.embed(rows[first - EMB_WINDOW:])
        elif self.stream is not None:
            self.stream.reset()
            emb = [self.stream.prime(rows[first - EMB_WINDOW:first])[None]]
            if e0 - 1 > j0:
                emb.append(self.stream.step_batched(rows[first:], EMB_BATCH))
            embeddings = np.vstack(emb)
        else:
            ends = np.arange(first, len(rows) + 1, EMB_STEP)
            windows = np.stack([rows[e - EMB_WINDOW:e] for e in ends])
            embeddings = self.features.embeddings(windows)
        rows = np.flatnonzero(active)
        ends = s0 + rows - j0 + 1  # each frame's embeddings end with its own
        for k, c in enumerate(self.classifiers):
            n = c.n_embeddings
            batch = getattr(c.session, "scores", None)  # the numpy classifiers score a batch
            if batch is None:
                out[rows, k] = [c.score(embeddings[e - n:e]) for e in ends]
                continue
            windows = np.lib.stride_tricks.sliding_window_view(embeddings, n, axis=0)
            out[rows, k] = batch(windows[ends - n].transpose(0, 2, 1))

    def _mel_rows(self, raw: np.ndarray, frames: int) -> np.ndarray:
        """Mel rows (8 frames, 32) of ``frames`` frames; ``raw``: 480 samples of context, then
        the frames' samples."""
        f = self.features
        out = np.empty((frames * EMB_STEP, MEL_BINS), np.float32)
        for a in range(0, frames, MEL_PIECE):
            b = min(frames, a + MEL_PIECE)
            x = raw[a * FRAME_SAMPLES:b * FRAME_SAMPLES + MEL_CONTEXT]
            spec = self.mel.run(None, {f.mel_input: x[None]})[0].reshape(-1, MEL_BINS)
            if spec.shape[0] != (b - a) * EMB_STEP:
                raise ValueError(f"melspectrogram gave {spec.shape[0]} rows for {b - a} frames")
            lows = spec.reshape(b - a, -1).min(axis=1)
            floored = np.flatnonzero(lows <= spec.max() - np.float32(TOP_DB))
            spec /= 10.0  # as FeatureModels.melspectrogram
            spec += 2.0
            for i in floored:
                spec[i * EMB_STEP:(i + 1) * EMB_STEP] = f.melspectrogram(
                    x[i * FRAME_SAMPLES:(i + 1) * FRAME_SAMPLES + MEL_CONTEXT].copy())
            out[a * EMB_STEP:b * EMB_STEP] = spec
        return out


SEQ_PIECE = 128
"""Embeddings per onnxruntime call of :class:`SequenceEmbedding`."""
_RESHAPES = ((-1, 1, EMB_WINDOW, MEL_BINS), (1, 1, -1, MEL_BINS),
             (-1, 1, 1, 96), (1, 96, -1, 1))
"""The embedding model's first and last Reshape targets, and what they become."""


class SequenceEmbedding:
    """The embedding model over a long run of mel rows, on onnxruntime: every window of
    a run, with the arithmetic of the device's streamed embedding (only new rows), in one
    call per :data:`SEQ_PIECE` windows.

    The model is fully convolutional in time with a stride of 8 rows, so run over a long
    sequence its last layer gives the embedding of every window. Its only fixed length
    is the first Reshape (to 76 rows); that one and the last are rewritten to take the
    whole sequence, fed as blocks of 76 rows. :meth:`load` returns None (the caller
    streams the embedding with numpy) when the file does not hold those Reshapes, when
    onnxruntime is not installed, or when the result differs from the streamed
    embedding by more than 1e-3 on a check at load.
    """

    def __init__(self, session: Any, input_name: str) -> None:
        self.session = session
        self.input_name = input_name

    @classmethod
    def load(cls, path: Path, stream: StreamingEmbedding) -> SequenceEmbedding | None:
        model = path.read_bytes()
        for old, new in zip(_RESHAPES[0::2], _RESHAPES[1::2], strict=True):
            raw = np.array(old, "<i8").tobytes()
            if model.count(raw) != 1:
                return None
            model = model.replace(raw, np.array(new, "<i8").tobytes())
        session = _onnxruntime(model)
        if session is None:
            return None
        seq = cls(session, session.get_inputs()[0].name)
        rows = np.random.RandomState(7).uniform(-4.0, 4.0, (EMB_WINDOW + 8 * 20, MEL_BINS))
        rows = rows.astype(np.float32)
        stream.reset()
        ref = np.vstack([stream.prime(rows[:EMB_WINDOW])[None], stream.step(rows[EMB_WINDOW:])])
        stream.reset()
        return seq if float(np.abs(seq.embed(rows) - ref).max()) < 1e-3 else None

    def embed(self, rows: np.ndarray) -> np.ndarray:
        """Embeddings (n, 96) of the windows of ``rows`` (76 + 8 (n - 1), 32) at rows 0, 8, ..."""
        n = (len(rows) - EMB_WINDOW) // EMB_STEP + 1
        out = np.empty((n, 96), np.float32)
        for a in range(0, n, SEQ_PIECE):
            b = min(n, a + SEQ_PIECE)
            piece = rows[EMB_STEP * a:EMB_STEP * (b - 1) + EMB_WINDOW]
            blocks = -(-len(piece) // EMB_WINDOW)
            x = np.zeros((blocks * EMB_WINDOW, MEL_BINS), np.float32)
            x[:len(piece)] = piece
            feed = x.reshape(blocks, EMB_WINDOW, MEL_BINS, 1)
            y = self.session.run(None, {self.input_name: feed})[0]
            out[a:b] = y[0, :, :b - a, 0].T
        return out


def _onnxruntime(model: bytes) -> Any:
    """An onnxruntime session of ``model`` on one thread; None without onnxruntime."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime raises its own untyped errors: the caller uses numpy
        return None


def _stretches(active: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """Runs of True in ``active`` as (start, end), runs closer than ``gap`` merged."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], active.astype(np.int8), [0]))))
    runs = list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))
    merged: list[tuple[int, int]] = []
    for a, b in runs:
        if merged and a - merged[-1][1] < gap:
            merged[-1] = (merged[-1][0], b)
        else:
            merged.append((a, b))
    return merged


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
