"""The microWakeWord engine: streaming int8 models behind the same interface as the
openWakeWord engine (:class:`edge.wake.engine.WakeEngine`).

Per 80 ms frame, the front end (:mod:`edge.wake.micro.frontend`) gives 8 feature rows of
10 ms; each model consumes them ``stride`` (3) at a time, quantizes them as
pymicro-wakeword does, runs the steps of its graph (:mod:`edge.wake.micro.graph`; at
load fused into a few numpy calls a pass by :mod:`edge.wake.micro.fused`, checked to give
the same outputs and state) and averages its last ``sliding_window_size`` probabilities:
that mean is what the model's authors threshold (``probability_cutoff``). A frame's score
is the highest mean of the steps that ended in it (2 or 3 of them), so a step
pymicro-wakeword would detect on is a frame our policy sees at the same score.

Quiet rooms: with ``idle_gate_dbfs`` set, the front end still runs every frame (its noise
estimate and gain adapt, and it is cheap C), but the graphs skip steps whose whole
receptive field was quiet. When the level rises they run the skipped steps they can
still see, so from then on every probability is exactly the ungated one: the state of a
streaming convolution holds only its last few inputs, so ``state_steps`` steps rebuild it.

>>> engine = MicroEngine([store.micro(*store.resolve("okay_nabu"))])  # doctest: +SKIP
>>> engine.process(frame)  # doctest: +SKIP
array([0.], dtype=float32)
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence

import numpy as np

from edge.audio.frames import FRAME_SAMPLES, check_frame
from edge.errors import ModelError
from edge.wake.engine import frame_dbfs
from edge.wake.manifest import MicroSpec
from edge.wake.micro.frontend import CHANNELS, CHUNK, Frontend
from edge.wake.micro.fused import FusedGraph, NotFusable, fast_clip
from edge.wake.micro.graph import MicroGraph, UnsupportedGraph
from edge.wake.micro.tflite import FlatbufferError, read_tflite

log = logging.getLogger(__name__)
_rint = np.rint
_BAD_GRAPH = (ValueError, IndexError, TypeError, KeyError, AssertionError, ArithmeticError)
"""What numpy raises on a graph whose shapes or parameters do not fit together."""
CHECK_STEPS = 24
"""Steps of :func:`check_input` a model's load-time check runs."""
ROWS_PER_FRAME = FRAME_SAMPLES // CHUNK
TIE_NUDGE = 1e-6
"""Subtracted from each sliding mean: microWakeWord detects when the mean is *above* the
cutoff, our policy when a score is at or above the threshold, and the means are multiples
of 1/(256 * window), so a mean exactly at a cutoff (0.85 = 1088/1280) must not count."""


def check_input(stride: int) -> np.ndarray:
    """The fixed input (steps, 1, stride, 40) int8 whose outputs the manifest records: a
    slow sweep over the channels, like a rising voice over background, from a fixed seed."""
    rng = np.random.RandomState(20240717)
    t = np.arange(CHECK_STEPS * stride)[:, None]
    ch = np.arange(CHANNELS)[None, :]
    level = 60.0 * np.exp(-((ch - (t * 0.6) % CHANNELS) ** 2) / 40.0) - 100.0
    q = np.clip(np.round(level + rng.normal(0, 12, level.shape)), -128, 127).astype(np.int8)
    return q.reshape(CHECK_STEPS, 1, stride, CHANNELS)


def run_check(graph: MicroGraph | FusedGraph) -> tuple[tuple[int, ...], str]:
    """The model's raw outputs over :func:`check_input` from its initial state, and the
    sha256 of its state after it (each variable in name order, as int8 bytes)."""
    graph.reset()
    out = tuple(int(graph.invoke(x).reshape(-1)[0]) for x in check_input(graph.input.shape[1]))
    h = hashlib.sha256()
    for _, value in sorted(graph.state().items()):
        h.update(np.ascontiguousarray(value).astype(np.int8).tobytes())
    graph.reset()
    return out, h.hexdigest()


