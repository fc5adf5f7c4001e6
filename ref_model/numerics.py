"""The arithmetic of every stage of the TSE unit, once per numerics profile.

Two profiles compute the same block from the same integer parameters:

  torch  reproduces quantized PyTorch (eager mode, fbgemm or qnnpack) code for code, including
         its float32 requantization steps (../shared/notes/torch-quant-semantics.md, verified
         by tests/test_numerics.py against torch with zero mismatches);
  hw     integer-only arithmetic of the RTL: multiply, add, shift, table lookup, saturate,
         every width a field of ref_model.hw_profile.HwProfile.

Written in the style of TFLite's reference kernels: each rounding and clamp is a named
function, and each stage is one function per profile. Everything here is a numba @njit
function on scalars or small arrays, so the whole-frame kernels (ref_model.kernels) and the
cycle-stepped streaming model (ref_model.streaming) call the very same code; from Python they
run as ordinary (slow) functions.

Naming: f32(v) rounds to float32 (nearest, ties to even); rint rounds a float to the nearest
integer, ties to even; every 8-bit code is clamped to [lo, 255] with lo = 0, or the output
zero point after a fused ReLU.

The integer parameters of both profiles (reciprocals, multipliers and shifts, biases, the
sigmoid table) are derived from the extracted PyTorch parameters (ref_model.params.QuantParams)
in one place: derive() -> IntParams. docs/numerics.md writes every formula out, with the
default hw preset and its measured distance from the torch profile.

Stages and their arrays (channels last; per-tile stages are [N, tiles_y, tiles_x, C']):
  tile_sums  int64  sum over the tile of (x - zx)                 line accumulator
  pooled     uint8  the tile mean, requantized                    excite MAC: squeeze
  hidden     uint8  ReLU(W1 pooled + b1), requantized             excite MAC: fc1
  excite     uint8  W2 hidden + b2, requantized                   excite MAC: fc2
  gate       uint8  sigmoid table[excite] (scale 1/256, zp 0)     excite MAC: sigmoid
                    (hw: hw.gate_bits kept, gate_table)
  output     uint8  x * gate of its tile, requantized             tile broadcaster
"""
from __future__ import annotations

import json
import math
from collections import namedtuple
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from numba import njit

from . import artifacts
from .config import TSEConfig
from .errors import ConfigError, InputError
from .hw_profile import GATE_BITS, HwProfile, PRODUCT_MAX, reciprocal, tile_counts
from .params import QuantParams

PROFILES = ("torch", "hw")
TORCH, HW = 0, 1
"""Profile codes passed to the jitted functions."""
HALF_UP, HALF_EVEN, F32 = 0, 1, 2
"""Rounding codes: half_up rounds ties toward +infinity, half_even to the even integer; F32
(the mean only) rounds like PyTorch's float32 mean (mean_hw_f32)."""
ROUNDING_CODES = {"half_up": HALF_UP, "half_even": HALF_EVEN, "f32": F32}
STAGES = ("tile_sums", "pooled", "hidden", "excite", "gate", "output")

_BIG = 1 << 62
"""round_shift_mul's answer (with the sign) for a value far outside any 8-bit range."""


# =====================================================================================
# Primitives
# =====================================================================================

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


# =====================================================================================
# torch profile: quantized PyTorch 2.13, fbgemm and qnnpack, code for code
# =====================================================================================

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


# =====================================================================================
# hw profile: integer only
# =====================================================================================

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
    q = a >> drop
    rem = a - (q << drop)
    half = np.int64(1) << (drop - 1)
    if rem > half or (rem == half and (q & 1) == 1):
        q += 1
    return (-q if m < 0 else q), e + drop


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


# =====================================================================================
# Stages, dispatched by profile (the functions both implementations call)
# =====================================================================================

