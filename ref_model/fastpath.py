"""Whole-frame kernels arranged for speed, bit-identical to the per-element kernels.

ref_model.kernels walks the frame element by element through the named stage functions of
ref_model.numerics, which reads as the spec but does not vectorize. This module computes the
same codes with loops a compiler turns into SIMD code (integers kept 32 bits wide by casts:
numba widens integer arithmetic to 64 bits, which halves the SIMD lanes):

  - line accumulator: each strip's rows are added into one row of column sums (W*C long,
    contiguous; uint16 while 255 * tile rows fits), then the columns of each tile are
    folded into its C sums (int32 while a tile sum fits); the zero point is subtracted once
    per tile (sum(x - zx) = sum(x) - n*zx).
  - excite MAC: per tile, the squeeze and sigmoid of ref_model.numerics; the two 1x1 convs
    as dot products of int16 operands into int32 over contiguous weight rows (exact:
    |sum| <= C * 255 * 128 < 2**31 for C < 65536); each neuron's requantization: the torch
    profile's own function, the hw profile's in float64 with an exact fallback near ties
    (_requant_hw).
  - tile broadcaster: per strip, the gate of every (column, channel) is spread into one
    contiguous row; each element is then:
      hw:    q = round(u * g * M / 2**s) + zo, u = x - zx, by one of three exact methods
             chosen per parameter set (broadcast_plan):
             SPLIT (int32, the fastest): G = g * M split as G_hi * 2**k + G_lo, so that both
             u * G_hi and u * G_lo fit int32, then one floor shift (_broadcast_hw's
             docstring). It rounds ties up, so half_even uses it only where no tie can
             occur for any gate code of the table.
             Float64 otherwise: u * (g * M * 2**-s) has at most 8 + 8 + 31 significant bits
             (< 53), so the product is exact and one rounding to an integer rounds the
             exact value.
             MAGIC, half_even: fma(u, g*m, 1.5 * 2**52) rounds at the units bit, ties to even, and
             the low 32 bits of the result's encoding are the rounded value (the magic
             number leaves 2**51 + q in the significand). u itself is made the same way:
             the encoding 2**52 + x minus (2**52 + zx). Needs |u * g * m| < 2**31 (checked).
             FLOOR (half_up): floor(v + 1/2), exact while v + 1/2 is, i.e. s <= 44 (checked).
             The zero point is added after the rounding: rounding (v + zo) would send ties
             the other way when zo is odd.
      torch: quantized mul's own float32 steps: f32(f32(u * g) * mult), rint, + zo.
Serial only. Not used for the hw profile with saturating accumulators, whose result depends
on the order of the additions (the per-element kernel models that order).
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from . import numerics as nm

MAX_EXACT_SHIFT = 44
"""Largest final-multiply shift for which the half_up float64 broadcaster is exact."""
MAX_PRODUCT = 2.0 ** 31
"""Largest |u * g * M / 2**s| (u, g at most 255) the rounding trick decodes (docstring)."""

_TWO52 = 4503599627370496.0          # 2**52: the encoding 0x433 << 52 | x is 2**52 + x
_TWO52_BITS = np.int64(0x4330000000000000)
_ROUND = 6755399441055744.0          # 1.5 * 2**52: adding it rounds at the units bit


@intrinsic
def _as_float64(typingctx, bits):
    """The float64 whose encoding is the int64 `bits` (a bit cast, no conversion)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))
    return types.float64(types.int64), codegen


@intrinsic
def _as_int64(typingctx, value):
    """The int64 encoding of the float64 `value` (a bit cast, no conversion)."""
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))
    return types.int64(types.float64), codegen


@njit(cache=True)
def _strip_sums(x, b, i, th, tw, zx, acc, tot, sums):
    """Line accumulator for strip i of frame b: sums[j, c] = sum over tile j of (x - zx).
    acc: one strip row of column sums (uint16 when 255 * th fits, else wider); tot: C
    tile sums (int32 when 255 * th * tw fits, else int64)."""
    n, h, w, c = x.shape
    xf = x.reshape(n, h, w * c)
    r0 = i * th
    r1 = min(h, r0 + th)
    row = xf[b, r0]
    for k in range(w * c):
        acc[k] = row[k]
    for r in range(r0 + 1, r1):
        row = xf[b, r]
        for k in range(w * c):
            acc[k] += row[k]
    for j in range(sums.shape[0]):
        c0 = j * tw
        c1 = min(w, c0 + tw)
        first = acc[c0 * c:(c0 + 1) * c]
        for ch in range(c):
            tot[ch] = first[ch]
        for col in range(c0 + 1, c1):
            a = acc[col * c:(col + 1) * c]
            for ch in range(c):
                tot[ch] += a[ch]
        offset = np.int64(r1 - r0) * (c1 - c0) * zx
        for ch in range(c):
            sums[j, ch] = np.int64(tot[ch]) - offset