def fuse(graph: MicroGraph, expected: tuple[tuple[int, ...], str]) -> MicroGraph | FusedGraph:
    """The fused form of ``graph`` (:mod:`edge.wake.micro.fused`) where it has one that
    gives ``expected`` (the generic interpreter's :func:`run_check`), else ``graph``."""
    try:
        fused = FusedGraph(graph)
        agrees = run_check(fused) == expected
        fused.invoke_steps(check_input(graph.input.shape[1])[:3])
        fused.reset()
    except (NotFusable, *_BAD_GRAPH) as exc:
        log.debug("microWakeWord graph runs unfused: %s", exc)
        return graph
    if not agrees:
        log.warning("the fused microWakeWord graph differs from the generic one; "
                    "running the generic one")
        return graph
    return fused


def check_graph(spec: MicroSpec) -> MicroGraph | FusedGraph:
    """Load the model's graph and check it: its input and output shapes, and (for a manifest
    model) its outputs against TensorFlow Lite's. One line on any failure."""
    try:
        graph = MicroGraph(read_tflite(spec.tflite))
    except OSError as exc:
        raise ModelError(f"cannot read microWakeWord model {spec.tflite}: {exc.strerror}") from None
    except (FlatbufferError, UnsupportedGraph) as exc:
        raise ModelError(f"microWakeWord model {spec.name} ({spec.tflite}) cannot be run: "
                         f"{exc}; give a streaming .tflite made by microWakeWord") from None
    except _BAD_GRAPH as exc:  # a damaged file that still parses: inconsistent shapes
        raise ModelError(f"microWakeWord model {spec.name} ({spec.tflite}) is inconsistent "
                         f"({type(exc).__name__}: {str(exc)[:80]}); give a streaming .tflite "
                         "made by microWakeWord") from None
    shape = graph.input.shape
    if len(shape) != 3 or shape[0] != 1 or shape[2] != CHANNELS or not 1 <= shape[1] <= 8:
        raise ModelError(f"microWakeWord model {spec.name} ({spec.tflite}) has input shape "
                         f"{list(shape)}; expected [1, stride, {CHANNELS}]")
    if int(np.prod(graph.output.shape)) != 1:
        raise ModelError(f"microWakeWord model {spec.name} ({spec.tflite}) has output shape "
                         f"{list(graph.output.shape)}; expected [1, 1]")
    try:  # a trial, one step at a time and several at once: a bad graph fails here, not live
        got, state = run_check(graph)
        graph.invoke_steps(check_input(shape[1])[:3])
        graph.reset()
    except _BAD_GRAPH as exc:
        raise ModelError(f"microWakeWord model {spec.name} ({spec.tflite}) fails on a trial "
                         f"input ({type(exc).__name__}: {str(exc)[:80]}); give a streaming "
                         ".tflite made by microWakeWord") from None
    if (spec.check or spec.check_state) and (got != spec.check or state != spec.check_state):
        raise ModelError(f"microWakeWord model {spec.name}: the numpy interpreter does not "
                         "reproduce the manifest's check outputs on this machine (the model "
                         "file itself verified); report this with `edge doctor` output")
    return fuse(graph, (got, state))


class MicroModel:
    """One micro model's stream: its graph, pending feature rows and recent probabilities."""

    def __init__(self, spec: MicroSpec) -> None:
        self.spec = spec
        self.graph = check_graph(spec)
        self.stride = self.graph.input.shape[1]
        self.window = spec.sliding_window_size
        g = self.graph
        self._in_scale, self._in_zp = g.input_scale, g.input_zero_point
        self._out_scale, self._out_zp = g.output_scale, g.output_zero_point
        self.state_steps = sum(int(v.shape[1]) for v in g.state().values())
        """Steps that rebuild the whole streaming state (a bound: the sum of state lengths)."""
        self._probs: list[float] = []
        self.last = 0.0
        """The probability of the latest step alone."""

    def reset(self) -> None:
        self.graph.reset()
        self._probs = []

    def step(self, rows: np.ndarray) -> float:
        """One step over ``stride`` rows (float features); the sliding mean, 0 until full."""
        return self.steps(rows)[0]

    def steps(self, rows: np.ndarray) -> list[float]:
        """Consecutive steps over ``stride`` rows each, in one pass of the graph: the sliding
        mean after each (0 until the window is full)."""
        q = rows / self._in_scale  # as pymicro-wakeword quantizes (np.round is rint),
        q += self._in_zp
        _rint(q, out=q)
        fast_clip(q, -128, 127, out=q)  # but clipped where its cast to int8 would wrap around
        raw = self.graph.invoke_steps(q)  # integers in float64: the graph takes them as int8
        out = []
        probs, window, zp, scale = self._probs, self.window, self._out_zp, self._out_scale
        for value in raw.tolist():
            p = (value - zp) * scale
            probs.append(p)
            if len(probs) > window:
                del probs[0]
            out.append(0.0 if len(probs) < window else max(sum(probs) / window - TIE_NUDGE, 0.0))
        if out:
            self.last = probs[-1]
        return out