Tables = namedtuple("Tables", [
    # zero points: input (= pooled), hidden, excite, output
    "zx", "zh", "ze", "zo",
    # weights, int64 [hidden, C] and [C, hidden]
    "w1", "w2",
    # sigmoid table: gate code of every excite code, int64 [256]; h_lut: the hw profile's,
    # hw.gate_bits kept (gate_table; equal to lut at gate_bits = 8)
    "lut", "h_lut",
    # torch profile
    "t_recip",                      # float32 [4]: f32(1/n) per tile kind
    "t_b1i", "t_b1f", "t_b1m", "t_m1",   # int64, float32, float32, float32 [hidden]
    "t_b2i", "t_b2f", "t_b2m", "t_m2",   # [C]
    "t_mm",                         # float32: the final mul's multiplier
    "t_pair_sat",                   # bool: fc products summed in saturating int16 pairs
    # hw profile
    "h_recip", "h_recip_shift",     # int64 [4]
    "h_recip_f32",                  # float32 [4]: R / 2**shift (f32(1/n) when >= 24 bits)
    "h_b1", "h_m1", "h_s1",         # int64 [hidden]: fixed-point bias, multiplier, shift
    "h_b2", "h_m2", "h_s2",         # int64 [C]
    "h_mm", "h_ms",                 # int: the final mul's multiplier and shift
    "frac_bits",
    "sum_lo", "sum_hi", "fc1_lo", "fc1_hi", "fc2_lo", "fc2_hi",   # register ranges
    "saturate",
    "r_mean", "r_fc1", "r_fc2", "r_mul",                          # rounding codes
])
"""IntParams flattened for the jitted functions (IntParams.tables())."""


@njit(cache=True)
def tile_sum_add(acc, x, T, profile):
    """Line accumulator, one element: acc + (x - zx). hw: a sum_bits-bit register that
    saturates when hw.saturate (else the configuration proved it cannot overflow).
    Returns (acc, saturated)."""
    v = np.int64(x) - T.zx
    if profile == HW and T.saturate:
        return saturating_add(acc, v, T.sum_lo, T.sum_hi)
    return acc + v, False


@njit(cache=True)
def squeeze(sums, kind, T, profile, pooled):
    """Excite MAC, squeeze: the mean of each channel's tile sum (tile kind -> element count).
    The pooled tensor keeps the input's scale and zero point."""
    for c in range(sums.shape[0]):
        if profile == TORCH:
            pooled[c] = mean_torch(sums[c], T.t_recip[kind], T.zx)
        elif T.r_mean == F32:
            pooled[c] = mean_hw_f32(sums[c], T.h_recip[kind], T.h_recip_shift[kind], T.zx)
        else:
            pooled[c] = mean_hw(sums[c], T.h_recip[kind], T.h_recip_shift[kind], T.zx,
                                T.r_mean)


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


@njit(cache=True)
def _fc(x, zx, w, t_bi, t_bf, t_bm, t_m, h_b, h_m, h_s, zo, lo, acc_lo, acc_hi, rounding,
        T, profile, out):
    """A 1x1 conv on one tile: out[j] = requant(sum_c (x[c] - zx) w[j, c] + b[j]).
    torch: exact int accumulation (with fbgemm's int16 pair saturation when T.t_pair_sat),
    float requantization (requant_torch).
    hw: the accumulator is loaded with the fixed-point bias and adds each product shifted
    left by frac_bits, channel 0 first, saturating at [acc_lo, acc_hi] when hw.saturate;
    then requant_hw. Returns the number of saturated accumulators."""
    saturated = 0
    for j in range(w.shape[0]):
        if profile == TORCH:
            acc = np.int64(0)
            for c in range(w.shape[1]):
                acc += (np.int64(x[c]) - zx) * w[j, c]
            if T.t_pair_sat:
                acc += pair_saturation_excess(x, w[j])
            out[j] = requant_torch(acc, t_bi[j], t_bf[j], t_bm[j], t_m[j], zo, lo)
        else:
            acc = h_b[j]
            sat = False
            if T.saturate:                      # the bias is loaded saturated too
                acc, sat = saturating_add(acc, 0, acc_lo, acc_hi)
            for c in range(w.shape[1]):
                p = ((np.int64(x[c]) - zx) * w[j, c]) << T.frac_bits
                if T.saturate:
                    acc, s = saturating_add(acc, p, acc_lo, acc_hi)
                    sat = sat or s
                else:
                    acc += p
            if sat:
                saturated += 1
            out[j] = requant_hw(acc, h_m[j], h_s[j], zo, lo, rounding)
    return saturated


