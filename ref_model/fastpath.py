"""Whole-frame kernels arranged for speed, bit-identical to the per-element kernels.

ref_model.kernels walks the frame element by element through the named stage functions of
ref_model.numerics, which reads as the spec but does not vectorize. This module computes the
same codes with loops a compiler turns into SIMD code:

  - line accumulator: each strip's rows are added into one int32 row (W*C long, contiguous),
    then folded into the tiles of the strip; the zero point is subtracted once per tile
    (sum(x - zx) = sum(x) - n*zx). Exact: a strip row sums at most 255 * th < 2**31.
  - excite MAC: per tile, ref_model.numerics.excite_tile itself (a few hundred MACs per tile).
  - tile broadcaster: per strip, the gate of every (column, channel) is spread into one
    contiguous row; each element is then one multiply-add and one rounding:
      hw:    q = round(u * g * M / 2**s) + zo is computed in float64 as
             rint(x * k + (zo - zx * k)) with k = g * M * 2**-s. Every term is an integer
             multiple of 2**-s below 2**(53 - s), so the float64 arithmetic is exact and rint
             rounds half-even exactly as the integer requantizer (half-up: floor(v + 1/2)).
             Exact while s <= 44 (checked; otherwise the caller uses the per-element kernel).
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
def _broadcast_hw(x, b, i, th, tw, gate, k_of_gate, bias_of_gate, half_up, wk, wb, out):
    """Tile broadcaster, hw profile, strip i of frame b (see the module docstring)."""
    n, h, w, c = x.shape
    xf = x.reshape(n, h, w * c)
    of = out.reshape(n, h, w * c)
    for col in range(w):
        j = col // tw
        for ch in range(c):
            g = gate[j, ch]
            wk[col * c + ch] = k_of_gate[g]
            wb[col * c + ch] = bias_of_gate[g]
    for r in range(i * th, min(h, (i + 1) * th)):
        row = xf[b, r]
        orow = of[b, r]
        for k in range(w * c):
            v = np.float64(row[k]) * wk[k] + wb[k]
            q = np.floor(v + 0.5) if half_up else np.rint(v)
            orow[k] = np.uint8(np.int32(min(max(q, 0.0), 255.0)))


@njit(cache=True)
def _broadcast_torch(x, b, i, th, tw, gate, zx, zo, mult, wg, out):
    """Tile broadcaster, torch profile: q = clamp(rint(f32(f32(u g) * mult)) + zo)."""
    n, h, w, c = x.shape
    xf = x.reshape(n, h, w * c)
    of = out.reshape(n, h, w * c)
    for col in range(w):
        j = col // tw
        for ch in range(c):
            wg[col * c + ch] = gate[j, ch]
    for r in range(i * th, min(h, (i + 1) * th)):
        row = xf[b, r]
        orow = of[b, r]
        for k in range(w * c):
            p = np.float32((np.int32(row[k]) - zx) * wg[k])
            q = np.rint(np.float32(p * mult)) + zo
            orow[k] = np.uint8(np.int32(min(max(q, np.float32(0.0)), np.float32(255.0))))


@njit(cache=True)
def _frames(x, th, tw, T, profile, k_of_gate, bias_of_gate, half_up, sums, pooled, hidden,
            excite, gate, out, sat1, sat2):
    n, h, w, c = x.shape
    ty, tx = sums.shape[1], sums.shape[2]
    acc = np.zeros(w * c, np.int32)
    wk = np.zeros(w * c, np.float64)
    wb = np.zeros(w * c, np.float64)
    wg = np.zeros(w * c, np.int32)
    zx = np.int32(T.zx)
    zo = np.float32(T.zo)
    mult = np.float32(T.t_mm)
    bottom_short = h % th != 0
    right_short = w % tw != 0
    t = 0
    for b in range(n):
        for i in range(ty):
            _strip_sums(x, b, i, th, tw, T.zx, acc, sums[b, i])
            for j in range(tx):
                kind = (2 * (1 if (i == ty - 1 and bottom_short) else 0)
                        + (1 if (j == tx - 1 and right_short) else 0))
                s1, s2 = nm.excite_tile(sums[b, i, j], kind, T, profile, pooled[b, i, j],
                                        hidden[b, i, j], excite[b, i, j], gate[b, i, j])
                sat1[t] = s1
                sat2[t] = s2
                t += 1
            if profile == nm.HW:
                _broadcast_hw(x, b, i, th, tw, gate[b, i], k_of_gate, bias_of_gate, half_up,
                              wk, wb, out)
            else:
                _broadcast_torch(x, b, i, th, tw, gate[b, i], zx, zo, mult, wg, out)


def _flush():
    from .kernels import _flush_stale_cache
    _flush_stale_cache([_frames, _strip_sums, _broadcast_hw, _broadcast_torch], "fastpath")


_flush()


def applicable(ip, profile: str) -> bool:
    """Whether this module computes the profile exactly for these parameters."""
    if profile == "torch":
        return True
    return not ip.hw.saturate and int(ip.hw_mul_shift[0]) <= MAX_EXACT_SHIFT


def run_frames(x, th, tw, ip, profile_code, sums, pooled, hidden, excite, gate, out, sat1, sat2):
    """Fill every stage array for frames x (shapes as in ref_model.kernels.run)."""
    zx, zo = ip.zero_points["input"], ip.zero_points["output"]
    s = int(ip.hw_mul_shift[0])
    k = np.arange(256, dtype=np.float64) * float(ip.hw_mul_mult[0]) * 2.0 ** -s
    bias = zo - zx * k
    _frames(x, th, tw, ip.tables(), profile_code, k, bias, ip.hw.mul_rounding == "half_up",
            sums, pooled, hidden, excite, gate, out, sat1, sat2)