class MicroEngine:
    """Scores of microWakeWord models, one per model, per 80 ms int16 frame. One instance per
    stream; not thread-safe."""

    def __init__(self, specs: Sequence[MicroSpec], idle_gate_dbfs: float | None = None) -> None:
        if not specs:
            raise ModelError("no microWakeWord model to run")
        self.models = [MicroModel(s) for s in specs]
        self.idle_gate_dbfs = idle_gate_dbfs
        self._front = Frontend()
        steps = max(m.state_steps + m.window + 1 for m in self.models)
        self._keep_rows = steps * max(m.stride for m in self.models)
        self._hangover_frames = math.ceil(self._keep_rows / ROWS_PER_FRAME) + 1
        self.frames_skipped = 0
        self.reset()

    @property
    def model_names(self) -> tuple[str, ...]:
        return tuple(m.spec.name for m in self.models)

    @property
    def cutoffs(self) -> dict[str, float]:
        """Each model's own default threshold (its JSON's probability_cutoff)."""
        return {m.spec.name: m.spec.probability_cutoff for m in self.models}

    def reset(self) -> None:
        self._front.reset()
        for m in self.models:
            m.reset()
        self._rows = np.zeros((0, CHANNELS), dtype=np.float64)
        self._base = 0
        """Stream index of ``_rows[0]``: rows before it were consumed, or dropped while gated."""
        self._next = [0] * len(self.models)
        """Stream index of the next row each model consumes (a multiple of its stride)."""
        self._hangover = 0

    def zero(self) -> None:
        """Overwrite every buffer that held features of the audio (the pending rows and each
        model's streaming state), then start anew (on mute and on shutdown)."""
        if self._rows.flags.writeable:
            self._rows.fill(0.0)
        for m in self.models:
            m.graph.wipe()
        self.reset()

    def process(self, frame: np.ndarray) -> np.ndarray:
        check_frame(frame)
        rows = self._front.rows(frame)
        start = self._base + len(self._rows)
        end = start + len(rows)
        self._rows = np.concatenate((self._rows, rows)) if len(self._rows) else rows
        scores = np.zeros(len(self.models), dtype=np.float32)
        if self.idle_gate_dbfs is not None and not self._active(frame):
            self.frames_skipped += 1
            self._drop(len(self._rows) - self._keep_rows)
            return scores
        for k, m in enumerate(self.models):
            at = self._next[k]
            if at < self._base:  # rows were dropped while the room was quiet: rebuild
                at = -(-self._base // m.stride) * m.stride
                m.reset()
            n = (end - at) // m.stride
            if n:
                i = at - self._base
                means = m.steps(self._rows[i:i + n * m.stride])
                # the steps that ended in this frame (a catch-up also runs older ones):
                # step j ends at at + (j + 1) * stride, after ``start`` from j = first on
                first = max(0, (start - at) // m.stride)
                scores[k] = max(means[first:], default=0.0)
                at += n * m.stride
            self._next[k] = at
        self._drop(min(self._next) - self._base)
        return scores

    def _active(self, frame: np.ndarray) -> bool:
        assert self.idle_gate_dbfs is not None
        if frame_dbfs(frame) >= self.idle_gate_dbfs:
            self._hangover = self._hangover_frames
            return True
        if self._hangover > 0:
            self._hangover -= 1
            return True
        return False

    def _drop(self, n: int) -> None:
        if n > 0:
            self._rows = self._rows[n:]
            self._base += n
