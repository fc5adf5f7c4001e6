"""Whole-frame kernels arranged for speed, bit-identical to the per-element kernels.

ref_model.kernels walks the frame element by element through the named stage functions of
ref_model.numerics, which reads as the spec but does not vectorize. This module computes the
same codes with loops a compiler turns into SIMD code:

  - line accumulator: each strip's rows are added into one int32 row (W*C long, contiguous),
    then folded into the tiles of the strip; the zero point is subtracted once per tile
    (sum(x - zx) = sum(x) - n*zx). Exact: a strip row sums at most 255 * th < 2**31.
  - excite MAC: per tile, the squeeze and sigmoid of ref_model.numerics; the two 1x1 convs
    as int32 dot products over contiguous weight rows (exact: |sum| <= C * 255 * 128 < 2**31
    for C < 65536), each neuron then requantized by the profile's own requantizer.
  - tile broadcaster: per strip, the gate of every (column, channel) is spread into one
    contiguous int32 row; each element is then:
      hw:    q = round(u * g * M / 2**s) + zo, u = x - zx, computed as
             rint(f64(u * g) * m) + zo with m = M * 2**-s. u * g is an integer below 2**16
             and M has at most 31 bits, so the product (at most 48 significant bits) is exact
             in float64 and rint rounds it half-even exactly as the integer requantizer
             (half-up: floor(v + 1/2), exact while v + 1/2 is, i.e. s <= 44; checked, else
             the caller uses the per-element kernel). The zero point is added after the
             rounding: rounding (v + zo) would send ties the other way when zo is odd.
      torch: quantized mul's own float32 steps: f32(f32(u * g) * mult), rint, + zo.
Serial only. Not used for the hw profile with saturating accumulators, whose result depends on the order
of the additions (the per-element kernel models that order).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from . import numerics as nm

MAX_EXACT_SHIFT = 44
"""Largest final-multiply shift for which the float64 broadcaster is exact (docstring)."""


@njit(cache=True)
def _strip_sums(x, b, i, th, tw, zx, acc, sums):
    """Line accumulator for strip i of frame b: sums[j, c] = sum over tile j of (x - zx)."""
    n, h, w, c = x.shape
    xf = x.reshape(n, h, w * c)
    acc[:] = 0
    r0 = i * th
    r1 = min(h, r0 + th)
    for r in range(r0, r1):
        row = xf[b, r]
        for k in range(w * c):
            acc[k] += row[k]
    sums[:, :] = 0
    for col in range(w):
        j = col // tw
        for ch in range(c):
            sums[j, ch] += acc[col * c + ch]
    for j in range(sums.shape[0]):
        cols = min(w, (j + 1) * tw) - j * tw
        count = (r1 - r0) * cols
        for ch in range(c):
            sums[j, ch] -= count * zx


@njit(cache=True)
def _spread_gates(gate, w, tw, row):
    """row[col * C + ch] = the gate of (col's tile, ch): one strip's gates, pixel by pixel."""
    c = gate.shape[1]
    for col in range(w):
        j = col // tw
        for ch in range(c):
            row[col * c + ch] = gate[j, ch]


@njit(cache=True, fastmath={"nnan", "ninf", "nsz"})   # values are finite: plain min/max
def _broadcast_hw(x, b, i, th, tw, gate, zx, zo, m, half_up, wg, out):
    """Tile broadcaster, hw profile, strip i of frame b: q = round(u * g * M / 2**s) + zo as
    rint(f64(u * g) * m) + zo with m = M * 2**-s (module docstring: exact)."""
    n, h, w, c = x.shape
    xf = x.reshape(n, h, w * c)
    of = out.reshape(n, h, w * c)
    _spread_gates(gate, w, tw, wg)
    for r in range(i * th, min(h, (i + 1) * th)):
        row = xf[b, r]
        orow = of[b, r]
        for k in range(w * c):
            v = np.float64((np.int32(row[k]) - zx) * wg[k]) * m
            q = (np.floor(v + 0.5) if half_up else np.rint(v)) + zo
            orow[k] = np.uint8(np.int32(min(max(q, 0.0), 255.0)))


@njit(cache=True, fastmath={"nnan", "ninf", "nsz"})
def _broadcast_torch(x, b, i, th, tw, gate, zx, zo, mult, wg, out):
    """Tile broadcaster, torch profile: q = clamp(rint(f32(f32(u g) * mult)) + zo)."""
    n, h, w, c = x.shape
    xf = x.reshape(n, h, w * c)
    of = out.reshape(n, h, w * c)
    _spread_gates(gate, w, tw, wg)
    for r in range(i * th, min(h, (i + 1) * th)):
        row = xf[b, r]
        orow = of[b, r]
        for k in range(w * c):
            p = np.float32((np.int32(row[k]) - zx) * wg[k])
            q = np.rint(np.float32(p * mult)) + zo
            orow[k] = np.uint8(np.int32(min(max(q, np.float32(0.0)), np.float32(255.0))))


@njit(cache=True)
def _dot_rows(x, zx, w, acc):
    """acc[j] = sum_c (x[c] - zx) * w[j, c], int32 over contiguous rows of w."""
    u = np.empty(x.shape[0], np.int32)
    for c in range(x.shape[0]):
        u[c] = np.int32(x[c]) - np.int32(zx)
    for j in range(w.shape[0]):
        row = w[j]
        a = np.int32(0)
        for c in range(row.shape[0]):
            a += u[c] * row[c]
        acc[j] = a


@njit(cache=True)
def _excite_tile(sums, kind, T, profile, w1, w2, acc1, acc2, pooled, hidden, excite, gate):
    """The excite MAC for one tile: numerics.excite_tile's results for non-saturating widths.
    The float32 mean (the torch profile's, and the hw profile's with mean_rounding "f32",
    which the datapath reproduces with integer rounding to 24 significant bits) is computed
    in native float32 here: the same IEEE operations, so the same codes."""
    if profile == nm.TORCH or T.r_mean == nm.F32:
        # hw: R / 2**shift, f32(1/n) itself unless reciprocal_bits < 24 (exact_mean false)
        recip = T.t_recip[kind] if profile == nm.TORCH else T.h_recip_f32[kind]
        zp = np.float32(T.zx)
        for c in range(sums.shape[0]):
            a = np.float32(np.float32(sums[c]) * recip)
            pooled[c] = min(max(np.rint(np.float32(a + zp)), np.float32(0.0)), np.float32(255.0))
    else:
        nm.squeeze(sums, kind, T, profile, pooled)
    _dot_rows(pooled, T.zx, w1, acc1)
    for j in range(hidden.shape[0]):
        if profile == nm.TORCH:
            hidden[j] = nm.requant_torch(np.int64(acc1[j]), T.t_b1i[j], T.t_b1f[j], T.t_b1m[j],
                                         T.t_m1[j], T.zh, T.zh)
        else:
            acc = T.h_b1[j] + (np.int64(acc1[j]) << T.frac_bits)
            hidden[j] = nm.requant_hw(acc, T.h_m1[j], T.h_s1[j], T.zh, T.zh, T.r_fc1)
    _dot_rows(hidden, T.zh, w2, acc2)
    for j in range(excite.shape[0]):
        if profile == nm.TORCH:
            excite[j] = nm.requant_torch(np.int64(acc2[j]), T.t_b2i[j], T.t_b2f[j], T.t_b2m[j],
                                         T.t_m2[j], T.ze, 0)
        else:
            acc = T.h_b2[j] + (np.int64(acc2[j]) << T.frac_bits)
            excite[j] = nm.requant_hw(acc, T.h_m2[j], T.h_s2[j], T.ze, 0, T.r_fc2)
    nm.sigmoid(excite, T, gate, profile)      # hw: hw.gate_bits kept


@njit(cache=True)
def _frames(x, th, tw, T, profile, w1, w2, m, half_up, sums, pooled, hidden, excite, gate,
            out):
    n, h, w, c = x.shape
    ty, tx = sums.shape[1], sums.shape[2]
    acc = np.zeros(w * c, np.int32)
    wg = np.zeros(w * c, np.int32)
    acc1 = np.zeros(w1.shape[0], np.int32)
    acc2 = np.zeros(w2.shape[0], np.int32)
    zx = np.int32(T.zx)
    zo = np.float32(T.zo)
    mult = np.float32(T.t_mm)
    bottom_short = h % th != 0
    right_short = w % tw != 0
    for b in range(n):
        for i in range(ty):
            _strip_sums(x, b, i, th, tw, T.zx, acc, sums[b, i])
            for j in range(tx):
                kind = (2 * (1 if (i == ty - 1 and bottom_short) else 0)
                        + (1 if (j == tx - 1 and right_short) else 0))
                _excite_tile(sums[b, i, j], kind, T, profile, w1, w2, acc1, acc2,
                             pooled[b, i, j], hidden[b, i, j], excite[b, i, j], gate[b, i, j])
            if profile == nm.HW:
                _broadcast_hw(x, b, i, th, tw, gate[b, i], zx, np.float64(T.zo), m, half_up,
                              wg, out)
            else:
                _broadcast_torch(x, b, i, th, tw, gate[b, i], zx, zo, mult, wg, out)


def _flush():
    from .kernels import _flush_stale_cache
    _flush_stale_cache([_frames, _strip_sums, _spread_gates, _broadcast_hw, _broadcast_torch,
                        _excite_tile, _dot_rows], "fastpath")


_flush()


def applicable(ip, profile: str) -> bool:
    """Whether this module computes the profile exactly for these parameters."""
    if profile == "torch":
        return True
    return not ip.hw.saturate and int(ip.hw_mul_shift[0]) <= MAX_EXACT_SHIFT


def run_frames(x, th, tw, ip, profile_code, sums, pooled, hidden, excite, gate, out):
    """Fill every stage array for frames x (shapes as in ref_model.kernels.run)."""
    if not ip._fast:
        m = float(ip.hw_mul_mult[0]) * 2.0 ** -int(ip.hw_mul_shift[0])
        ip._fast.append((ip.w1.astype(np.int32), ip.w2.astype(np.int32), m))
    w1, w2, m = ip._fast[0]
    _frames(x, th, tw, ip.tables(), profile_code, w1, w2, m, ip.hw.mul_rounding == "half_up",
            sums, pooled, hidden, excite, gate, out)