@njit(cache=True)
def fc1(pooled, T, profile, hidden):
    """Excite MAC, fc1 with fused ReLU (lower clamp at the hidden zero point)."""
    return _fc(pooled, T.zx, T.w1, T.t_b1i, T.t_b1f, T.t_b1m, T.t_m1, T.h_b1, T.h_m1, T.h_s1,
               T.zh, T.zh, T.fc1_lo, T.fc1_hi, T.r_fc1, T, profile, hidden)


@njit(cache=True)
def fc2(hidden, T, profile, excite):
    """Excite MAC, fc2 (no activation: lower clamp 0)."""
    return _fc(hidden, T.zh, T.w2, T.t_b2i, T.t_b2f, T.t_b2m, T.t_m2, T.h_b2, T.h_m2, T.h_s2,
               T.ze, 0, T.fc2_lo, T.fc2_hi, T.r_fc2, T, profile, excite)


@njit(cache=True)
def sigmoid(excite, T, gate, profile=TORCH):
    """Excite MAC, sigmoid: the 256-entry table indexed by the excite code. torch: the
    quantized sigmoid's 8-bit codes; hw: the same table with hw.gate_bits kept (gate_table:
    the codes rounded to multiples of 2**(8 - gate_bits); the table itself at 8 bits).
    Without a profile: the 8-bit table (what both profiles use at gate_bits = 8)."""
    lut = T.lut if profile == TORCH else T.h_lut
    for c in range(excite.shape[0]):
        gate[c] = lut[excite[c]]


@njit(cache=True)
def excite_tile(sums, kind, T, profile, pooled, hidden, excite, gate):
    """The excite MAC's work for one tile: squeeze, fc1 + ReLU, fc2, sigmoid.
    Returns (saturated fc1 accumulators, saturated fc2 accumulators)."""
    squeeze(sums, kind, T, profile, pooled)
    s1 = fc1(pooled, T, profile, hidden)
    s2 = fc2(hidden, T, profile, excite)
    sigmoid(excite, T, gate, profile)
    return s1, s2


@njit(cache=True)
def scale(x, g, T, profile):
    """Tile broadcaster, one element: x times its tile's gate, requantized to the output."""
    if profile == TORCH:
        return mul_torch(np.int64(x), T.zx, np.int64(g), 0, T.t_mm, T.zo)
    return mul_hw(np.int64(x), T.zx, np.int64(g), 0, T.h_mm, T.h_ms, T.zo, T.r_mul)


@njit(cache=True)
def accumulate_beat(sums, flags, c0, lanes, T, profile):
    """Line accumulator, one beat: lanes[l] into sums[c0 + l]; flags mark saturation."""
    for lane in range(lanes.shape[0]):
        s, f = tile_sum_add(sums[c0 + lane], lanes[lane], T, profile)
        sums[c0 + lane] = s
        if f:
            flags[c0 + lane] = True


@njit(cache=True)
def scale_beat(lanes, gates, c0, T, profile, out):
    """Tile broadcaster, one beat: out[l] = scale(lanes[l], gates[c0 + l])."""
    for lane in range(lanes.shape[0]):
        out[lane] = scale(lanes[lane], gates[c0 + lane], T, profile)


# =====================================================================================
# Integer parameters of both profiles, derived from QuantParams in one place
# =====================================================================================