@intrinsic
def _ashr32(typingctx, a, k):
    """a >> k on int32 lanes (numba would widen the shift to 64 bits). 0 <= k < 32."""
    def codegen(context, builder, signature, args):
        import llvmlite.ir as ir
        return builder.ashr(args[0], builder.trunc(args[1], ir.IntType(32)))
    return types.int32(types.int32, types.int64), codegen


SPLIT, MAGIC, FLOOR = 0, 1, 2
"""Broadcaster methods (hw profile), chosen once per parameter set by broadcast_plan (not
numerics' rounding codes: FLOOR is how half_up is computed in float64)."""


@njit(cache=True)
def _spread(gate, table, tw, w, row):
    """row[col * C + ch] = table[gate[col // tw, ch]]: one strip's gates, pixel by pixel.
    Looked up once per tile, then copied along the row from a separate array (copies
    within one array could overlap, which keeps a compiler from vectorizing them)."""
    tiles, c = gate.shape
    per_tile = np.empty((tiles, c), row.dtype)
    for j in range(tiles):
        for ch in range(c):
            per_tile[j, ch] = table[gate[j, ch]]
    for col in range(w):
        src = per_tile[col // tw]
        dst = row[col * c:(col + 1) * c]     # a view indexed from 0: no wraparound checks
        for ch in range(c):
            dst[ch] = src[ch]


@njit(cache=True, fastmath={"nnan", "ninf", "nsz", "contract"})
def _broadcast_hw(x, b, i, th, tw, gate, zx, zo, gate_values, plan, split, gm, gh, gl, out):
    """Tile broadcaster, hw profile, strip i of frame b: q = round(u * g * M / 2**s) + zo
    (module docstring; plan = broadcast_plan(...): [method, k, s - k, constant]).
    SPLIT: G = g * M as gh * 2**k + gl (split[0, g], split[1, g]); both products with u fit
    int32, and q = (u gh + ((u gl) >> k) + 2**(s-1-k) + zo 2**(s-k)) >> (s - k), the exact
    floor((u G + 2**(s-1)) / 2**s) + zo: half_up, and half_even where no tie can occur.
    MAGIC / FLOOR: exact float64 steps; gate_values[g] = g * m; gm: one strip row of it.
    ("contract" may fuse u * gm + c into one fma: the product is exact, so both round the
    same exact sum once.)"""
    n, h, w, c = x.shape
    xf = x.reshape(n, h, w * c)
    of = out.reshape(n, h, w * c)
    method = plan[0]
    if method == SPLIT:
        _spread(gate, split[0], tw, w, gh)
        _spread(gate, split[1], tw, w, gl)
    else:
        _spread(gate, gate_values, tw, w, gm)
    z = np.int32(zx)
    zo32 = np.int32(zo)
    lo, hi = np.int32(0), np.int32(255)
    k, sk, const = plan[1], plan[2], np.int32(plan[3])
    zx_enc = _TWO52 + np.float64(zx)
    for r in range(i * th, min(h, (i + 1) * th)):
        row = xf[b, r]
        orow = of[b, r]
        if method == SPLIT:
            for e in range(w * c):
                u = np.int32(np.int32(row[e]) - z)
                t = np.int32(np.int32(u * gh[e]) + _ashr32(np.int32(u * gl[e]), k))
                q = _ashr32(np.int32(t + const), sk)
                orow[e] = np.uint8(min(max(q, lo), hi))
        elif method == MAGIC:
            for e in range(w * c):
                v = _as_float64(np.int64(row[e]) | _TWO52_BITS) - zx_enc   # exactly u
                q = np.int32(np.int32(_as_int64(v * gm[e] + _ROUND)) + zo32)
                orow[e] = np.uint8(min(max(q, lo), hi))
        else:
            for e in range(w * c):
                v = np.float64(np.int32(np.int32(row[e]) - z)) * gm[e]
                q = np.int32(np.int32(np.floor(v + 0.5)) + zo32)
                orow[e] = np.uint8(min(max(q, lo), hi))


def broadcast_plan(mult: int, shift: int, zo: int, rounding: str, gates) -> tuple:
    """How the hw broadcaster computes round(u * g * M / 2**s) + zo exactly for these
    parameters: (plan int64 [4], split int32 [2, 256]).

    SPLIT (two int32 products, twice the SIMD lanes of float64) needs: a split point k with
    u * (G >> k) and u * (G mod 2**k) inside int32 for every gate code g (G = g * M,
    |u| <= 255), 1 <= k + 1 <= s, s - k <= 30, the sum inside int32; and, for half_even,
    no possible tie: u G = (odd) 2**(s-1) needs 2-adic valuations v2(u) + v2(G) = s - 1,
    and v2(u) <= 7 for |u| <= 255, so a gate code g of the table `gates` with
    0 <= s - 1 - v2(g M) <= 7 sends the broadcaster to MAGIC (float64, ties to even).
    half_up always rounds by floor, so it never needs the tie test."""
    split = np.zeros((2, 256), np.int32)
    fallback = (np.array([FLOOR if rounding == "half_up" else MAGIC, 0, 0, 0], np.int64),
                split)
    g_max = 255 * mult
    k = max(0, g_max.bit_length() - 23, shift - 30)
    if not (k <= 23 and k + 1 <= shift and shift - k <= 30):
        return fallback
    const = (1 << (shift - 1 - k)) + zo * (1 << (shift - k))
    reach = 255 * (g_max >> k) + 256
    if not (-(1 << 31) <= const - reach and const + reach < (1 << 31)):
        return fallback
    if rounding == "half_even":
        for g in {int(v) for v in np.asarray(gates).ravel()} - {0}:
            big = g * mult
            if 0 <= shift - 1 - ((big & -big).bit_length() - 1) <= 7:
                return fallback
    codes = np.arange(256, dtype=np.int64) * mult
    split[0] = codes >> k
    split[1] = codes & ((1 << k) - 1)
    return np.array([SPLIT, k, shift - k, const], np.int64), split


@njit(cache=True, fastmath={"nnan", "ninf", "nsz"})   # no "contract": two float32 roundings
def _broadcast_torch(x, b, i, th, tw, gate, zx, zo, mult, codes, gf, out):
    """Tile broadcaster, torch profile: q = clamp(rint(f32(f32(u g) * mult)) + zo). u * g is
    below 2**24, so f32(u) * f32(g) is exact. codes[g] = f32(g); gf: one strip row of it."""
    n, h, w, c = x.shape
    xf = x.reshape(n, h, w * c)
    of = out.reshape(n, h, w * c)
    _spread(gate, codes, tw, w, gf)
    zo32 = np.int32(zo)
    lo, hi = np.int32(0), np.int32(255)
    limit = np.float32(1e9)                 # far outside 8 bits, inside int32
    for r in range(i * th, min(h, (i + 1) * th)):
        row = xf[b, r]
        orow = of[b, r]
        for k in range(w * c):
            p = np.float32(np.int32(np.int32(row[k]) - np.int32(zx))) * gf[k]
            v = min(max(np.float32(p * mult), -limit), limit)
            q = np.int32(np.int32(np.rint(v)) + zo32)
            orow[k] = np.uint8(min(max(q, lo), hi))


@njit(cache=True)
def _dot_rows(x, zx, w, u, acc):
    """acc[j] = sum_c (x[c] - zx) * w[j, c] over contiguous rows of w: int16 operands
    (|x - zx| <= 255, |w| <= 128), int32 products and sums (u: int16 scratch)."""
    for c in range(x.shape[0]):
        u[c] = np.int16(np.int32(x[c]) - np.int32(zx))
    for j in range(w.shape[0]):
        row = w[j]
        a = np.int32(0)
        for c in range(row.shape[0]):
            a += np.int32(np.int32(u[c]) * np.int32(row[c]))
        acc[j] = a


@njit(cache=True)
def _requant_hw(acc, bias, frac_bits, mult, m, shift, zo, lo, rounding, near, out):
    """out[j] = numerics.requant_hw(bias[j] + (acc[j] << frac_bits), mult[j], shift[j], ...)
    for a row of neurons, in float64 with an exact fallback: v = f64(a) * m[j] (m = M 2**-s,
    exact) is within |v| 2**-51 of the exact a M / 2**s (two roundings), so rint(v) is the
    exactly rounded value unless v lies that close to a half-integer; those neurons (near)
    are redone by numerics.requant_hw. Values beyond +-1e9 clamp the same either way."""
    count = 0
    for j in range(acc.shape[0]):
        a = bias[j] + (np.int64(acc[j]) << frac_bits)
        v = min(max(np.float64(a) * m[j], -1e9), 1e9)
        r = np.rint(v)
        close = abs(abs(v - r) - 0.5) <= abs(v) * 2.0 ** -50
        near[j] = close
        count += close
        out[j] = min(max(np.int64(r) + zo, lo), 255)
    if count:
        for j in range(acc.shape[0]):
            if near[j]:
                a = bias[j] + (np.int64(acc[j]) << frac_bits)
                out[j] = nm.requant_hw(a, mult[j], shift[j], zo, lo, rounding)


@njit(cache=True)
def _mean_f32(sums, recip, zx, pooled):
    """The float32 mean (the torch profile's, and the hw profile's with mean_rounding "f32",
    which the datapath reproduces with integer rounding to 24 significant bits) in native
    float32: the same IEEE operations as numerics.mean_torch, so the same codes."""
    zp = np.float32(zx)
    for c in range(sums.shape[0]):
        a = np.float32(np.float32(sums[c]) * recip)
        pooled[c] = min(max(np.rint(np.float32(a + zp)), np.float32(0.0)), np.float32(255.0))


@njit(cache=True)
def _requant_torch(acc, b_int, b_f32, b_mul, mult, zo, lo, out):
    """out[j] = numerics.requant_torch(acc[j], ...) for a row of neurons."""
    for j in range(acc.shape[0]):
        out[j] = nm.requant_torch(np.int64(acc[j]), b_int[j], b_f32[j], b_mul[j], mult[j], zo,
                                  lo)


@njit(cache=True)
def _lookup(codes, table, out):
    """out[c] = table[codes[c]]: the sigmoid table."""
    for c in range(codes.shape[0]):
        out[c] = table[codes[c]]


@njit(cache=True)
def _frames_with(x, th, tw, T, profile, w1, w2, m1, m2, gate_values, plan, split, sums, pooled,
                 hidden, excite, gate, out, acc, tot):
    n, h, w, c = x.shape
    ty, tx = sums.shape[1], sums.shape[2]
    gm = np.empty(w * c, np.float64)
    gf = np.empty(w * c, np.float32)
    codes = np.arange(256).astype(np.float32)
    gh = np.empty(w * c, np.int32)
    gl = np.empty(w * c, np.int32)
    acc1 = np.empty(w1.shape[0], np.int32)
    acc2 = np.empty(w2.shape[0], np.int32)
    scratch = np.empty(max(w1.shape[1], w2.shape[1]), np.int16)
    near = np.empty(max(w1.shape[0], w2.shape[0]), np.bool_)
    mult = np.float32(T.t_mm)
    bottom_short = h % th != 0
    right_short = w % tw != 0
    for b in range(n):
        for i in range(ty):
            _strip_sums(x, b, i, th, tw, T.zx, acc, tot, sums[b, i])
            for j in range(tx):
                kind = (2 * (1 if (i == ty - 1 and bottom_short) else 0)
                        + (1 if (j == tx - 1 and right_short) else 0))
                # The excite MAC, written out here: a jitted call taking T would pass its
                # 41 fields one by one, which costs more than a small tile's arithmetic.
                s_, p_, h_, e_, g_ = (sums[b, i, j], pooled[b, i, j], hidden[b, i, j],
                                      excite[b, i, j], gate[b, i, j])
                if profile == nm.HW:
                    if T.r_mean == nm.F32:  # R 2**-shift: f32(1/n), or narrower
                        _mean_f32(s_, T.h_recip_f32[kind], T.zx, p_)
                    else:
                        nm.squeeze(s_, kind, T, nm.HW, p_)
                    _dot_rows(p_, T.zx, w1, scratch, acc1)
                    _requant_hw(acc1, T.h_b1, T.frac_bits, T.h_m1, m1, T.h_s1, T.zh, T.zh,
                                T.r_fc1, near, h_)
                    _dot_rows(h_, T.zh, w2, scratch, acc2)
                    _requant_hw(acc2, T.h_b2, T.frac_bits, T.h_m2, m2, T.h_s2, T.ze, 0,
                                T.r_fc2, near, e_)
                    _lookup(e_, T.h_lut, g_)            # numerics.sigmoid, hw.gate_bits kept
                else:
                    _mean_f32(s_, T.t_recip[kind], T.zx, p_)
                    _dot_rows(p_, T.zx, w1, scratch, acc1)
                    _requant_torch(acc1, T.t_b1i, T.t_b1f, T.t_b1m, T.t_m1, T.zh, T.zh, h_)
                    _dot_rows(h_, T.zh, w2, scratch, acc2)
                    _requant_torch(acc2, T.t_b2i, T.t_b2f, T.t_b2m, T.t_m2, T.ze, 0, e_)
                    _lookup(e_, T.lut, g_)              # numerics.sigmoid
            if profile == nm.HW:
                _broadcast_hw(x, b, i, th, tw, gate[b, i], T.zx, T.zo, gate_values, plan, split,
                              gm, gh, gl, out)
            else:
                _broadcast_torch(x, b, i, th, tw, gate[b, i], T.zx, T.zo, mult, codes, gf, out)


@njit(cache=True)
def _frames(x, th, tw, T, profile, w1, w2, m1, m2, gate_values, plan, split, sums, pooled, hidden,
            excite, gate, out):
    """Every stage of frames x; the line accumulator's registers as narrow as the tile
    allows (uint16 column sums and int32 tile sums for tiles up to 257 rows)."""
    w, c = x.shape[2], x.shape[3]
    if th <= 257 and 255 * th * tw < 2 ** 31:
        _frames_with(x, th, tw, T, profile, w1, w2, m1, m2, gate_values, plan, split, sums, pooled,
                     hidden, excite, gate, out, np.empty(w * c, np.uint16),
                     np.empty(c, np.int32))
    else:
        _frames_with(x, th, tw, T, profile, w1, w2, m1, m2, gate_values, plan, split, sums, pooled,
                     hidden, excite, gate, out, np.empty(w * c, np.int64),
                     np.empty(c, np.int64))


def _flush():
    from .kernels import _flush_stale_cache
    _flush_stale_cache([_frames, _frames_with, _strip_sums, _spread, _broadcast_hw,
                        _broadcast_torch,
                        _mean_f32, _dot_rows, _requant_hw, _requant_torch,
                        _lookup], "fastpath")


_flush()


def applicable(ip, profile: str) -> bool:
    """Whether this module computes the profile exactly for these parameters."""
    if profile == "torch":
        return True
    return (not ip.hw.saturate and int(ip.hw_mul_shift[0]) <= MAX_EXACT_SHIFT
            and 255 * 255 * _final_multiplier(ip) < MAX_PRODUCT)


def _final_multiplier(ip) -> float:
    """m = M * 2**-s of the hw profile's final multiply (exact in float64: M < 2**31)."""
    return float(ip.hw_mul_mult[0]) * 2.0 ** -int(ip.hw_mul_shift[0])


def _multipliers(mult, shift) -> np.ndarray:
    """M * 2**-s per neuron as float64 (exact: M < 2**31 and the scaling is a power of 2)."""
    return np.ldexp(np.asarray(mult, np.float64), -np.asarray(shift, np.int64))


class Frames:
    """The fast path for one configuration, parameter set and profile.

    Everything that does not depend on the frames is done here, once: the int16 weights,
    the float64 multipliers, the broadcaster's plan, and the compiled kernel for these
    argument types, whose entry
    point is then called directly (numba's dispatcher would re-derive the type of the
    41-field parameter tuple on every call, which costs more than a small frame)."""

    def __init__(self, cfg, ip, profile_code: int):
        self._head = (cfg.tile_rows, cfg.tile_cols, ip.tables(), profile_code,
                      ip.w1.astype(np.int16), ip.w2.astype(np.int16),
                      _multipliers(ip.hw_fc1_mult, ip.hw_fc1_shift),
                      _multipliers(ip.hw_fc2_mult, ip.hw_fc2_shift),
                      np.arange(256) * _final_multiplier(ip),     # g * m, exact
                      *broadcast_plan(int(ip.hw_mul_mult[0]), int(ip.hw_mul_shift[0]),
                                      int(ip.zero_points["output"]), ip.hw.mul_rounding,
                                      ip.hw_gate_table()))
        self._entries = {}              # x.flags.writeable -> compiled entry point

    def __call__(self, x, sums, pooled, hidden, excite, gate, out) -> None:
        """Fill every stage array for frames x (uint8, C-contiguous, [N, H, W, C]; stage
        arrays as in ref_model.kernels.run, freshly allocated)."""
        args = (x, *self._head, sums, pooled, hidden, excite, gate, out)
        entry = self._entries.get(x.flags.writeable)
        if entry is None:
            from numba import typeof
            entry = _frames.compile(tuple(typeof(a) for a in args))
            self._entries[x.flags.writeable] = entry
        entry(*args)
