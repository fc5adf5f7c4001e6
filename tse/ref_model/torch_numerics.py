"""The torch profile's arithmetic: quantized PyTorch 2.13 (eager mode, fbgemm or qnnpack), code
for code, including its float32 requantization steps (../shared/notes/torch-quant-semantics.md,
verified by tests/test_numerics.py against torch with zero mismatches).

Owns the profile's mean, 1x1-conv requantization, quantized mul, fbgemm's int16 pair
saturation and the tables of the activations of an 8-bit code (the quantized sigmoid and
hardsigmoid, and the float SiLU or hard sigmoid between a DeQuantStub and a QuantStub); tse.ref_model.numerics dispatches each stage here
(profile "torch"). The jitted functions are numba @njit on scalars or small arrays.
"""
from __future__ import annotations

import sys

import numpy as np
from numba import njit

from .config import HARDSIGMOID_OFFSET, HARDSIGMOID_SLOPE
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


def dequantized(scale: float, zero_point: int) -> np.ndarray:
    """Every code's float32 value, as dequantize computes it: f32(f32(s) * (q - zp))."""
    q = np.arange(256, dtype=np.int64)
    return (np.float32(scale) * (q - zero_point).astype(np.float32)).astype(np.float32)


def quantized(y: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """quantize_per_tensor (QuantStub) of float32 values: inv = f32(1 / f32(s)),
    q = clamp(rint(f32(y * inv + zp)), 0, 255) with the multiply-add rounded once (float64
    holds y * inv + zp exactly here: two float32 factors and an integer)."""
    inv = np.float32(np.float32(1.0) / np.float32(scale))
    v = (y.astype(np.float64) * np.float64(inv) + zero_point).astype(np.float32)
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def hardsigmoid_table(scale: float, zero_point: int, slope: float, offset: float,
                      engine: str = "fbgemm") -> np.ndarray:
    """The gate's table for a hard sigmoid, output qparams (1/256, 0):
    slope 1/6, offset 0.5 (nn.Hardsigmoid's quantized kernel): y = f32(min(max(f32(x + 3), 0),
    6) / 6) with x the code's value as the engine's kernel computes it: fbgemm (aten's
    vectorized kernel) x = fma(f32(s), q, f32(f32(s) * -zp)), rounded once; qnnpack (its own
    table) x = f32(f32(s) * (q - zp)), as dequantize; any other slope and offset (float
    HardSigmoid between the stubs, x dequantized): y = min(max(f32(f32(x * f32(slope)) +
    f32(offset)), 0), 1). Both quantized (quantized(): rint(y * 256), clamped). Measured:
    the other x misses 2 codes in 768,000 on either engine."""
    x = dequantized(scale, zero_point)
    if (slope, offset) == (HARDSIGMOID_SLOPE, HARDSIGMOID_OFFSET):
        if engine == "fbgemm":
            s = np.float32(scale)
            premul = np.float32(s * np.float32(-zero_point))
            q = np.arange(256, dtype=np.float64)
            x = (q * np.float64(s) + np.float64(premul)).astype(np.float32)   # exact, then f32
        y = np.minimum(np.maximum((x + np.float32(3)).astype(np.float32), np.float32(0)),
                       np.float32(6))
        y = (y / np.float32(6)).astype(np.float32)
    else:
        y = ((x * np.float32(slope)).astype(np.float32) + np.float32(offset)).astype(np.float32)
        y = np.minimum(np.maximum(y, np.float32(0)), np.float32(1))
    return quantized(y, 1.0 / 256, 0)


def silu_table(scale: float, zero_point: int, out_scale: float, out_zero_point: int
               ) -> np.ndarray:
    """SiLU between a DeQuantStub and a QuantStub as a table over fc1's code q (qparams
    scale, zero_point) to the hidden code (out_scale, out_zero_point):
    x = f32(f32(s) * (q - zp)), e = f32(exp(-x)), y = f32(x / f32(1 + e)), quantized()."""
    x = dequantized(scale, zero_point)
    with np.errstate(over="ignore"):
        e = np.exp(-x.astype(np.float64)).astype(np.float32)
        y = (x / (np.float32(1.0) + e).astype(np.float32)).astype(np.float32)
    return quantized(y, out_scale, out_zero_point)


def gate_lut(gate: str, scale: float, zero_point: int, slope: float, offset: float,
             engine: str) -> np.ndarray:
    """The gate's table over the excite code (qparams scale, zero_point): sigmoid_table or
    hardsigmoid_table."""
    if gate == "sigmoid":
        return sigmoid_table(scale, zero_point)
    return hardsigmoid_table(scale, zero_point, slope, offset, engine)


JIT_SOURCES = (*ROUNDING_SOURCES, sys.modules[__name__])
"""The modules this module's machine code is compiled from (tse.ref_model.jit_cache)."""
flush_module(globals(), JIT_SOURCES)