@dataclass(frozen=True)
class IntParams:
    """Every integer or float32 parameter the two profiles compute with.

    Built by derive(params, cfg); plain numpy arrays (arrays()) plus a small manifest
    (manifest()), saved and loaded as an artifact directory (save(), load()). Tile kinds
    index the reciprocal tables: kind = 2 * (bottom edge tile cut short) + (right edge tile
    cut short), tile_counts[kind] its element count."""

    engine: str
    hw: HwProfile
    zero_points: dict              # role -> int (input, pooled, hidden, excite, gate, output)
    tile_counts: np.ndarray        # int64 [4]
    w1: np.ndarray                 # int8 [hidden, C]
    w2: np.ndarray                 # int8 [C, hidden]
    sigmoid_lut: np.ndarray        # uint8 [256]: gate code of each excite code
    # torch profile
    torch_recip: np.ndarray        # float32 [4]: f32(1/n)
    torch_fc1_bias_int: np.ndarray  # int64 [hidden]: qnnpack's integer bias (0 for fbgemm)
    torch_fc1_bias_f32: np.ndarray  # float32 [hidden]: fbgemm's float bias (0 for qnnpack)
    torch_fc1_bias_mul: np.ndarray  # float32 [hidden]: what it is multiplied by (requant_torch)
    torch_fc1_mult: np.ndarray     # float32 [hidden]
    torch_fc2_bias_int: np.ndarray
    torch_fc2_bias_f32: np.ndarray
    torch_fc2_bias_mul: np.ndarray
    torch_fc2_mult: np.ndarray
    torch_mul_mult: np.ndarray     # float32 [1]
    # hw profile
    hw_recip: np.ndarray           # int64 [4]: R[n], hw.reciprocal_bits bits
    hw_recip_shift: np.ndarray     # int64 [4]
    hw_fc1_bias: np.ndarray        # int64 [hidden]: bias in accumulator units x 2**frac_bits
    hw_fc1_mult: np.ndarray        # int64 [hidden]: multiplier, hw.fc1_multiplier_bits bits
    hw_fc1_shift: np.ndarray       # int64 [hidden]: total right shift (frac_bits included)
    hw_fc2_bias: np.ndarray
    hw_fc2_mult: np.ndarray
    hw_fc2_shift: np.ndarray
    hw_mul_mult: np.ndarray        # int64 [1]
    hw_mul_shift: np.ndarray       # int64 [1]
    pair_saturation: bool = False  # QuantParams.pair_saturation (torch profile, fbgemm)
    _tables: list = field(default_factory=list, repr=False, compare=False)
    _kernels: dict = field(default_factory=dict, repr=False, compare=False)  # kernels.run's

    def __getstate__(self):
        """Pickled without the compiled kernels kernels.run keeps here (machine code and
        scratch of this process: a worker compiles its own)."""
        return {**self.__dict__, "_kernels": {}}

    @property
    def channels(self) -> int:
        return self.w1.shape[1]

    @property
    def hidden(self) -> int:
        return self.w1.shape[0]

    ARRAY_NAMES = ("tile_counts", "w1", "w2", "sigmoid_lut", "torch_recip",
                   "torch_fc1_bias_int", "torch_fc1_bias_f32", "torch_fc1_bias_mul",
                   "torch_fc1_mult", "torch_fc2_bias_int", "torch_fc2_bias_f32",
                   "torch_fc2_bias_mul", "torch_fc2_mult",
                   "torch_mul_mult", "hw_recip", "hw_recip_shift", "hw_fc1_bias",
                   "hw_fc1_mult", "hw_fc1_shift", "hw_fc2_bias", "hw_fc2_mult",
                   "hw_fc2_shift", "hw_mul_mult", "hw_mul_shift")

    def arrays(self) -> dict:
        """Every table as a plain numpy array, by name (what save() writes)."""
        return {name: getattr(self, name) for name in self.ARRAY_NAMES}

    def manifest(self) -> dict:
        return {"kind": "int-params", "engine": self.engine, "hw": self.hw.to_dict(),
                "zero_points": dict(self.zero_points),
                "int16_pair_saturation": self.pair_saturation}

    def save(self, out_dir) -> Path:
        return artifacts.write_artifacts(out_dir, self.arrays(), self.manifest())

    @classmethod
    def load(cls, directory) -> "IntParams":
        where = f"int params: {str(directory)!r}"
        try:
            manifest = artifacts.read_manifest(directory)
            if manifest.get("kind") != "int-params":
                raise InputError(f"{where} holds {manifest.get('kind')!r}; allowed: a "
                                 "directory written by IntParams.save")
            problems = artifacts.verify(directory)
            if problems:
                raise InputError(f"{where}: {problems[0]}")
            arrays = artifacts.load_arrays(directory, list(cls.ARRAY_NAMES))
            missing = [n for n in cls.ARRAY_NAMES if n not in arrays]
            if missing:
                raise InputError(f"{where} lacks {', '.join(missing)}")
            return cls(engine=manifest["engine"], hw=HwProfile.from_dict(manifest["hw"]),
                       zero_points={k: int(v) for k, v in manifest["zero_points"].items()},
                       pair_saturation=bool(manifest.get("int16_pair_saturation", False)),
                       **arrays)
        except (FileNotFoundError, KeyError, ValueError, json.JSONDecodeError) as e:
            if isinstance(e, InputError):
                raise
            raise InputError(f"{where}: {e}") from None

    def hw_gate_table(self) -> np.ndarray:
        """The hw profile's sigmoid table: sigmoid_lut with hw.gate_bits kept (gate_table),
        in 8-bit units. The ROM a gate_bits-wide datapath stores is this >> (8 - gate_bits)."""
        return gate_table(self.sigmoid_lut, self.hw.gate_bits)

    def equals(self, other: "IntParams") -> bool:
        return (self.engine == other.engine and self.hw == other.hw
                and self.zero_points == other.zero_points
                and self.pair_saturation == other.pair_saturation
                and all(np.array_equal(a, b) and a.dtype == b.dtype
                        for a, b in zip(self.arrays().values(), other.arrays().values())))

    def tables(self) -> Tables:
        """The flat tuple the jitted functions take (built once, then cached)."""
        if not self._tables:
            self._tables.append(_make_tables(self))
        return self._tables[0]


