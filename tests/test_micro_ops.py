"""The micro interpreter's integer arithmetic against TFLite's, written out as TFLite does it,
and its flatbuffer reader against bad input."""

from __future__ import annotations

import numpy as np
import pytest

from edge.wake.micro.graph import MicroGraph
from edge.wake.micro.ops import Requantizer, quantize_multiplier
from edge.wake.micro.tflite import FlatbufferError, parse_tflite, read_tflite


def tflite_requantize(acc: np.ndarray, real: np.ndarray, zp: int, upward: bool) -> np.ndarray:
    """TFLite's MultiplyByQuantizedMultiplier, step by step: SaturatingRoundingDoublingHighMul
    (nudge, then division truncating toward zero), then RoundingDivideByPOT (half away from
    zero), or the optimized depthwise kernel's rounding half up."""
    qm, shift = quantize_multiplier(real)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    ab = (acc << left) * qm
    s = ab + np.where(ab >= 0, 1 << 30, 1 - (1 << 30))
    high = np.where(s >= 0, s >> 31, -((-s) >> 31))
    if upward:
        out = (high + ((np.int64(1) << right) >> 1)) >> right
    else:
        mask = (np.int64(1) << right) - 1
        out = (high >> right) + ((high & mask) > (mask >> 1) + (high < 0))
    return np.clip(out + zp, -128, 127)


@pytest.mark.parametrize("upward", [False, True])
def test_the_requantizer_is_tflites_arithmetic(upward):
    rng = np.random.RandomState(0)
    for _ in range(300):
        real = rng.uniform(1e-5, 2.0, 16)
        acc = rng.randint(-2 ** 23, 2 ** 23, (8, 16)).astype(np.int64)
        zp = int(rng.randint(-128, 128))
        assert np.array_equal(Requantizer(real, zp, -128, 127, upward)(acc.copy()),
                              tflite_requantize(acc, real, zp, upward))
    ties = np.arange(-5000, 5000, dtype=np.int64)[:, None]  # every half-way case of these
    for real in (0.5, 0.25, 0.125, 1.0, 1.5, 3.0):
        for zp in (-128, 0, 5):
            assert np.array_equal(Requantizer(np.array([real]), zp, -128, 127, upward)(ties.copy()),
                                  tflite_requantize(ties, np.array([real]), zp, upward))


def test_several_steps_at_once_are_the_steps_one_by_one(store):
    for name in ("okay_nabu", "hey_mycroft"):
        graph = MicroGraph(read_tflite(store.directory / f"{name}.tflite"))
        assert graph.batchable
        x = np.random.RandomState(1).randint(-128, 60, (60 * 3, 40)).astype(np.int8)
        one = [graph.invoke(x[i * 3:(i + 1) * 3]).reshape(-1)[0] for i in range(60)]
        state = graph.state()
        graph.reset()
        many = np.concatenate([graph.invoke_steps(x[:21]), graph.invoke_steps(x[21:24]),
                               graph.invoke_steps(x[24:])])
        assert many.tolist() == one
        assert all(np.array_equal(state[k], v) for k, v in graph.state().items())


def test_a_truncated_or_foreign_file_is_refused():
    with pytest.raises(FlatbufferError, match="not a TensorFlow Lite file"):
        parse_tflite(b"\x08\x00\x00\x00ONNX" + bytes(100))
    with pytest.raises(FlatbufferError):
        parse_tflite(b"\x40\x00\x00\x00TFL3" + bytes(8))
