"""openWakeWord's streaming feature pipeline on onnxruntime, lean.

The same models and the same arithmetic as openwakeword 0.6.0's ``Model.predict``,
but on preallocated numpy buffers: no per-frame Python lists, no 10-second deque
copied every frame, and no scikit-learn or scipy in the process.

Each 80 ms frame (1280 samples at 16 kHz):

1. the melspectrogram model runs over the frame plus 480 samples of context,
   giving 8 mel rows (5 on the very first frame, as upstream);
2. the embedding model runs over the last 76 mel rows, giving one 96-d embedding;
   by default it is streamed (edge.wake.embedding): only the layer rows that
   are new since the last frame are computed, with numpy, to float32 rounding of
   onnxruntime's result, at about a third of its CPU;
3. every wake-word classifier runs over its own last N embeddings.

Where the models run: with ``runtime="auto"`` (the default), every model whose file
has reference output recorded in :mod:`edge.wake.golden` (the stock models) runs with
numpy, checked against that output at load, and onnxruntime is never imported; any
other model (a user's own classifier) runs on onnxruntime. ``runtime="onnxruntime"``
runs everything on onnxruntime, as before.

Quiet rooms: with ``idle_gate_dbfs`` set, frames far below speech level skip
steps 1-3. The raw audio of the last couple of seconds is kept, so when the level
rises the skipped frames that the classifiers can still see are computed in one
batch and the scores from then on are exactly those of the full pipeline. A frame
is only skipped when its whole receptive field (about 2 s) was quiet.

>>> engine = StreamingEngine(FeatureModels.load(mel, emb), [Classifier.load("hey_jarvis", p)])
>>> scores = engine.process(frame)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from edge.audio.frames import FRAME_SAMPLES, check_frame
from edge.errors import ModelError
from edge.wake.noise import warmup_noise
from edge.wake.runtime import Model, load_model

if TYPE_CHECKING:
    from edge.wake.embedding import Layer, StreamingEmbedding

log = logging.getLogger(__name__)

MEL_CONTEXT = 480
"""Samples before the frame that the melspectrogram model needs (3 hops of 160)."""
MEL_BINS = 32
EMB_WINDOW = 76
"""Mel rows per embedding window."""
EMB_STEP = 8
"""Mel rows per frame once the stream has started."""
EMB_DIM = 96
WARMUP_FRAMES = 5
"""Scores are zero for the first frames of a stream, as upstream, while features settle."""


def _check_shape(name: str, got: list[int | None], expected: list[int | None]) -> None:
    ok = len(got) == len(expected) and all(
        e is None or g == e for g, e in zip(got, expected, strict=True)
    )
    if not ok:
        shown = ", ".join("N" if e is None else str(e) for e in expected)
        raise ModelError(f"model {name} has input shape {got}; expected [{shown}]")


@dataclass
class FeatureModels:
    """The two shared front-end models: melspectrogram and embedding."""

    mel: Model
    emb: Model
    mel_input: str
    emb_input: str
    emb_path: Path | None = None
    """The embedding model's file, for :meth:`streaming_embedding`."""
    _stream_layers: list[Layer] | None = field(default=None, repr=False, compare=False)

    @classmethod
    def load(cls, mel_path: Path, emb_path: Path, threads: int = 1,
             runtime: str = "auto") -> FeatureModels:
        mel = load_model(mel_path, "melspectrogram", threads, runtime)
        emb = load_model(emb_path, "embedding", threads, runtime)
        mi = mel.get_inputs()
        if len(mi) != 1 or len(mi[0].shape) != 2:
            raise ModelError(
                f"model {mel_path.name} has inputs {[i.shape for i in mi]}; "
                "expected one input of shape [batch, samples]"
            )
        ei = emb.get_inputs()
        _check_shape(emb_path.name, [d if isinstance(d, int) else None for d in ei[0].shape],
                     [None, EMB_WINDOW, MEL_BINS, 1])
        layers = getattr(emb, "layers", None)  # a numpy embedding's, already checked
        return cls(mel, emb, mi[0].name, ei[0].name, emb_path, layers)

    def streaming_embedding(self) -> StreamingEmbedding:
        """A new :class:`~edge.wake.embedding.StreamingEmbedding` of the embedding model.

        Raises :class:`ModelError` when the model file is unknown or is not the
        architecture the streaming code implements.
        """
        from edge.wake.embedding import StreamingEmbedding, parse_layers

        if self.emb_path is None:
            raise ModelError("the embedding model's file is unknown; cannot stream it")
        if self._stream_layers is None:
            self._stream_layers = parse_layers(self.emb_path)
        return StreamingEmbedding(self._stream_layers)

    def melspectrogram(self, samples: np.ndarray) -> np.ndarray:
        """Mel rows (n, 32) of float32 samples (on the int16 scale), transformed as upstream."""
        out = self.mel.run(None, {self.mel_input: samples.reshape(1, -1)})[0]
        spec = out.reshape(-1, MEL_BINS)
        spec /= 10.0
        spec += 2.0
        return spec

    def embeddings(self, windows: np.ndarray) -> np.ndarray:
        """Embeddings (n, 96) of mel windows shaped (n, 76, 32)."""
        x = windows.reshape(-1, EMB_WINDOW, MEL_BINS, 1)
        return self.emb.run(None, {self.emb_input: x})[0].reshape(-1, EMB_DIM)