def _make_tables(ip: IntParams) -> Tables:
    hw, f = ip.hw, ip.hw.bias_frac_bits
    zp = ip.zero_points
    i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731

    def reg(bits):
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    sum_lo, sum_hi = reg(hw.sum_bits)
    fc1_lo, fc1_hi = reg(hw.fc1_acc_bits + f)
    fc2_lo, fc2_hi = reg(hw.fc2_acc_bits + f)
    return Tables(
        zx=zp["input"], zh=zp["hidden"], ze=zp["excite"], zo=zp["output"],
        w1=i64(ip.w1), w2=i64(ip.w2), lut=i64(ip.sigmoid_lut),
        h_lut=i64(gate_table(ip.sigmoid_lut, hw.gate_bits)),
        t_recip=np.ascontiguousarray(ip.torch_recip, np.float32),
        t_b1i=i64(ip.torch_fc1_bias_int), t_b1f=ip.torch_fc1_bias_f32.astype(np.float32),
        t_b1m=ip.torch_fc1_bias_mul.astype(np.float32), t_m1=ip.torch_fc1_mult.astype(np.float32),
        t_b2i=i64(ip.torch_fc2_bias_int), t_b2f=ip.torch_fc2_bias_f32.astype(np.float32),
        t_b2m=ip.torch_fc2_bias_mul.astype(np.float32), t_m2=ip.torch_fc2_mult.astype(np.float32),
        t_mm=np.float32(ip.torch_mul_mult[0]),
        t_pair_sat=bool(ip.pair_saturation and ip.engine == "fbgemm"),
        h_recip=i64(ip.hw_recip), h_recip_shift=i64(ip.hw_recip_shift),
        h_recip_f32=np.ldexp(ip.hw_recip.astype(np.float64),
                             -ip.hw_recip_shift.astype(np.int64)).astype(np.float32),
        h_b1=i64(ip.hw_fc1_bias), h_m1=i64(ip.hw_fc1_mult), h_s1=i64(ip.hw_fc1_shift),
        h_b2=i64(ip.hw_fc2_bias), h_m2=i64(ip.hw_fc2_mult), h_s2=i64(ip.hw_fc2_shift),
        h_mm=int(ip.hw_mul_mult[0]), h_ms=int(ip.hw_mul_shift[0]),
        frac_bits=f, sum_lo=sum_lo, sum_hi=sum_hi, fc1_lo=fc1_lo, fc1_hi=fc1_hi,
        fc2_lo=fc2_lo, fc2_hi=fc2_hi, saturate=bool(hw.saturate),
        r_mean=ROUNDING_CODES[hw.mean_rounding], r_fc1=ROUNDING_CODES[hw.fc1_rounding],
        r_fc2=ROUNDING_CODES[hw.fc2_rounding], r_mul=ROUNDING_CODES[hw.mul_rounding])


