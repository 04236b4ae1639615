"""The int8 kernels of a microWakeWord streaming model, in numpy, as TFLite computes them.

Integer arithmetic follows TFLite's reference kernels: accumulate ``(x - x_zp) * w`` in
int32 with the int32 bias, then requantize with the fixed-point multiplier and shift of
``input_scale * weight_scale / output_scale`` (``MultiplyByQuantizedMultiplier``: a
rounding doubling high multiply, then a rounding right shift), add the output zero point
and clamp to the fused activation's range. Accumulating in float64 is exact here (sums
of int8 products stay far below 2**53) and lets BLAS do the work.

>>> Requantizer(np.array([0.25]), 0, -128, 127)(np.array([[10, -10]])).tolist()
[[3, -3]]
"""

from __future__ import annotations

import numpy as np


def quantize_multiplier(real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TFLite's ``QuantizeMultiplier``: each ``real`` as a Q31 fraction and a power-of-two shift."""
    frac, shift = np.frexp(real.astype(np.float64))
    q = np.round(frac * (1 << 31)).astype(np.int64)
    over = q == (1 << 31)
    q[over] //= 2
    shift = shift.astype(np.int64) + over
    tiny = shift < -31
    q[tiny] = 0
    shift[tiny] = 0
    return q, shift


class Requantizer:
    """``MultiplyByQuantizedMultiplier(acc) + zero_point``, clamped to [lo, hi], for int64
    accumulators; one multiplier and shift per output channel (the last axis).

    TFLite's rounding doubling high multiply, ``(a*b + nudge) / 2**31`` truncated toward
    zero with a nudge of ``2**30`` (``1 - 2**30`` for negative products), is exactly
    ``(a*b + 2**30) >> 31`` with an arithmetic (flooring) shift, so the sign tests drop out.
    The rounding right shift that follows rounds half away from zero; with ``upward`` it
    rounds half toward +inf, as TFLite's optimized depthwise convolution does
    (``DepthwiseConvOutputRounding::kUpward``, the one place it differs from the reference
    kernel, and pymicro-wakeword runs the optimized kernels). Two floor divisions in a row
    are one, so the upward case is a single ``(a*b + c) >> s``, zero point included.
    """

    def __init__(self, real: np.ndarray, zero_point: int, lo: int, hi: int,
                 upward: bool = False) -> None:
        qm, shift = quantize_multiplier(np.atleast_1d(real))
        one = np.int64(1)
        self.qm = qm << np.maximum(shift, 0)  # the left shift, folded into the multiplier
        self.right = np.maximum(-shift, 0)
        self.half = (one << self.right) >> 1
        """2**(right-1), or 0 for no right shift."""
        self.rounds = self.right > 0
        total = 31 + self.right
        self.add = (one << 30) + (self.half << 31) + (np.int64(zero_point) << total)
        self.total = total
        self.upward = upward
        self.zero_point, self.lo, self.hi = zero_point, lo, hi

    def __call__(self, acc: np.ndarray) -> np.ndarray:
        if self.upward:
            out = (acc * self.qm + self.add) >> self.total
        else:
            high = (acc * self.qm + (1 << 30)) >> 31
            high += self.half
            high -= (high < self.half) & self.rounds  # it was negative: ties round down
            out = high >> self.right
            out += self.zero_point
        np.maximum(out, self.lo, out=out)
        return np.minimum(out, self.hi, out=out)  # np.clip costs three times as much here


def activation_range(fused: int, scale: float, zero_point: int, qmin: int, qmax: int
                     ) -> tuple[int, int]:
    """The clamp of a fused activation (NONE 0, RELU 1, RELU_N1_TO_1 2, RELU6 3) on int8."""
    def q(v: float) -> int:
        return zero_point + int(round(v / scale))

    if fused == 0:
        return qmin, qmax
    if fused == 1:
        return max(qmin, q(0.0)), qmax
    if fused == 2:
        return max(qmin, q(-1.0)), min(qmax, q(1.0))
    if fused == 3:
        return max(qmin, q(0.0)), min(qmax, q(6.0))
    raise ValueError(f"unsupported fused activation {fused}")


def patch_index(height: int, width: int, kh: int, kw: int, stride: tuple[int, int],
                dilation: tuple[int, int]) -> np.ndarray:
    """For a VALID window over an (already padded) H x W grid: the flat positions (out, taps)."""
    sh, sw = stride
    dh, dw = dilation
    oh = (height - dh * (kh - 1) - 1) // sh + 1
    ow = (width - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"a {kh}x{kw} kernel does not fit a {height}x{width} input")
    rows = (np.arange(oh)[:, None, None, None] * sh + np.arange(kh)[None, None, :, None] * dh)
    cols = (np.arange(ow)[None, :, None, None] * sw + np.arange(kw)[None, None, None, :] * dw)
    return (rows * width + cols).reshape(oh * ow, kh * kw)


def same_padding(size: int, k: int, stride: int, dilation: int) -> tuple[int, int]:
    """TFLite's SAME padding (before, after) along one axis."""
    eff = (k - 1) * dilation + 1
    out = (size + stride - 1) // stride
    total = max((out - 1) * stride + eff - size, 0)
    return total // 2, total - total // 2


def logistic_table(in_scale: float, in_zp: int, out_scale: float, out_zp: int
                   ) -> np.ndarray:
    """TFLite's int8 LOGISTIC lookup table, indexed by ``x + 128``."""
    x = np.arange(-128, 128, dtype=np.float32)
    deq = np.float32(in_scale) * (x - np.float32(in_zp))
    with np.errstate(over="ignore"):  # exp overflows far out on the tail: y is 0 there
        y = (1.0 / (1.0 + np.exp(-deq.astype(np.float64)))).astype(np.float32)
    scaled = y * np.float32(1.0 / out_scale)
    q = np.where(scaled >= 0, np.floor(scaled + 0.5), np.ceil(scaled - 0.5)) + out_zp
    return np.clip(q, -128, 127).astype(np.int8)
