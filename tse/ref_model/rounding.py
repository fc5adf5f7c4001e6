"""Rounding, clamping and exact wide arithmetic: the primitives both numerics profiles are
written in (tse.ref_model.torch_numerics, tse.ref_model.hw_numerics) and the one definition of
half-even rounding to N bits (round_half_even_shift) the parameter derivations share.

Naming: f32(v) rounds to float32 (nearest, ties to even); rint rounds a float to the nearest
integer, ties to even; the rounding codes name a requantizer's or the mean's tie rule.
Everything jitted is a numba @njit function on scalars, so the whole-frame kernels and the
streaming model call the very same code; from Python they run as ordinary (slow) functions.
"""
from __future__ import annotations

import math
import sys

import numpy as np
from numba import njit

HALF_UP, HALF_EVEN, F32 = 0, 1, 2
"""Rounding codes: half_up rounds ties toward +infinity, half_even to the even integer; F32
(the mean only) rounds like PyTorch's float32 mean (hw_numerics.mean_hw_f32)."""
ROUNDING_CODES = {"half_up": HALF_UP, "half_even": HALF_EVEN, "f32": F32}

_BIG = 1 << 62
"""round_shift_mul's answer (with the sign) for a value far outside any 8-bit range."""


def round_half_even_shift(v, drop):
    """round(v / 2**drop) of an integer v, ties to the even integer (drop >= 1): the dropped
    bits above half round up, exactly half rounds to the even quotient. Exact for Python
    integers of any size; round_half_even_shift_jit is the same code compiled for int64."""
    q = v >> drop
    rem = v - (q << drop)
    half = 1 << (drop - 1)
    if rem > half or (rem == half and (q & 1) == 1):
        q += 1
    return q


round_half_even_shift_jit = njit(cache=True)(round_half_even_shift)


@njit(cache=True)
def f32(v):
    """Round to float32, nearest, ties to even (a float32 input is returned unchanged)."""
    return np.float32(v)


@njit(cache=True)
def rint_to_int(v):
    """Round a float to the nearest integer, ties to even (C's lrintf / nearbyint).
    Values far outside the 8-bit range are clipped first; every caller clamps to 8 bits."""
    if v > 1e9:
        v = 1e9
    elif v < -1e9:
        v = -1e9
    return np.int64(np.rint(v))


@njit(cache=True)
def fma_f32(a, b, c):
    """f32(a * b + c) rounded once, as a fused multiply-add of float32 values does.

    a * b is exact in float64; the sum is rounded to float64 "to odd" (TwoSum gives its
    exact error; an inexact sum with an even last bit moves one ulp toward the error), and
    a round-to-odd result with 53 >= 24 + 2 bits rounds to float32 exactly as the exact
    value would."""
    p = np.float64(a) * np.float64(b)
    q = np.float64(c)
    s = p + q
    v = s - p
    err = (p - (s - v)) + (q - v)
    if err != 0.0:
        m, e = math.frexp(s)
        if np.int64(math.ldexp(m, 53)) & 1 == 0:
            s = np.nextafter(s, np.inf if err > 0.0 else -np.inf)
    return np.float32(s)


@njit(cache=True)
def clamp(v, lo, hi):
    """Clamp an integer to [lo, hi]."""
    if v < lo:
        return lo
    if v > hi:
        return hi
    return v


@njit(cache=True)
def saturating_add(acc, v, lo, hi):
    """acc + v clamped to [lo, hi]; returns (sum, saturated)."""
    s = acc + v
    if s > hi:
        return hi, True
    if s < lo:
        return lo, True
    return s, False


@njit(cache=True)
def _wide_mul_add(t, m, add):
    """t * m + add exactly, as (hi, lo) with value hi * 2**31 + lo and 0 <= lo < 2**31.
    Needs |t| < 2**62, 0 <= m < 2**31, 0 <= add < 2**62 (the value may exceed 64 bits)."""
    t0 = t & 0x7FFFFFFF           # low 31 bits of t (two's complement), 0 <= t0 < 2**31
    t1 = t >> 31                  # floor(t / 2**31), |t1| <= 2**31
    lo = t0 * m + add             # < 2**62 + 2**62
    hi = t1 * m + (lo >> 31)
    return hi, lo & 0x7FFFFFFF


@njit(cache=True)
def floor_shift_mul(t, m, add, shift):
    """(q, r) with q = floor((t * m + add) / 2**shift) and r = (t * m + add) - q 2**shift,
    0 <= r < 2**shift, exact. Needs 0 <= shift <= 61 and the limits of _wide_mul_add."""
    hi, lo = _wide_mul_add(t, m, add)
    if shift <= 31:
        k = 31 - shift
        if hi >= (1 << (31 + shift)) or hi < -(1 << (31 + shift)):
            return (_BIG if hi > 0 else -_BIG), 0      # far outside any 8-bit range
        return (hi << k) + (lo >> shift), lo & ((1 << shift) - 1)
    k = shift - 31
    q = hi >> k
    return q, ((hi - (q << k)) << 31) + lo


@njit(cache=True)
def round_shift_mul(t, m, add, shift, rounding):
    """round((t * m + add) / 2**shift) exactly, ties half_up (toward +infinity) or half_even.
    The requantizer of the hw profile. Needs |t| < 2**62, 0 <= m < 2**31, 0 <= add < 2**62
    and shift >= 0; the product may be up to 93 bits wide."""
    hi, lo = _wide_mul_add(t, m, add)
    if shift == 0:
        if hi >= (1 << 31) or hi < -(1 << 31):
            return _BIG if hi > 0 else -_BIG
        return (hi << 31) + lo
    if shift < 31:
        if hi >= (1 << (31 + shift)) or hi < -(1 << (31 + shift)):
            return _BIG if hi > 0 else -_BIG
        q = (hi << (31 - shift)) + (lo >> shift)
        rem = lo & ((1 << shift) - 1)
        half = 1 << (shift - 1)
        above = rem > half
        tie = rem == half
    else:
        k = shift - 31
        if k >= 63:                   # |value| < 2**93 <= 2**(shift-1): rounds to 0
            return 0
        q = hi >> k
        rem_hi = hi - (q << k)        # remainder = rem_hi * 2**31 + lo, 0 <= rem_hi < 2**k
        if k == 0:                    # half = 2**30: compare lo alone
            above = lo > (1 << 30)
            tie = lo == (1 << 30)
        else:
            half_hi = 1 << (k - 1)    # half = half_hi * 2**31
            above = rem_hi > half_hi or (rem_hi == half_hi and lo > 0)
            tie = rem_hi == half_hi and lo == 0
    if above or (tie and (rounding == HALF_UP or (q & 1) == 1)):
        q += 1
    return q


@njit(cache=True)
def round_significant(m, e, bits):
    """m * 2**e rounded to `bits` significant bits, ties to even, as (m', e') with
    value m' * 2**e' and |m'| <= 2**bits (what float32 rounding does with bits = 24)."""
    if m == 0:
        return np.int64(0), e
    a = -m if m < 0 else m
    length = 0
    t = a
    while t > 0:                      # leading-one position (a priority encoder in RTL)
        t >>= 1
        length += 1
    if length <= bits:
        return m, e
    drop = length - bits
    q = round_half_even_shift_jit(a, drop)
    return (-q if m < 0 else q), e + drop


def f32_of(v) -> np.float32:
    """f32(v) in Python: numpy's float64 -> float32 conversion rounds to nearest, ties even."""
    return np.float32(v)


JIT_SOURCES = (sys.modules[__name__],)
"""The modules this module's machine code is compiled from (tse.ref_model.jit_cache)."""