# ---- derivation helpers (plain Python / numpy, exact) ----------------------------------

def f32_of(v) -> np.float32:
    """f32(v) in Python: numpy's float64 -> float32 conversion rounds to nearest, ties even."""
    return np.float32(v)


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
    # M = round(frac * 2**bits) = round(mant / 2**(53 - bits)), half-even
    drop = 53 - bits
    mm, rem = divmod(mant, 1 << drop)
    half = 1 << (drop - 1)
    if rem > half or (rem == half and mm & 1):
        mm += 1
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


def _fixed(v: Fraction, frac_bits: int) -> int:
    """round_half_even(v * 2**frac_bits) of an exact value."""
    return round(v * (1 << frac_bits))


def _conv_tables(engine, per_channel, s_in, w_scale, bias, s_out, hw_bits, frac_bits):
    """Requantization parameters of one 1x1 conv for both profiles (see requant_torch)."""
    n = len(w_scale)
    b_int = np.zeros(n, np.int64)
    b_f32 = np.zeros(n, np.float32)
    b_mul = np.ones(n, np.float32)
    mult = np.zeros(n, np.float32)
    h_bias = np.zeros(n, np.int64)
    h_mult = np.zeros(n, np.int64)
    h_shift = np.zeros(n, np.int64)
    for j in range(n):
        if engine == "fbgemm":
            atw = f32_of(f32_of(s_in) * f32_of(w_scale[j]))
            mult[j] = f32_of(atw / f32_of(s_out))
            if per_channel:
                b_f32[j] = f32_of(np.float32(bias[j]) / atw)
            else:
                b_f32[j] = np.float32(bias[j])
                b_mul[j] = f32_of(1.0 / np.float64(atw))
            # the bias in accumulator units, exactly as the torch profile adds it
            h_bias[j] = _fixed(Fraction(float(b_f32[j])) * Fraction(float(b_mul[j])),
                               frac_bits)
        else:  # qnnpack
            sxw = f32_of(np.float64(s_in) * np.float64(w_scale[j]))
            mult[j] = f32_of(sxw * f32_of(np.float32(1.0) / f32_of(s_out)))
            b_int[j] = int(np.rint(f32_of(np.float32(bias[j]) * f32_of(np.float32(1.0) / sxw))))
            h_bias[j] = b_int[j] << frac_bits
        m, s = quantize_multiplier(float(mult[j]), hw_bits)
        h_mult[j], h_shift[j] = m, s + frac_bits
    return b_int, b_f32, b_mul, mult, h_bias, h_mult, h_shift


