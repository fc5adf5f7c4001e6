"""The hw profile's arithmetic: integer only, as the RTL computes it (multiply, add, shift,
table lookup, saturate), every width a field of tse.ref_model.hw_profile.HwProfile.

Owns the profile's exact and float32-like means, the requantizer, the final mul, the gate's
table (sigmoid or hard sigmoid; the hw datapath holds the torch profile's table in a ROM, as
it holds SiLU's) with hw.gate_bits kept, and how a real multiplier becomes an integer multiplier and
shift (quantize_multiplier); tse.ref_model.numerics dispatches each stage here (profile "hw").
The jitted functions are numba @njit on scalars.
"""
from __future__ import annotations

import sys

import numpy as np
from numba import njit

from .errors import ConfigError
from .hw_profile import GATE_BITS
from .jit_cache import flush_module
from .rounding import JIT_SOURCES as ROUNDING_SOURCES
from .rounding import (HALF_EVEN, HALF_UP, clamp, floor_shift_mul, round_half_even_shift,
                       round_shift_mul, round_significant)


@njit(cache=True)
def mean_hw(s, recip, shift, zp, rounding):
    """The exact rounded mean: q = clamp(round(S / n + zp), 0, 255), ties by `rounding`.

    t = S * R + zp * 2**shift with R = round(2**shift / n) (hw_profile.reciprocal);
    q0 = t >> shift and d = 2 (t mod 2**shift) - 2**shift (d / 2**(shift+1) is how far the
    fraction lies above 1/2). hw_profile.reciprocal_exact, checked by the configuration,
    guarantees |2d| < R exactly when S / n + zp is a tie (k + 1/2) and that the reciprocal's
    error never moves any other value across the rounding boundary, so
      half_up:   q = q0 + (2d > -R)
      half_even: q = q0 + (2d >= R or (|2d| < R and q0 odd))
    (in hardware: one more comparator on the low bits of the product)."""
    q0, rem = floor_shift_mul(s, recip, zp << shift, shift)
    d2 = 4 * rem - (2 << shift)
    if rounding == HALF_UP:
        up = d2 > -recip
    else:
        up = d2 >= recip or (-recip < d2 and (q0 & 1) == 1)
    return clamp(q0 + (1 if up else 0), 0, 255)


@njit(cache=True)
def mean_hw_f32(s, recip, shift, zp):
    """PyTorch's float32 mean (mean_torch) in integer steps: R / 2**shift is f32(1/n);
      S' = round24(S)                          f32(S)
      a  = round24(S' * R * 2**-shift)         f32(f32(S) * f32(1/n))
      b  = round24(a + zp)                     f32(a + zp)
      q  = clamp(round_half_even(b), 0, 255)   rint
    where round24 keeps 24 significant bits, ties to even (round_significant): a leading-one
    detector, a shifter and an incrementer. Equal to mean_torch for every sum."""
    sm, se = round_significant(s, np.int64(0), 24)
    am, ae = round_significant(sm * recip, se - shift, 24)
    if ae >= 0:
        tm, te = (am << ae) + zp, np.int64(0)
    elif zp == 0:
        tm, te = am, ae
    elif -ae <= 54:
        tm, te = am + (np.int64(zp) << -ae), ae
    else:                             # |a| < 2**-31 < half an ulp of zp >= 1: b = zp
        tm, te = np.int64(zp), np.int64(0)
    bm, be = round_significant(tm, te, 24)
    if be >= 0:
        q = bm << be
    else:
        q = round_shift_mul(bm, 1, 0, -be, HALF_EVEN)
    return clamp(q, 0, 255)


@njit(cache=True)
def requant_hw(acc, mult, shift, zo, lo, rounding):
    """q = clamp(round(acc * mult / 2**shift) + zo, lo, 255) for a fixed-point accumulator
    acc (bias_frac_bits fractional bits, folded into shift), an unsigned multiplier of
    *_multiplier_bits bits and the requantizer's rounding."""
    return clamp(round_shift_mul(acc, mult, 0, shift, rounding) + zo, lo, 255)


@njit(cache=True)
def mul_hw(a, za, b, zb, mult, shift, zo, rounding):
    """q = clamp(round((a - za)(b - zb) * mult / 2**shift) + zo, 0, 255)."""
    return clamp(round_shift_mul((a - za) * (b - zb), mult, 0, shift, rounding) + zo, 0, 255)


def gate_table(lut: np.ndarray, gate_bits: int) -> np.ndarray:
    """The hw profile's sigmoid table with `gate_bits` bits kept: each 8-bit code g rounded
    half up to a multiple of d = 2**(8 - gate_bits) and clamped to the largest gate_bits-bit
    code, g' = min((g + d/2) >> (8 - gate_bits), 2**gate_bits - 1) << (8 - gate_bits).
    Still in 8-bit units (scale 1/256): the gate memory holds g' >> (8 - gate_bits) and the
    broadcaster's shift is 8 - gate_bits smaller, the same product. Nearest on nested grids:
    |g' - g| never shrinks as gate_bits narrows. gate_bits = 8 returns the table unchanged."""
    lut = np.asarray(lut)
    drop = GATE_BITS - int(gate_bits)
    if drop <= 0:
        return lut.copy()
    g = lut.astype(np.int64)
    kept = np.minimum((g + (1 << (drop - 1))) >> drop, (1 << gate_bits) - 1)
    return (kept << drop).astype(lut.dtype)


def quantize_multiplier(m: float, bits: int) -> tuple[int, int]:
    """A positive real multiplier m as (M, s) with M / 2**s ~ m, M an unsigned integer of
    `bits` bits (2**(bits-1) <= M < 2**bits), rounded half-even from m's exact value. For a
    float32 m and bits >= 24 the representation is exact. A multiplier of 2**bits or more
    keeps `bits` significant bits and shifts left instead (M << -s, s = 0)."""
    if not m > 0:
        raise ValueError(f"multiplier {m!r} is not positive")
    frac, exp = np.frexp(np.float64(m))             # m = frac * 2**exp, 0.5 <= frac < 1
    mant = int(np.ldexp(frac, 53))                  # exact: frac * 2**53 is an integer
    mm = round_half_even_shift(mant, 53 - bits)     # round(frac * 2**bits)
    s = bits - int(exp)
    if mm == 1 << bits:
        mm >>= 1
        s -= 1
    if s < 0:           # m >= 2**bits: a left shift (M << -s, shift 0), while it fits 31 bits
        if mm << -s >= 1 << 31:
            raise ConfigError(f"requantizer multiplier {m!r} does not fit 31 bits; allowed: "
                              "multipliers below 2**31 (check the block's scales)")
        mm, s = mm << -s, 0
    return mm, s


JIT_SOURCES = (*ROUNDING_SOURCES, sys.modules[__name__])
"""The modules this module's machine code is compiled from (tse.ref_model.jit_cache)."""
flush_module(globals(), JIT_SOURCES)