@dataclass
class Classifier:
    """One wake-word model: a classifier over its last ``n_embeddings`` embeddings."""

    name: str
    session: Model
    input_name: str
    n_embeddings: int

    @classmethod
    def load(cls, name: str, path: Path, threads: int = 1, runtime: str = "auto") -> Classifier:
        s = load_model(path, "classifier", threads, runtime)
        inputs, outputs = s.get_inputs(), s.get_outputs()
        shape = list(inputs[0].shape) if len(inputs) == 1 else []
        if len(shape) != 3 or not isinstance(shape[1], int) or shape[2] != EMB_DIM:
            raise ModelError(
                f"wake-word model {name} ({path}) has input shape {shape}; "
                f"expected [1, N, {EMB_DIM}] (an openWakeWord-format classifier)"
            )
        oshape = list(outputs[0].shape)
        if len(outputs) != 1 or oshape[-1] != 1:
            raise ModelError(
                f"wake-word model {name} ({path}) has output shape {oshape}; expected [1, 1]"
            )
        return cls(name, s, inputs[0].name, int(shape[1]))

    def score(self, features: np.ndarray) -> float:
        return float(self.session.run(None, {self.input_name: features[None]})[0].reshape(-1)[0])


class Features(Protocol):
    """What ``StreamingEngine`` asks its feature models for (``FeatureModels``, or the
    measuring tool's batched melspectrogram in front of them)."""

    def melspectrogram(self, samples: np.ndarray) -> np.ndarray: ...

    def embeddings(self, windows: np.ndarray) -> np.ndarray: ...

    def streaming_embedding(self) -> StreamingEmbedding: ...


class WakeEngine(Protocol):
    """Anything that turns 80 ms int16 frames into one score per wake word."""

    @property
    def model_names(self) -> tuple[str, ...]: ...

    def process(self, frame: np.ndarray) -> np.ndarray:
        """Scores, one per model in ``model_names`` order, for one 1280-sample int16 frame."""
        ...

    def reset(self) -> None:
        """Start a new stream."""
        ...

    def zero(self) -> None:
        """Overwrite every buffer that held audio or features of it (a mute), and start anew."""
        ...


def frame_dbfs(frame: np.ndarray) -> float:
    """RMS level of an int16 frame in dBFS (-inf for digital silence)."""
    f = frame.astype(np.float32)
    ms = float(np.dot(f, f)) / max(len(f), 1)
    if ms <= 0.0:
        return -math.inf
    return 10.0 * math.log10(ms / (32768.0 * 32768.0))