def derive(params: QuantParams, cfg: TSEConfig) -> IntParams:
    """The integer parameters of both profiles for a configuration, from the extracted
    PyTorch parameters. The one place where scales become multipliers, shifts, fixed-point
    biases, reciprocals and the sigmoid table."""
    if not isinstance(params, QuantParams):
        raise InputError(f"params: {type(params).__name__} is not allowed; allowed: "
                         "QuantParams (quant.reference.build(...).params or loaded artifacts)")
    if (params.channels, params.hidden) != (cfg.channels, cfg.hidden):
        raise InputError(f"params: weights for C={params.channels}, hidden={params.hidden} do "
                         f"not match the configuration (C={cfg.channels}, hidden={cfg.hidden})")
    if params.engine not in ("fbgemm", "qnnpack"):
        raise InputError(f"params: engine {params.engine!r} is not allowed; allowed: "
                         "fbgemm, qnnpack")
    if params.engine != cfg.engine:
        raise InputError(f"params: extracted with engine {params.engine!r} but the "
                         f"configuration says engine = {cfg.engine!r}; allowed: the same engine")
    sc, zp = params.scales, params.zero_points
    if sc["pooled"] != sc["input"] or zp["pooled"] != zp["input"]:
        raise InputError("params: the pooled tensor must keep the input's scale and zero point "
                         f"(avg_pool2d does); got {sc['pooled']}/{zp['pooled']} vs "
                         f"{sc['input']}/{zp['input']}")
    if sc["gate"] != 1.0 / 256 or zp["gate"] != 0:
        raise InputError(f"params: the gate must be quantized with scale 1/256 and zero point "
                         f"0 (quantized sigmoid); got {sc['gate']}/{zp['gate']}")
    hw, f = cfg.hw, cfg.hw.bias_frac_bits
    counts = np.array(tile_counts(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols),
                      np.int64)
    recips = [reciprocal(int(n), hw.reciprocal_bits, f32=hw.mean_rounding == "f32")
              for n in counts]
    b1i, b1f, b1m, m1, hb1, hm1, hs1 = _conv_tables(
        params.engine, params.per_channel, sc["pooled"], params.w1_scale, params.b1,
        sc["hidden"], hw.fc1_multiplier_bits, f)
    b2i, b2f, b2m, m2, hb2, hm2, hs2 = _conv_tables(
        params.engine, params.per_channel, sc["hidden"], params.w2_scale, params.b2,
        sc["excite"], hw.fc2_multiplier_bits, f)
    mm = f32_of(f32_of(f32_of(sc["input"]) * f32_of(sc["gate"]))
                * f32_of(np.float32(1.0) / f32_of(sc["output"])))
    hmm, hms = quantize_multiplier(float(mm), hw.mul_multiplier_bits)
    if not hw.saturate:
        for name, bias, fan_in in (("fc1_acc_bits", hb1, cfg.channels),
                                   ("fc2_acc_bits", hb2, cfg.hidden)):
            worst = (PRODUCT_MAX * fan_in << f) + int(np.abs(bias).max())
            bits = getattr(hw, name)
            if worst > (1 << (bits + f - 1)) - 1:
                need = (worst.bit_length() + 1) - f
                raise ConfigError(
                    f"hw.{name}: {bits} can overflow with this block's biases (|acc| up to "
                    f"{worst / 2 ** f:.6g} in accumulator units); allowed: >= {need}, "
                    "or hw.saturate = true to saturate and count")
    return IntParams(
        engine=params.engine, hw=hw, zero_points=dict(zp), tile_counts=counts,
        pair_saturation=params.pair_saturation,
        w1=params.w1.copy(), w2=params.w2.copy(),
        sigmoid_lut=sigmoid_table(sc["excite"], zp["excite"]),
        torch_recip=np.array([f32_of(1.0 / int(n)) for n in counts], np.float32),
        torch_fc1_bias_int=b1i, torch_fc1_bias_f32=b1f, torch_fc1_bias_mul=b1m,
        torch_fc1_mult=m1, torch_fc2_bias_int=b2i, torch_fc2_bias_f32=b2f,
        torch_fc2_bias_mul=b2m, torch_fc2_mult=m2,
        torch_mul_mult=np.array([mm], np.float32),
        hw_recip=np.array([r for r, _ in recips], np.int64),
        hw_recip_shift=np.array([s for _, s in recips], np.int64),
        hw_fc1_bias=hb1, hw_fc1_mult=hm1, hw_fc1_shift=hs1,
        hw_fc2_bias=hb2, hw_fc2_mult=hm2, hw_fc2_shift=hs2,
        hw_mul_mult=np.array([hmm], np.int64), hw_mul_shift=np.array([hms], np.int64))


