"""Whole-frame kernels arranged for speed, bit-identical to the per-element kernels.

tse.ref_model.kernels walks the frame element by element through the named stage functions of
tse.ref_model.numerics, which reads as the spec but does not vectorize. This module computes the
same codes with loops a compiler turns into SIMD code (integers kept 32 bits wide or less by
casts: numba widens integer arithmetic to 64 bits, which halves the SIMD lanes or worse):

  - line accumulator: each strip's rows are added, two at a time, into one row of column
    sums (W*C long, contiguous; uint16 while 255 * tile rows fits); the columns of each
    tile are then folded onto the first by halving, in place while the uint16 entries
    cannot overflow, then in int32 (int64 for tiles too large for it), down to the tile's
    C sums; the zero point is subtracted once per tile (sum(x - zx) = sum(x) - n*zx).
  - excite MAC: per tile, the squeeze and sigmoid of tse.ref_model.numerics; the two 1x1 convs
    as int16 products summed in int32 (exact: |sum| <= C * 255 * 128 < 2**31 for
    C < 65536) by simd.madd_pairs, 16 outputs per vector, on weights laid out once by
    simd.pair_layout; each neuron's requantization: the torch profile's own function, the
    hw profile's in float64 with an exact fallback near ties (_requant_hw).
  - tile broadcaster: output = table[gate, x], where table is the 256 x 256 table of
    numerics.scale (the profile's own final multiply, clamp included) for every gate code
    and input code. Computed, per parameter set, by the first of three methods that is
    exact for every entry (fit_scales and fit_lines find their coefficients so that it is,
    by construction; tests check all 65,536 entries):
      SCALE: q = min((x * a[g] + 2**(t-1)) >> t, 255): every row a rounded scaling through
             the origin (zero points that map x = 0 to q = 0, the usual case). One product
             and one coefficient load per element.
      LINE:  q = clamp((x * a[g] + o[g]) >> t, 0, 255): every row a clamped line in int32.
             One product, two coefficient loads per element (the loop is load-bound: about
             two thirds of SCALE's speed).
      TABLE: a lookup, one gather per element: exact for anything, about 9x slower than
             LINE. Needed for half_even ties no line follows (0.5 -> 0, 1.5 -> 2, ...).
    Per strip, each tile's per-gate coefficients are laid out for one block of whole pixels
    (BLOCK elements at most), and each row of the tile is walked block by block.
Serial only. Not used for the hw profile with saturating accumulators, whose result depends
on the order of the additions (the per-element kernel models that order).

Long: the three stages, their packed parameters and scratch (_State) and the broadcaster's
fitting are one compiled kernel whose layout the pieces share (N_SCALARS, the packed arrays'
offsets); split the broadcaster's fitting (fit_scales, fit_lines) out when it grows.
"""
from __future__ import annotations

import functools

import numpy as np
from numba import njit, types
from numba.experimental import structref

from . import edge_tiles
from . import numerics as nm
from . import simd
from .edge_tiles import edge_tile_kind
from .jit_cache import flush_stale_cache
from .simd import VARIANT, ashr32, lshr32, aligned_copy, madd_pairs, pair_layout

BLOCK = 4096
"""Elements (whole pixels) per inner loop of the tile broadcaster: long enough for SIMD loops
to run at speed, short enough that a tile's coefficients stay in L1."""

SCALE, LINE, TABLE = 0, 1, 2
"""Tile broadcaster methods (module docstring), the first that is exact for a parameter set."""

MAX_LINE_SHIFT = 23
"""Largest shift t fit_lines tries: x * a stays inside int32 for slopes up to 1 output code per
input code; steeper tables fit at a smaller t."""