class StreamingEngine:
    """The lean streaming engine. One instance per audio stream; not thread-safe."""

    def __init__(
        self,
        features: Features,
        classifiers: list[Classifier],
        idle_gate_dbfs: float | None = None,
        warmup_seed: int = 0,
        streaming_embedding: bool = True,
    ) -> None:
        if not classifiers:
            raise ModelError("no wake-word model configured; name at least one, e.g. hey_jarvis")
        self.features = features
        self.classifiers = classifiers
        self.idle_gate_dbfs = idle_gate_dbfs
        self.warmup_seed = warmup_seed
        self._n_feat = max(c.n_embeddings for c in classifiers)
        # Frames a catch-up must recompute so the oldest embedding any classifier sees is exact.
        self._catchup = (self._n_feat - 1) + math.ceil(EMB_WINDOW / EMB_STEP)
        raw_frames = self._catchup + 1 if idle_gate_dbfs is not None else 1
        self._raw = np.zeros(raw_frames * FRAME_SAMPLES + MEL_CONTEXT, dtype=np.float32)
        self._mel = np.ones((EMB_WINDOW, MEL_BINS), dtype=np.float32)
        self._feat = np.zeros((self._n_feat, EMB_DIM), dtype=np.float32)
        self._stream: StreamingEmbedding | None = None
        self._synced = False
        """Whether the streaming embedding has seen every mel row up to the current one."""
        spec = self._warmup_spec()
        windows = np.stack([spec[i:i + EMB_WINDOW]
                            for i in range(0, spec.shape[0] - EMB_WINDOW + 1, EMB_STEP)])
        n = min(self._n_feat, windows.shape[0])
        warm = self._start_streaming(windows[-n:]) if streaming_embedding else None
        if warm is None:  # onnxruntime runs the whole windows
            warm = self.features.embeddings(windows[-n:])
        self._warm_feat = np.zeros((self._n_feat, EMB_DIM), dtype=np.float32)
        self._warm_feat[-n:] = warm
        self.frames_skipped = 0
        self.reset()

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.classifiers)

    @property
    def streaming(self) -> bool:
        """Whether the embedding is streamed (else onnxruntime runs the whole window)."""
        return self._stream is not None

    def _start_streaming(self, windows: np.ndarray) -> np.ndarray | None:
        """Start the streaming embedding on the warm-up ``windows`` (consecutive, one
        embedding step apart) and return their embeddings; None, and no stream, when it
        cannot stream this model or its numbers are off (onnxruntime then runs the embedding).
        """
        from edge.wake.embedding import limit_blas_threads

        try:
            stream = self.features.streaming_embedding()
        except ModelError as exc:
            log.warning("embedding runs on onnxruntime: %s", exc)
            return None
        limit_blas_threads(1)
        emb = np.vstack([stream.prime(windows[0])[None],
                         stream.step(windows[1:, -EMB_STEP:].reshape(-1, MEL_BINS))])
        stream.reset()
        # A last check of the arithmetic: the last warm-up embedding, streamed from the
        # primed state through every step, against the embedding model run on its whole
        # window (on numpy, priming is that same whole-window computation).
        ref = self.features.embeddings(windows[-1:])
        err = float(np.abs(emb[-1:] - ref).max())
        if not err < 1e-3:
            log.warning("embedding runs on onnxruntime: the streaming embedding is off by %g", err)
            return None
        self._stream = stream
        return emb

    def _warmup_spec(self) -> np.ndarray:
        # Upstream seeds its feature buffer with embeddings of 4 s of random noise drawn
        # from numpy's global RNG; we take the same draw from a seeded RandomState (stored
        # for seed 0), so a stream is reproducible (and matches upstream seeded with
        # np.random.seed).
        return self.features.melspectrogram(warmup_noise(self.warmup_seed).astype(np.float32))

    def reset(self) -> None:
        self._raw[:] = 0.0
        self._mel[:] = 1.0
        self._feat[:] = self._warm_feat
        self._frames = 0
        self._pending = 0
        self._hangover = 0
        if self._stream is not None:
            self._stream.reset()
        self._synced = False

    def zero(self) -> None:
        """Forget all audio held in the engine's buffers (on mute and on shutdown)."""
        self.reset()

    def process(self, frame: np.ndarray) -> np.ndarray:
        check_frame(frame)
        raw = self._raw
        raw[:-FRAME_SAMPLES] = raw[FRAME_SAMPLES:]
        raw[-FRAME_SAMPLES:] = frame
        index = self._frames
        self._frames += 1
        if self.idle_gate_dbfs is not None and not self._active(frame):
            self._pending += 1
            self.frames_skipped += 1
            return np.zeros(len(self.classifiers), dtype=np.float32)
        if self._pending:
            self._catch_up(index)
        n = self._mel_step(index, 0)
        self._push_features(self._embed(n))
        if index < WARMUP_FRAMES:
            return np.zeros(len(self.classifiers), dtype=np.float32)
        return np.array([c.score(self._feat[-c.n_embeddings:]) for c in self.classifiers],
                        dtype=np.float32)

    def _active(self, frame: np.ndarray) -> bool:
        assert self.idle_gate_dbfs is not None
        if frame_dbfs(frame) >= self.idle_gate_dbfs:
            self._hangover = self._catchup
            return True
        if self._hangover > 0:
            self._hangover -= 1
            return True
        return False

    def _embed(self, rows: int) -> np.ndarray:
        """The embedding (1, 96) of the mel window, which just gained ``rows`` rows."""
        if self._stream is None:
            return self.features.embeddings(self._mel[-EMB_WINDOW:])
        if self._synced and rows == EMB_STEP:
            out: np.ndarray = self._stream.step(self._mel[-EMB_STEP:])
            return out
        self._synced = True
        return self._stream.prime(self._mel[-EMB_WINDOW:])[None]

    def _mel_step(self, index: int, frames_back: int) -> int:
        """Append the mel rows of frame ``index - frames_back``, read from the raw ring."""
        end = len(self._raw) - frames_back * FRAME_SAMPLES
        avail = min((index - frames_back + 1) * FRAME_SAMPLES, FRAME_SAMPLES + MEL_CONTEXT)
        rows = self.features.melspectrogram(self._raw[end - avail:end])
        n = rows.shape[0]
        self._mel[:-n] = self._mel[n:]
        self._mel[-n:] = rows
        return n

    def _push_features(self, emb: np.ndarray) -> None:
        n = emb.shape[0]
        if n >= self._n_feat:
            self._feat[:] = emb[-self._n_feat:]
        else:
            self._feat[:-n] = self._feat[n:]
            self._feat[-n:] = emb

    def _catch_up(self, index: int) -> None:
        """Recompute the skipped frames that the classifiers can still see, in one batch."""
        todo = min(self._pending, self._catchup)
        need_emb = min(self._pending, self._n_feat - 1)
        if todo < self._pending:
            self._synced = False  # some mel rows are lost: the stream restarts
        windows = []
        rows = []
        for back in range(todo, 0, -1):
            n = self._mel_step(index, back)
            if back > need_emb:
                self._synced = False
            elif self._stream is None:
                windows.append(self._mel[-EMB_WINDOW:].copy())
            elif self._synced and n == EMB_STEP:
                rows.append(self._mel[-EMB_STEP:].copy())
            else:  # a restart: flush what came before (nothing, as frames come in order)
                if rows:
                    self._push_features(self._stream.step(np.concatenate(rows)))
                    rows = []
                self._push_features(self._embed(n))
        if windows:
            self._push_features(self.features.embeddings(np.stack(windows)))
        if rows:
            assert self._stream is not None  # rows are gathered only for the stream
            self._push_features(self._stream.step(np.concatenate(rows)))
        self._pending = 0
