"""The torch profile's arithmetic: quantized PyTorch 2.13 (eager mode, fbgemm or qnnpack), code
for code, including its float32 requantization steps (../shared/notes/torch-quant-semantics.md,
verified by tests/test_numerics.py against torch with zero mismatches).

Owns the profile's mean, 1x1-conv requantization, quantized mul, fbgemm's int16 pair
saturation and the quantized sigmoid's table; tse.ref_model.numerics dispatches each stage here
(profile "torch"). The jitted functions are numba @njit on scalars or small arrays.
"""
from __future__ import annotations

import sys

import numpy as np
from numba import njit

from .jit_cache import flush_module
from .rounding import JIT_SOURCES as ROUNDING_SOURCES
from .rounding import clamp, fma_f32, rint_to_int


@njit(cache=True)
def mean_torch(s, recip, zp):
    """avg_pool2d on quint8 (NCHW, ceil_mode, divisor = the tile's valid elements n):
    a = f32(f32(S) * f32(1/n)); q = clamp(rint(f32(a + zp)), 0, 255), S = sum(x - zp).
    recip is f32(1/n); the zero point enters before rounding, so ties go to an even code."""
    a = np.float32(np.float32(s) * recip)
    return clamp(rint_to_int(np.float32(a + np.float32(zp))), 0, 255)


@njit(cache=True)
def requant_torch(acc, bias_i, bias_f, bias_mul, mult, zo, lo):
    """1x1 conv requantization, both engines in one formula:
      xf = f32(acc + bias_i + bias_f * bias_mul)      (one rounding: fma_f32)
      q  = clamp(rint(f32(xf * mult)) + zo, lo, 255)
    with atw = f32(f32(sx) f32(sw)) and, per engine and weight granularity,
      fbgemm per-channel: bias_i = 0, bias_f = f32(b / atw), bias_mul = 1
                          (f32(acc) + bias_f rounded once: a plain float add);
      fbgemm per-tensor:  bias_i = 0, bias_f = b, bias_mul = f32(1 / atw)
                          (its AVX2 requantizer multiplies the bias by the reciprocal and
                          the compiler fuses that with the add: one rounding);
      both fbgemm:        mult = f32(atw / f32(so));
      qnnpack:            bias_i = rint(f32(b * f32(1 / f32(sx sw)))), bias_f = 0,
                          mult = f32(f32(sx sw) * f32(1 / so)).
    lo = zo after a fused ReLU, else 0."""
    xf = fma_f32(bias_f, bias_mul, np.float32(acc + bias_i))
    v = np.float32(xf * mult)
    return clamp(rint_to_int(v) + zo, lo, 255)


@njit(cache=True)
def mul_torch(a, za, b, zb, mult, zo):
    """quantized mul: q = clamp(rint(f32(f32((a - za)(b - zb)) * mult)) + zo, 0, 255),
    mult = f32(f32(f32(sa) f32(sb)) * f32(1 / so))."""
    v = np.float32(np.float32((a - za) * (b - zb)) * mult)
    return clamp(rint_to_int(v) + zo, 0, 255)


@njit(cache=True)
def pair_saturation_excess(x, w_row):
    """What int16 pair saturation adds to an fc accumulator: sum over k of
    sat16(p_k) - p_k, p_k = x[2k] w[2k] + x[2k+1] w[2k+1] on the raw codes (fbgemm's
    vpmaddubsw; QuantParams.pair_saturation). 0 while every code is at most 127."""
    excess = np.int64(0)
    n = x.shape[0]
    for k in range(0, n, 2):
        p = np.int64(x[k]) * w_row[k]
        if k + 1 < n:
            p += np.int64(x[k + 1]) * w_row[k + 1]
        if p > 32767:
            excess += 32767 - p
        elif p < -32768:
            excess += -32768 - p
    return excess


def sigmoid_table(scale: float, zero_point: int) -> np.ndarray:
    """Quantized sigmoid on quint8 as a table over the input code q (output qparams 1/256, 0):
    x = f32(f32(s) * (q - zp)); e = f32(exp(-x)); table[q] = clamp(rint(f32(1 / f32(1 + e))
    * 256), 0, 255). exp is the correctly rounded float32 exponential (glibc's expf; Sleef's
    within 1 ulp agrees on every table tested against torch)."""
    q = np.arange(256, dtype=np.int64)
    x = (np.float32(scale) * (q - zero_point).astype(np.float32)).astype(np.float32)
    with np.errstate(over="ignore"):
        e = np.exp(-x.astype(np.float64)).astype(np.float32)
        r = (np.float32(1.0) / (np.float32(1.0) + e).astype(np.float32)).astype(np.float32)
    v = np.rint((r * np.float32(256.0)).astype(np.float32))
    return np.clip(v, 0, 255).astype(np.uint8)


JIT_SOURCES = (*ROUNDING_SOURCES, sys.modules[__name__])
"""The modules this module's machine code is compiled from (tse.ref_model.jit_cache)."""
flush_module(globals(), JIT_SOURCES)