def int_params_for(cfg: TSEConfig, params) -> IntParams:
    """IntParams from QuantParams (derived) or IntParams (checked against cfg)."""
    if isinstance(params, IntParams):
        counts = tile_counts(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols)
        if (params.channels, params.hidden) != (cfg.channels, cfg.hidden):
            raise InputError(f"int params: C={params.channels}, hidden={params.hidden} do not "
                             f"match the configuration (C={cfg.channels}, "
                             f"hidden={cfg.hidden})")
        if tuple(int(n) for n in params.tile_counts) != tuple(counts):
            raise InputError(f"int params: derived for tile element counts "
                             f"{list(map(int, params.tile_counts))}, the configuration has "
                             f"{list(counts)}; derive them for this configuration")
        if params.hw != cfg.hw:
            raise InputError("int params: derived for other hw widths than the "
                             "configuration's [hw]; derive them for this configuration")
        return params
    return derive(params, cfg)


def profile_code(profile: str) -> int:
    if profile not in PROFILES:
        raise ConfigError(f"profile: {profile!r} is not allowed; allowed: {', '.join(PROFILES)}")
    return PROFILES.index(profile)


def check_frames(cfg: TSEConfig, x) -> np.ndarray:
    """Validate input frames: channels-last codes [N, H, W, C] matching cfg, N >= 1.
    uint8 is taken as is (it must be C-contiguous); other integer dtypes are accepted when
    every value is a code 0..255. Anything else is an InputError naming what is allowed."""
    expect = f"[N, {cfg.height}, {cfg.width}, {cfg.channels}]"
    if not isinstance(x, np.ndarray):
        raise InputError(f"input: {type(x).__name__} is not allowed; allowed: a numpy uint8 "
                         f"array {expect} (channels last)")
    if x.ndim != 4 or tuple(x.shape[1:]) != (cfg.height, cfg.width, cfg.channels) \
            or x.shape[0] < 1:
        raise InputError(f"input: shape {list(x.shape)} is not allowed; allowed: {expect} with "
                         "N >= 1 (channels last, matching the configuration)")
    if x.dtype == np.uint8:
        if not x.flags.c_contiguous:
            raise InputError("input: a non-contiguous array is not allowed; allowed: a "
                             "C-contiguous array (np.ascontiguousarray(x))")
        return x
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.integer):
        raise InputError(f"input: dtype {x.dtype} is not allowed; allowed: uint8 codes (or "
                         "another integer dtype holding codes 0..255)")
    lo, hi = int(x.min()), int(x.max())
    if lo < 0 or hi > 255:
        raise InputError(f"input: codes {lo}..{hi} are out of range; allowed: 0..255 "
                         "(quint8 codes)")
    return np.ascontiguousarray(x, dtype=np.uint8)


def tile_kind(i: int, j: int, cfg: TSEConfig) -> int:
    """Kind of tile (i, j): 2 * (bottom edge, cut short) + (right edge, cut short)."""
    return (2 * int(i == cfg.tiles_y - 1 and cfg.height % cfg.tile_rows != 0)
            + int(j == cfg.tiles_x - 1 and cfg.width % cfg.tile_cols != 0))