@njit(cache=True)
def _pixels_per_block(c, tile_cols):
    """Whole pixels per block: BLOCK elements, at least one pixel, at most the tile."""
    return max(1, min(tile_cols, BLOCK // c))


# ----------------------------------------------------------------------------------------
# line accumulator
# ----------------------------------------------------------------------------------------

@njit(cache=True)
def _fold_pixels(a, k, c, limit):
    """Fold the k pixels a[p * c:(p + 1) * c] onto the first ones by halving, in place (long
    loops: one loop per pixel would run only C long), while every entry then holds the sum
    of at most `limit` pixels. Returns the pixels left (1: a[:c] is the sum)."""
    n = 1
    while k > 1 and 2 * n <= limit:
        half = k // 2
        top = a[(k - half) * c:k * c]
        for e in range(half * c):
            a[e] += top[e]
        k -= half
        n *= 2
    return k


@njit(cache=True)
def _strip_sums(xf, c, b, i, th, tw, zx, cap, acc, blk, sums):
    """Line accumulator for strip i of frame b: sums[j, c] = sum over tile j of (x - zx), x
    given as xf [N, H, W * C] (C channels).
    acc: one strip row of column sums (uint16 when 255 * th fits, else wider), whose entries
    can each hold the sums of cap pixels; each tile's columns are folded there while that
    holds, and the rest in blk (int32 when 255 * th * tw fits, else int64; W * C long)."""
    h, w = xf.shape[1], xf.shape[2] // c
    r0 = i * th
    r1 = min(h, r0 + th)
    r = r0 + 1
    top = xf[b, r0]
    if r1 - r0 >= 2:
        nxt = xf[b, r0 + 1]
        for e in range(w * c):
            acc[e] = np.uint16(top[e]) + np.uint16(nxt[e])
        r = r0 + 2
    else:
        for e in range(w * c):
            acc[e] = top[e]
    while r + 1 < r1:
        ra, rb = xf[b, r], xf[b, r + 1]
        for e in range(w * c):
            acc[e] += np.uint16(ra[e]) + np.uint16(rb[e])
        r += 2
    if r < r1:
        ra = xf[b, r]
        for e in range(w * c):
            acc[e] += ra[e]
    for j in range(sums.shape[0]):
        c0 = j * tw
        c1 = min(w, c0 + tw)
        tile = acc[c0 * c:c1 * c]
        k = _fold_pixels(tile, c1 - c0, c, cap)
        offset = np.int64(r1 - r0) * (c1 - c0) * zx
        if k == 1:
            for ch in range(c):
                sums[j, ch] = np.int64(tile[ch]) - offset
        else:
            for e in range(k * c):
                blk[e] = tile[e]
            _fold_pixels(blk, k, c, 1 << 62)
            for ch in range(c):
                sums[j, ch] = np.int64(blk[ch]) - offset


# ----------------------------------------------------------------------------------------
# excite MAC
# ----------------------------------------------------------------------------------------

@njit(cache=True, inline='always')
def _pairs(x, zx, pairs):
    """pairs[k] = the int16 pair (x[2k] - zx, x[2k + 1] - zx) in an int32, low half first (a
    missing x[2k + 1] is 0): simd.madd_pairs' inputs. Entries past them are left alone
    (zeros: the padding of the weights' layout)."""
    z = np.int32(zx)
    n = x.shape[0]
    for k in range(n // 2):
        pairs[k] = ((np.int32(x[2 * k]) - z) & 0xFFFF) | ((np.int32(x[2 * k + 1]) - z) << 16)
    if n % 2:
        pairs[n // 2] = (np.int32(x[n - 1]) - z) & 0xFFFF


@njit(cache=True, inline='always')
def _requant_hw(acc, bias, frac_bits, m, zo, lo, near, out):
    """out[j] = numerics.requant_hw(bias[j] + (acc[j] << frac_bits), M[j], s[j], ...) for a
    row of neurons, in float64: v = f64(a) * m[j] (m = M 2**-s, exact) is within
    |v| 2**-51 of the exact a M / 2**s (two roundings), so rint(v) is the exactly rounded
    value unless v lies that close to a half-integer. Those neurons are marked in near and
    counted; the caller redoes them with _requant_hw_exact. Values beyond +-1e9 clamp the
    same either way."""
    count = 0
    for j in range(acc.shape[0]):
        a = bias[j] + (np.int64(acc[j]) << frac_bits)
        v = min(max(np.float64(a) * m[j], -1e9), 1e9)
        r = np.rint(v)
        close = abs(abs(v - r) - 0.5) <= abs(v) * 2.0 ** -50
        near[j] = close
        count += close
        out[j] = min(max(np.int64(r) + zo, lo), 255)
    return count


@njit(cache=True)
def _requant_hw_exact(acc, bias, frac_bits, mult, shift, zo, lo, rounding, near, out):
    """numerics.requant_hw for the neurons _requant_hw marked near a tie. (Kept out of
    _requant_hw: inlined there, it slowed the vectorized loop tenfold even when unused.)"""
    for j in range(acc.shape[0]):
        if near[j]:
            a = bias[j] + (np.int64(acc[j]) << frac_bits)
            out[j] = nm.requant_hw(a, mult[j], shift[j], zo, lo, rounding)


@njit(cache=True, inline='always')
def _mean_f32(sums, recip, zx, pooled):
    """The float32 mean (the torch profile's, and the hw profile's with mean_rounding "f32",
    which the datapath reproduces with integer rounding to 24 significant bits) in native
    float32: the same IEEE operations as numerics.mean_torch, so the same codes."""
    zp = np.float32(zx)
    for c in range(sums.shape[0]):
        a = np.float32(np.float32(sums[c]) * recip)
        pooled[c] = min(max(np.rint(np.float32(a + zp)), np.float32(0.0)), np.float32(255.0))


@njit(cache=True, inline='always')
def _requant_torch(acc, b_int, b_f32, b_mul, mult, zo, lo, out):
    """out[j] = numerics.requant_torch(acc[j], ...) for a row of neurons."""
    for j in range(acc.shape[0]):
        out[j] = nm.requant_torch(np.int64(acc[j]), b_int[j], b_f32[j], b_mul[j], mult[j], zo,
                                  lo)


@njit(cache=True, inline='always')
def _lookup(codes, table, out):
    """out[c] = table[codes[c]]: the gate's table, or SiLU's (in place: out may be codes)."""
    for c in range(codes.shape[0]):
        out[c] = table[codes[c]]


# ----------------------------------------------------------------------------------------
# tile broadcaster
# ----------------------------------------------------------------------------------------

@njit(cache=True)
def broadcast_table(T, profile):
    """table[g, x] = numerics.scale(x, g): the tile broadcaster's output for every gate code
    g and input code x (the definition both methods reproduce)."""
    table = np.empty((256, 256), np.uint8)
    for g in range(256):
        for x in range(256):
            table[g, x] = nm.scale(x, g, T, profile)
    return table


@njit(cache=True)
def _offsets(q, a, t):
    """(lo, hi): the offsets o with clamp((x * a + o) >> t, 0, 255) == q[x] and x * a + o
    inside int32, for every x in 0..255 (none when lo > hi)."""
    lo = -(1 << 31) - min(0, 255 * a)
    hi = (1 << 31) - 1 - max(0, 255 * a)
    for x in range(256):
        if q[x] > 0:                    # (x a + o) >> t >= q: x a + o >= q 2**t
            lo = max(lo, (q[x] << t) - x * a)
        if q[x] < 255:                  # (x a + o) >> t <= q: x a + o < (q + 1) 2**t
            hi = min(hi, ((q[x] + 1) << t) - 1 - x * a)
    return lo, hi


@njit(cache=True)
def _fit_line(q, t):
    """(found, a, o): a slope and offset with clamp((x a + o) >> t, 0, 255) == q[x] for all
    x in 0..255, in int32. The width hi - lo of the offsets that work is a concave function
    of the slope (a minimum of lines minus a maximum of lines), so a binary search on its
    rise finds the slope where it is widest; the row fits if any offset works there."""
    a_lo, a_hi = -((1 << 31) // 255), (1 << 31) // 255
    while a_lo < a_hi:
        mid = (a_lo + a_hi) >> 1
        lo0, hi0 = _offsets(q, mid, t)
        lo1, hi1 = _offsets(q, mid + 1, t)
        if hi1 - lo1 > hi0 - lo0:
            a_lo = mid + 1
        else:
            a_hi = mid
    lo, hi = _offsets(q, a_lo, t)
    return lo <= hi, a_lo, lo


@njit(cache=True)
def fit_lines(table):
    """(t, coef): the largest shift t <= MAX_LINE_SHIFT for which every row of the
    broadcaster table is a clamped int32 line, with coef[0, g], coef[1, g] its slope and
    offset (int32 [2, 256]); t = -1 when no shift works (then the broadcaster looks up
    the table). Steep rows (high gate codes) are tried first: they limit t."""
    coef = np.zeros((2, 256), np.int32)
    q = np.empty(256, np.int64)
    for t in range(MAX_LINE_SHIFT, -1, -1):
        fits = True
        for g in range(255, -1, -1):
            for x in range(256):
                q[x] = table[g, x]
            found, a, o = _fit_line(q, t)
            if not found:
                fits = False
                break
            coef[0, g] = a
            coef[1, g] = o
        if fits:
            return t, coef
    return -1, coef


@njit(cache=True)
def fit_scales(table):
    """(t, a): the largest shift 1 <= t <= MAX_LINE_SHIFT for which every row of the
    broadcaster table is min((x * a[g] + 2**(t-1)) >> t, 255) with 0 <= a[g] and everything
    inside int32 (a line through the origin, rounded: the usual case, zero points that map
    x = 0 to q = 0); t = -1 when none works. For each x > 0 the row bounds a from both sides
    (x a + 2**(t-1) >= q 2**t where q > 0, < (q + 1) 2**t where q < 255); any a between the
    tightest bounds is exact on every x, so the smallest is taken."""
    a = np.zeros(256, np.int32)
    for g in range(256):
        if table[g, 0] != 0:
            return -1, a
    for t in range(MAX_LINE_SHIFT, 0, -1):
        half = 1 << (t - 1)
        fits = True
        for g in range(255, -1, -1):
            a_lo, a_hi = 0, ((1 << 31) - 1 - half) // 255
            for x in range(1, 256):
                q = np.int64(table[g, x])
                if q > 0:
                    a_lo = max(a_lo, -((half - (q << t)) // x))     # ceil((q 2**t - half) / x)
                if q < 255:
                    a_hi = min(a_hi, (((q + 1) << t) - 1 - half) // x)
            if a_lo > a_hi:
                fits = False
                break
            a[g] = a_lo
        if fits:
            return t, a
    return -1, a


@njit(cache=True)
def _repeat_pixel(a, k, c):
    """a[p * c:(p + 1) * c] = a[:c] for the k pixels of a block, by doubling (long copies
    from a separate view: one loop per pixel would run only C long)."""
    done = 1
    while done < k:
        n = min(done, k - done)
        src = a[:n * c]
        dst = a[done * c:(done + n) * c]
        for e in range(n * c):
            dst[e] = src[e]
        done += n


@njit(cache=True)
def _broadcast(xf, c, b, i, th, tw, gate, method, t, coef, flat, ca, co, of):
    """Tile broadcaster for strip i of frame b: out = table[gate, x] (module docstring), x
    and out given as xf and of [N, H, W * C] (C channels), the table as flat [256 * 256].
    gate: [tiles, C] codes of the strip. SCALE: min((x * a + 2**(t-1)) >> t, 255) and
    LINE: clamp((x * a + o) >> t, 0, 255), with a, o = coef[:, g]; TABLE: the flat table at
    g * 256 + x. ca, co: [tiles, >= BLOCK] scratch for each tile's per-element coefficients
    over one block of whole pixels (co: LINE only)."""
    h, w = xf.shape[1], xf.shape[2] // c
    lo, hi = np.int32(0), np.int32(255)
    half = np.uint32(1 << max(t - 1, 0))
    tiles = gate.shape[0]
    for j in range(tiles):
        k = _pixels_per_block(c, min(w, (j + 1) * tw) - j * tw)
        codes, slopes, offsets = gate[j], ca[j], co[j]
        if method == TABLE:
            for ch in range(c):
                slopes[ch] = np.int32(codes[ch]) << 8
        else:
            for ch in range(c):
                slopes[ch] = coef[0, codes[ch]]
        _repeat_pixel(slopes, k, c)
        if method == LINE:
            for ch in range(c):
                offsets[ch] = coef[1, codes[ch]]
            _repeat_pixel(offsets, k, c)
    for r in range(i * th, min(h, (i + 1) * th)):
        row = xf[b, r]
        orow = of[b, r]
        for j in range(tiles):
            c0 = j * tw
            c1 = min(w, c0 + tw)
            k = _pixels_per_block(c, c1 - c0)
            a = ca[j]
            o = co[j]
            for p0 in range(c0, c1, k):
                src = row[p0 * c:min(p0 + k, c1) * c]
                dst = orow[p0 * c:min(p0 + k, c1) * c]
                if method == SCALE:
                    for e in range(src.shape[0]):
                        v = np.uint32(np.uint32(np.uint32(src[e]) * np.uint32(a[e])) + half)
                        dst[e] = np.uint8(min(lshr32(v, t), np.uint32(255)))
                elif method == LINE:
                    for e in range(src.shape[0]):
                        v = np.int32(np.int32(np.int32(src[e]) * a[e]) + o[e])
                        dst[e] = np.uint8(min(max(ashr32(v, t), lo), hi))
                else:
                    for e in range(src.shape[0]):
                        dst[e] = flat[a[e] + np.int32(src[e])]


# ----------------------------------------------------------------------------------------
# parameters: three flat arrays
# ----------------------------------------------------------------------------------------
# What the excite MAC reads, packed into one int64, one float64 and one float32 array (fields
# of _State), in this order; _hw_params / _torch_params slice it back once per call. (Passed
# as the 41-field tuple of numerics, the parameters cost ~1 us per call to unbox.)
#   ints: zx, zh, ze, frac_bits, mean rounding, fc1 rounding, fc2 rounding, torch int16 pair
#         saturation, fc1's output zero point and lower clamp, whether the SiLU table
#         follows (N_SCALARS), then
#         hw:    fc1 bias, multiplier, shift [hidden]; fc2 bias, multiplier, shift [C];
#                sigmoid table [256]; mean reciprocal, its shift [4 tile kinds]
#         torch: fc1 integer bias [hidden]; fc2 integer bias [C]; sigmoid table [256]
#         both, last: the hidden activation's table [256] (ints[-256:])
#   f64:  hw: fc1, fc2 multipliers M 2**-s [hidden], [C]
#   f32:  hw: mean reciprocal R 2**-shift [4]
#         torch: f32(1/n) [4]; fc1 float bias, bias multiplier, multiplier [hidden] each;
#                the same for fc2 [C] each
N_SCALARS = 11
ZX, ZH, ZE, FRAC_BITS, R_MEAN, R_FC1, R_FC2, PAIR_SAT, Z1, LO1, HACT = range(N_SCALARS)


def _pack(ip, profile_code: int):
    """(ints, f64, f32): the parameters of one profile in the layout above."""
    T = ip.tables()
    scalars = [T.zx, T.zh, T.ze, T.frac_bits, T.r_mean, T.r_fc1, T.r_fc2, int(T.t_pair_sat),
               T.z1, T.lo1, int(T.hact)]
    if profile_code == nm.HW:
        ints = [scalars, T.h_b1, T.h_m1, T.h_s1, T.h_b2, T.h_m2, T.h_s2, T.h_lut, T.h_recip,
                T.h_recip_shift]
        f64 = [_multipliers(T.h_m1, T.h_s1), _multipliers(T.h_m2, T.h_s2)]
        f32 = [T.h_recip_f32]
    else:
        ints = [scalars, T.t_b1i, T.t_b2i, T.lut]
        f64 = []
        f32 = [T.t_recip, T.t_b1f, T.t_b1m, T.t_m1, T.t_b2f, T.t_b2m, T.t_m2]
    ints.append(T.hlut)
    return (np.concatenate(ints).astype(np.int64), np.concatenate(f64 or [[0.0]]),
            np.concatenate(f32).astype(np.float32))


def _multipliers(mult, shift) -> np.ndarray:
    """M * 2**-s per neuron as float64 (exact: M < 2**31 and the scaling is a power of 2)."""
    return np.ldexp(np.asarray(mult, np.float64), -np.asarray(shift, np.int64))


@njit(cache=True)
def _hw_params(ints, f64, hid, c):
    """(b1, M1, s1, b2, M2, s2, lut, recip, recip_shift, m1, m2): views of the hw layout."""
    o1 = N_SCALARS                      # fc1: bias, multiplier, shift
    o2 = o1 + 3 * hid                   # fc2: bias, multiplier, shift
    o3 = o2 + 3 * c                     # sigmoid table, mean reciprocal, its shift
    return (ints[o1:o1 + hid], ints[o1 + hid:o1 + 2 * hid], ints[o1 + 2 * hid:o2],
            ints[o2:o2 + c], ints[o2 + c:o2 + 2 * c], ints[o2 + 2 * c:o3],
            ints[o3:o3 + 256], ints[o3 + 256:o3 + 260], ints[o3 + 260:o3 + 264],
            f64[:hid], f64[hid:hid + c])


@njit(cache=True)
def _add_pair_saturation(x, wt, sums):
    """sums[j] += numerics.pair_saturation_excess(x, w[j]) for every neuron j, with the
    weights transposed (wt = w.T, int32 [in, out]) so each pair runs down the neurons as one
    vector loop. A pair with x[2k] + x[2k+1] <= 255 is skipped: |p| <= 128 * 255 < 2**15."""
    n = x.shape[0]
    for k in range(0, n, 2):
        x0 = np.int32(x[k])
        x1 = np.int32(x[k + 1]) if k + 1 < n else np.int32(0)
        if x0 + x1 <= 255:
            continue
        w0, w1 = wt[k], wt[k + 1 if k + 1 < n else k]
        for j in range(sums.shape[0]):
            p = x0 * w0[j] + x1 * w1[j]
            sums[j] += min(max(p, np.int32(-32768)), np.int32(32767)) - p


@njit(cache=True)
def _torch_params(ints, f32, hid, c):
    """(b1i, b2i, lut, recip, b1f, b1m, m1, b2f, b2m, m2): views of the torch layout."""
    o = N_SCALARS
    f1 = 4                              # fc1: float bias, bias multiplier, multiplier
    f2 = f1 + 3 * hid                   # fc2: the same
    return (ints[o:o + hid], ints[o + hid:o + hid + c], ints[o + hid + c:o + hid + c + 256],
            f32[:4], f32[f1:f1 + hid], f32[f1 + hid:f1 + 2 * hid], f32[f1 + 2 * hid:f2],
            f32[f2:f2 + c], f32[f2 + c:f2 + 2 * c], f32[f2 + 2 * c:f2 + 3 * c])


# ----------------------------------------------------------------------------------------
# frames
# ----------------------------------------------------------------------------------------

@njit(cache=True, inline='always')
def _mean_hw(sums, recip, shift, zx, rounding, pooled):
    """numerics.mean_hw per channel (mean roundings other than "f32")."""
    for c in range(sums.shape[0]):
        pooled[c] = nm.mean_hw(sums[c], recip, shift, zx, rounding)


@structref.register
class _StateType(types.StructRef):
    def preprocess_fields(self, fields):
        return tuple((name, types.unliteral(t)) for name, t in fields)


class _State(structref.StructRefProxy):
    """What the compiled kernel reads besides the frames and the stage arrays, as one
    argument (numba unboxes a structref in ~0.1 us, each array in ~30 ns): the parameters
    and the scratch of the stages, allocated once (allocating them per call cost ~0.7 us)."""


_STATE_FIELDS = (
    # parameters: tile shape, profile, the packed arrays, the weights (simd.pair_layout),
    # the broadcaster's method, shift, coefficients and table
    # and transposed, int32 [in, out] (w1, w2: the torch profile's int16 pair saturation)
    "th", "tw", "profile", "ints", "f64", "f32", "wp1", "wp2", "w1", "w2", "method", "t",
    "coef", "table",
    # line accumulator: pixels a column sum may hold, one strip row of column sums (uint16
    # while 255 * th fits), the wider fold; excite MAC: sums and input pairs of fc1 and
    # fc2, near-tie flags; tile broadcaster: per-element coefficients of each tile
    "cap", "acc", "blk", "macs", "pairs", "near", "coefs")
structref.define_proxy(_State, _StateType, list(_STATE_FIELDS))


@njit(cache=True)
def _frames(s, x, sums, codes, hidden, out):
    """Every stage of frames x (codes: pooled, excite and gate, [3, N, ty, tx, C]) with the
    parameters and scratch of s (a _State)."""
    n, h, w, c = x.shape
    hid = hidden.shape[3]
    ty, tx = sums.shape[1], sums.shape[2]
    pooled, excite, gate = codes[0], codes[1], codes[2]
    th, tw, profile, ints, f64, f32 = s.th, s.tw, s.profile, s.ints, s.f64, s.f32
    wp1, wp2, method, t, coef, table = s.wp1, s.wp2, s.method, s.t, s.coef, s.table
    cap, acc, blk, near, coefs = s.cap, s.acc, s.blk, s.near, s.coefs
    zx, zh, ze, frac = ints[ZX], ints[ZH], ints[ZE], ints[FRAC_BITS]
    r_mean, r_fc1, r_fc2 = ints[R_MEAN], ints[R_FC1], ints[R_FC2]
    pair_sat = ints[PAIR_SAT] != 0
    z1, lo1, hact, hlut = ints[Z1], ints[LO1], ints[HACT] != 0, ints[ints.shape[0] - 256:]
    # Both layouts are sliced; only the profile's own views are read.
    b1, M1, s1, b2, M2, s2, h_lut, h_recip, h_shift, m1, m2 = _hw_params(ints, f64, hid, c)
    t_b1i, t_b2i, t_lut, t_recip, t_b1f, t_b1m, t_m1, t_b2f, t_b2m, t_m2 = _torch_params(
        ints, f32, hid, c)
    # fc1 and fc2 on padded outputs and input pairs (simd.pair_layout).
    n1, k1 = wp1.shape[1] // 2, wp1.shape[0]
    acc1, acc2 = s.macs[:n1], s.macs[n1:]
    sums1, sums2 = acc1[:hid], acc2[:c]
    pairs1, pairs2 = s.pairs[:k1], s.pairs[k1:]
    ca, co = coefs[0], coefs[1]
    xf, of = x.reshape(n, h, w * c), out.reshape(n, h, w * c)
    flat = table.reshape(256 * 256)
    bottom_short = h % th != 0
    right_short = w % tw != 0
    for b in range(n):
        for i in range(ty):
            _strip_sums(xf, c, b, i, th, tw, zx, cap, acc, blk, sums[b, i])
            for j in range(tx):
                kind = edge_tile_kind(i, j, ty, tx, bottom_short, right_short)
                # The excite MAC, written out here: a call per tile passing the parameter
                # views costs more (reference counting) than a small tile's arithmetic.
                s_, p_, h_, e_, g_ = (sums[b, i, j], pooled[b, i, j], hidden[b, i, j],
                                      excite[b, i, j], gate[b, i, j])
                if profile == nm.HW:
                    if r_mean == nm.F32:        # R 2**-shift: f32(1/n), or narrower
                        _mean_f32(s_, f32[kind], zx, p_)
                    else:
                        _mean_hw(s_, h_recip[kind], h_shift[kind], zx, r_mean, p_)
                    _pairs(p_, zx, pairs1)
                    madd_pairs(wp1, pairs1, acc1, VARIANT)
                    if _requant_hw(sums1, b1, frac, m1, z1, lo1, near, h_):
                        _requant_hw_exact(sums1, b1, frac, M1, s1, z1, lo1, r_fc1, near, h_)
                    if hact:
                        _lookup(h_, hlut, h_)   # numerics.fc1's SiLU table
                    _pairs(h_, zh, pairs2)
                    madd_pairs(wp2, pairs2, acc2, VARIANT)
                    if _requant_hw(sums2, b2, frac, m2, ze, 0, near, e_):
                        _requant_hw_exact(sums2, b2, frac, M2, s2, ze, 0, r_fc2, near, e_)
                    _lookup(e_, h_lut, g_)      # numerics.sigmoid, hw.gate_bits kept
                else:
                    _mean_f32(s_, t_recip[kind], zx, p_)
                    _pairs(p_, zx, pairs1)
                    madd_pairs(wp1, pairs1, acc1, VARIANT)
                    if pair_sat:
                        _add_pair_saturation(p_, s.w1, sums1)
                    _requant_torch(sums1, t_b1i, t_b1f, t_b1m, t_m1, z1, lo1, h_)
                    if hact:
                        _lookup(h_, hlut, h_)   # numerics.fc1's SiLU table
                    _pairs(h_, zh, pairs2)
                    madd_pairs(wp2, pairs2, acc2, VARIANT)
                    if pair_sat:
                        _add_pair_saturation(h_, s.w2, sums2)
                    _requant_torch(sums2, t_b2i, t_b2f, t_b2m, t_m2, ze, 0, e_)
                    _lookup(e_, t_lut, g_)      # numerics.sigmoid
            _broadcast(xf, c, b, i, th, tw, gate[b, i], method, t, coef, flat, ca, co, of)


def _flush():
    flush_stale_cache([_frames, _strip_sums, _fold_pixels, _pixels_per_block,
                       _pairs, _requant_hw, _requant_hw_exact, _mean_f32,
                       _requant_torch, _lookup, broadcast_table, _offsets, _fit_line,
                       fit_lines, fit_scales, _repeat_pixel, _broadcast, _hw_params,
                       _torch_params, _mean_hw, _add_pair_saturation], "fastpath",
                      (*nm.JIT_SOURCES, simd, edge_tiles))


_flush()


def applicable(ip, profile: str) -> bool:
    """Whether this module computes the profile exactly for these parameters."""
    return profile == "torch" or not ip.hw.saturate


class Frames:
    """The fast path for one configuration, parameter set and profile.

    Everything that does not depend on the frames is done here, once: the packed parameters,
    the weights in simd.pair_layout, the broadcaster's table and method, the stages' scratch
    (all in one _State), and the compiled kernel for these argument types, whose entry point
    is then called directly (numba's dispatcher would re-derive the argument types on every
    call). The scratch makes one call at a time: the kernel holds the GIL, so Python
    threads sharing a Frames take turns."""

    def __init__(self, cfg, ip, profile_code: int):
        self.table = broadcast_table(ip.tables(), profile_code)
        t, slopes = fit_scales(self.table)
        if t >= 0:
            self.method, coef = SCALE, np.stack([slopes, np.zeros_like(slopes)])
        else:
            t, coef = fit_lines(self.table)
            self.method = LINE if t >= 0 else TABLE
        self.shift = max(t, 0)
        th, tw, w, c = cfg.tile_rows, cfg.tile_cols, cfg.width, cfg.channels
        wp1, wp2 = pair_layout(ip.w1), pair_layout(ip.w2)
        if th <= 257 and 255 * th * tw < 2 ** 31:  # column sums in uint16, tile sums in int32
            cap, narrow, wide = 65535 // (255 * th), np.uint16, np.int32
        else:
            cap, narrow, wide = 1 << 62, np.int64, np.int64
        acc, blk = np.empty(w * c, narrow), np.empty(w * c, wide)
        macs = aligned_copy(np.zeros((wp1.shape[1] + wp2.shape[1]) // 2, np.int32))
        pairs = np.zeros(wp1.shape[0] + wp2.shape[0], np.int32)
        coefs = np.empty((2, cfg.tiles_x, max(BLOCK, c)), np.int32)
        wt1, wt2 = (np.ascontiguousarray(w.T, np.int32) for w in (ip.w1, ip.w2))
        self._state = _State(th, tw, profile_code, *_pack(ip, profile_code), wp1, wp2,
                             wt1, wt2, self.method, self.shift, coef, self.table,
                             cap, acc, blk, macs, pairs, np.empty(c, np.bool_), coefs)
        self.calls = {}
        """x.flags.writeable -> call(x, sums, codes, hidden, out): the compiled kernel for
        such frames, its state bound (bind)."""

    def bind(self, x, sums, codes, hidden, out):
        """The compiled kernel for frames like x and these stage arrays (Kernel's), with the
        state bound, kept in self.calls."""
        from numba import typeof
        args = (self._state, x, sums, codes, hidden, out)
        entry = _frames.compile(tuple(typeof(a) for a in args))
        call = self.calls[x.flags.writeable] = functools.partial(entry, self._state)
        return call
