"""The hw profile of tiled ECA and tiled SRM (issue 18): the integer datapath a unit would
compute (and TSE's 3x1 excite: excite3x1_hw_stages), every multiplier an integer and a
shift, the widths of cfg.hw
(tse.ref_model.hw_profile; the extra SRM registers: tse.ref_model.attention_widths).

Owns the blocks' integer parameters (EcaHw, SrmHw, from the torch profile's parameters of
tse.ref_model.attention_numerics and a configuration), the per-tile excite arithmetic as numba
functions on one tile (eca_excite_tile, srm_excite_tile: what the kernels and the streaming
model call) and the frame-level profile in numpy (eca_hw_stages, srm_hw_stages; NCHW like the
torch profile, so the two compare stage for stage).

ECA (d = x - zx, channels c of one tile):
    pooled   the tile mean as SE's squeeze (hw_numerics.mean_hw_f32 / mean_hw, hw.mean_rounding)
    acc[c]   sum_t tap[t] (pooled[c + t - (k-1)/2] - zx), zero padding (a padded tap adds 0)
    excite   requant_hw(acc, M, s, ze, 0, hw.fc2_rounding), M of hw.fc2_multiplier_bits
             (no bias: the torch profile's f32 multiplier as an integer and a shift)
    gate     the sigmoid table with hw.gate_bits kept; output = mul_hw (as SE)

SRM (the line accumulator also sums squares):
    S1, S2   sum d, sum d^2 over the tile's n elements
    pooled   as ECA
    D        n S2 - S1^2 (= n^2 x the biased variance, exact)
    V        round_half_up(D 2^24 / (n (n - 1)))      the unbiased variance, 24 fractional
             bits: D times the reciprocal of n (n - 1) (hw_profile.reciprocal, hw.reciprocal_bits)
    r        isqrt_nearest(V): floor(sqrt(V) + 1/2), ROUND HALF UP (no tie can occur: the
             root of an integer is never k + 1/2) = the deviation with 12 fractional bits
    std      requant_hw(r, M_std, s_std + 12, zstd): M_std / 2^s_std ~ f32(s_in) f32(1/s_std)
    style    the mean and the deviation requantized to the pair's qparams (hw.fc1 multipliers
             and rounding): sm = requant((pooled - zx) m_in), ss = requant((std - zstd) m_std)
    acc[c]   bias[c] + (w[c,0] (sm - zs) + w[c,1] (ss - zs)) << hw.bias_frac_bits
             (the folded batch norm's bias, fixed point, as SE's fc layers)
    excite   requant_hw(acc, M[c], s[c], ze, 0, hw.fc2_rounding); gate, output as ECA

The quantized PyTorch reference computes the deviation in float32 between stubs (the float
block's formula on the dequantized input, attention_numerics.srm_deviation); the hw profile
computes it exactly from integer sums and rounds once, so its std codes can differ by one
where the float32 steps round across a code boundary: docs/numerics.md has the measured
distance. fbgemm's int16 pair saturation is a quirk of the CPU kernels, not of this datapath.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
from numba import njit

from . import hw_numerics
from .attention_numerics import (ConvLayer, EcaParams, Excite3x1Params, SrmParams,
                                 SrmQuantParams)
from .attention_widths import STD_FRAC_BITS
from .config import TSEConfig
from .hw_numerics import gate_table, mean_hw, mean_hw_f32, mul_hw, quantize_multiplier, requant_hw
from .hw_profile import reciprocal, tile_counts
from .int_params import conv_tables
from .jit_cache import flush_module
from .rounding import F32 as MEAN_F32
from .rounding import HALF_UP, ROUNDING_CODES, f32_of, round_shift_mul


@dataclass(frozen=True)
class MeanHw:
    """The squeeze's reciprocals per tile kind (hw_profile.tile_counts' order)."""

    counts: np.ndarray      # int64 [4]: elements of each tile kind
    recip: np.ndarray       # int64 [4]
    shift: np.ndarray       # int64 [4]
    rounding: int           # ROUNDING_CODES of hw.mean_rounding


def mean_tables(cfg: TSEConfig) -> MeanHw:
    counts = tile_counts(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols)
    f32 = cfg.hw.mean_rounding == "f32"
    rs = [reciprocal(int(n), cfg.hw.reciprocal_bits, f32) for n in counts]
    return MeanHw(np.array(counts, np.int64), np.array([r for r, _ in rs], np.int64),
                  np.array([s for _, s in rs], np.int64),
                  ROUNDING_CODES[cfg.hw.mean_rounding])


@dataclass(frozen=True)
class EcaHw:
    zx: int
    taps: np.ndarray        # int64 [k]
    mult: int
    shift: int
    ze: int
    rounding: int
    gate_lut: np.ndarray    # int64 [256]: the sigmoid table, hw.gate_bits kept
    mul_mult: int
    mul_shift: int
    zo: int
    mul_rounding: int
    mean: MeanHw


def eca_hw_params(p: EcaParams, cfg: TSEConfig) -> EcaHw:
    """ECA's hw parameters from the torch profile's (attention_numerics.prepare_eca)."""
    hw = cfg.hw
    m, s = quantize_multiplier(float(p.excite_mult), hw.fc2_multiplier_bits)
    mm, ms = quantize_multiplier(float(p.out_mult), hw.mul_multiplier_bits)
    return EcaHw(zx=p.zx, taps=np.ascontiguousarray(p.taps, np.int64), mult=m, shift=s,
                 ze=p.excite_zp, rounding=ROUNDING_CODES[hw.fc2_rounding],
                 gate_lut=gate_table(p.gate_table, hw.gate_bits).astype(np.int64),
                 mul_mult=mm, mul_shift=ms, zo=p.out_zp,
                 mul_rounding=ROUNDING_CODES[hw.mul_rounding], mean=mean_tables(cfg))


@dataclass(frozen=True)
class SrmHw:
    zx: int
    var_recip: np.ndarray   # int64 [4]: reciprocal of n (n - 1) per tile kind
    var_shift: np.ndarray   # int64 [4]: its shift less the variance's fractional bits
    std_mult: int
    std_shift: int          # STD_FRAC_BITS included
    zstd: int
    mean_mult: int          # (pooled - zx) -> style
    mean_shift: int
    dev_mult: int           # (std - zstd) -> style
    dev_shift: int
    zs: int
    style_rounding: int
    weights: np.ndarray     # int64 [C, 2]
    bias: np.ndarray        # int64 [C]: fixed point, hw.bias_frac_bits
    mult: np.ndarray        # int64 [C]
    shift: np.ndarray       # int64 [C]: bias_frac_bits included
    frac_bits: int
    ze: int
    rounding: int
    gate_lut: np.ndarray
    mul_mult: int
    mul_shift: int
    zo: int
    mul_rounding: int
    mean: MeanHw


def srm_hw_params(q: SrmQuantParams, p: SrmParams, cfg: TSEConfig) -> SrmHw:
    """SRM's hw parameters from the converted block's (q) and the torch profile's (p)."""
    hw = cfg.hw
    sc, zp = q.scales, q.zero_points
    mean = mean_tables(cfg)
    vr = [reciprocal(int(n * (n - 1)), hw.reciprocal_bits) for n in mean.counts]

    def ratio(s_from, s_to, bits):     # f32(s_from) * f32(1 / f32(s_to)), as quantized() does
        inv = f32_of(np.float32(1.0) / f32_of(s_to))
        return quantize_multiplier(float(np.float64(f32_of(s_from)) * np.float64(inv)), bits)

    b1 = hw.fc1_multiplier_bits
    std_m, std_s = ratio(sc["input"], sc["std"], b1)
    mean_m, mean_s = ratio(sc["input"], sc["style"], b1)
    dev_m, dev_s = ratio(sc["std"], sc["style"], b1)
    f = hw.bias_frac_bits
    *_, h_bias, h_mult, h_shift = conv_tables(q.engine, q.per_channel, sc["style"],
                                              q.weight_scale, q.bias, sc["excite"],
                                              hw.fc2_multiplier_bits, f)
    mm, ms = quantize_multiplier(float(p.out_mult), hw.mul_multiplier_bits)
    return SrmHw(
        zx=int(zp["input"]), var_recip=np.array([r for r, _ in vr], np.int64),
        var_shift=np.array([s - 2 * STD_FRAC_BITS for _, s in vr], np.int64),
        std_mult=std_m, std_shift=std_s + STD_FRAC_BITS, zstd=int(zp["std"]),
        mean_mult=mean_m, mean_shift=mean_s, dev_mult=dev_m, dev_shift=dev_s,
        zs=int(zp["style"]), style_rounding=ROUNDING_CODES[hw.fc1_rounding],
        weights=np.ascontiguousarray(q.weights, np.int64), bias=h_bias, mult=h_mult,
        shift=h_shift, frac_bits=f, ze=int(zp["excite"]),
        rounding=ROUNDING_CODES[hw.fc2_rounding],
        gate_lut=gate_table(p.gate_table, hw.gate_bits).astype(np.int64), mul_mult=mm,
        mul_shift=ms, zo=int(zp["output"]), mul_rounding=ROUNDING_CODES[hw.mul_rounding],
        mean=mean)


# ---- per-tile arithmetic (numba; the kernels and the streaming model call these) ----------

@njit(cache=True)
def squeeze_hw(s, kind, zx, recip, shift, rounding):
    """One channel's tile mean (SE's squeeze in the hw profile)."""
    if rounding == MEAN_F32:
        return mean_hw_f32(s, recip[kind], shift[kind], zx)
    return mean_hw(s, recip[kind], shift[kind], zx, rounding)


@njit(cache=True)
def isqrt_nearest(v):
    """floor(sqrt(v) + 1/2) of an integer 0 <= v < 2**62: the integer root r = floor(sqrt(v)),
    plus one when v > r^2 + r ((r + 1/2)^2 = r^2 + r + 1/4; no tie for an integer v)."""
    r = np.int64(np.sqrt(np.float64(v)))
    while r * r > v:
        r -= 1
    while (r + 1) * (r + 1) <= v:
        r += 1
    return r + 1 if v - r * r > r else r


@njit(cache=True)
def eca_excite_tile(sums, kind, zx, taps, mult, shift, ze, rounding, lut, recip, rshift,
                    mean_rounding, pooled, excite, gate):
    """ECA's excite for one tile: sums [C] -> pooled, excite, gate [C]."""
    c_n = sums.shape[0]
    for c in range(c_n):
        pooled[c] = squeeze_hw(sums[c], kind, zx, recip, rshift, mean_rounding)
    half = (taps.shape[0] - 1) // 2
    for c in range(c_n):
        acc = np.int64(0)
        for t in range(taps.shape[0]):
            i = c + t - half
            if 0 <= i < c_n:
                acc += taps[t] * (np.int64(pooled[i]) - zx)
        excite[c] = requant_hw(acc, mult, shift, ze, 0, rounding)
        gate[c] = lut[excite[c]]


@njit(cache=True)
def srm_deviation_code(s1, s2, n, kind, var_recip, var_shift, std_mult, std_shift, zstd,
                       rounding):
    """The deviation's code from one channel's S1, S2 over n elements."""
    d = n * s2 - s1 * s1
    v = round_shift_mul(d, var_recip[kind], 0, var_shift[kind], HALF_UP)
    return requant_hw(isqrt_nearest(v), std_mult, std_shift, zstd, 0, rounding)


@njit(cache=True)
def srm_excite_tile(sums, squares, kind, counts, zx, recip, rshift, mean_rounding,
                    var_recip, var_shift, std_mult, std_shift, zstd, mean_mult, mean_shift,
                    dev_mult, dev_shift, zs, style_rounding, weights, bias, mult, shift,
                    frac_bits, ze, rounding, lut, pooled, std, excite, gate):
    """SRM's excite for one tile: sums, squares [C] -> pooled, std, excite, gate [C]."""
    n = counts[kind]
    for c in range(sums.shape[0]):
        pooled[c] = squeeze_hw(sums[c], kind, zx, recip, rshift, mean_rounding)
        std[c] = srm_deviation_code(sums[c], squares[c], n, kind, var_recip, var_shift,
                                    std_mult, std_shift, zstd, style_rounding)
        sm = requant_hw(np.int64(pooled[c]) - zx, mean_mult, mean_shift, zs, 0,
                        style_rounding)
        ss = requant_hw(np.int64(std[c]) - zstd, dev_mult, dev_shift, zs, 0, style_rounding)
        acc = bias[c] + ((weights[c, 0] * (sm - zs) + weights[c, 1] * (ss - zs)) << frac_bits)
        excite[c] = requant_hw(acc, mult[c], shift[c], ze, 0, rounding)
        gate[c] = lut[excite[c]]


def eca_tile_args(h: EcaHw) -> tuple:
    """eca_excite_tile's parameter arguments, in order (after sums and kind)."""
    return (h.zx, h.taps, h.mult, h.shift, h.ze, h.rounding, h.gate_lut, h.mean.recip,
            h.mean.shift, h.mean.rounding)


def srm_tile_args(h: SrmHw) -> tuple:
    """srm_excite_tile's parameter arguments, in order (after sums, squares and kind)."""
    return (h.mean.counts, h.zx, h.mean.recip, h.mean.shift, h.mean.rounding, h.var_recip,
            h.var_shift, h.std_mult, h.std_shift, h.zstd, h.mean_mult, h.mean_shift,
            h.dev_mult, h.dev_shift, h.zs, h.style_rounding, h.weights, h.bias, h.mult,
            h.shift, h.frac_bits, h.ze, h.rounding, h.gate_lut)


# ---- the frame-level profile (numpy, NCHW: stage for stage beside the torch profile) ------

def _tiles(x: np.ndarray, tile) -> tuple:
    """Tiles down and across, and each tile's kind [ty, tx] (hw_profile.tile_counts' order:
    2 * partial row + partial column), of codes x [N, C, H, W]."""
    n, c, h, w = x.shape
    kh, kw = tile
    ty, tx = -(-h // kh), -(-w // kw)
    return ty, tx, np.array([[2 * int(i == ty - 1 and h % kh != 0)
                              + int(j == tx - 1 and w % kw != 0) for j in range(tx)]
                             for i in range(ty)])


def _tile_sums(v: np.ndarray, tile) -> np.ndarray:
    n, c, h, w = v.shape
    kh, kw = tile
    ty, tx = -(-h // kh), -(-w // kw)
    out = np.zeros((n, c, ty, tx), np.int64)
    for i in range(ty):
        for j in range(tx):
            out[:, :, i, j] = v[:, :, i * kh:(i + 1) * kh, j * kw:(j + 1) * kw].sum(axis=(2, 3))
    return out


def _broadcast(x, gate, tile, zx, mult, shift, zo, rounding) -> np.ndarray:
    kh, kw = tile
    g = np.repeat(np.repeat(gate, kh, axis=2), kw, axis=3)[:, :, :x.shape[2], :x.shape[3]]
    out = np.empty(x.shape, np.uint8)
    for idx in np.ndindex(*x.shape):
        out[idx] = mul_hw(np.int64(x[idx]), zx, np.int64(g[idx]), 0, mult, shift, zo, rounding)
    return out


def _pooled(sums, kinds, h: MeanHw, zx) -> np.ndarray:
    pooled = np.empty(sums.shape, np.uint8)
    for idx in np.ndindex(*sums.shape):
        pooled[idx] = squeeze_hw(sums[idx], kinds[idx[2], idx[3]], zx, h.recip, h.shift,
                                 h.rounding)
    return pooled


def _requant(acc, mult, shift, zo, rounding, lo=0) -> np.ndarray:
    """requant_hw elementwise; mult and shift broadcast along the channel axis 1."""
    mult = np.broadcast_to(np.asarray(mult, np.int64).reshape(-1, *[1] * (acc.ndim - 2)),
                           acc.shape[1:])
    shift = np.broadcast_to(np.asarray(shift, np.int64).reshape(-1, *[1] * (acc.ndim - 2)),
                            acc.shape[1:])
    out = np.empty(acc.shape, np.uint8)
    for idx in np.ndindex(*acc.shape):
        out[idx] = requant_hw(np.int64(acc[idx]), mult[idx[1:]], shift[idx[1:]], zo, lo,
                              rounding)
    return out


def eca_hw_stages(x: np.ndarray, tile, h: EcaHw) -> dict:
    """Codes of every stage of tiled ECA in the hw profile, x uint8 [N, C, H, W]."""
    ty, tx, kinds = _tiles(x, tile)
    sums = _tile_sums(x.astype(np.int64) - h.zx, tile)
    pooled = _pooled(sums, kinds, h.mean, h.zx)
    k, c = len(h.taps), x.shape[1]
    half = (k - 1) // 2
    padded = np.zeros((x.shape[0], c + k - 1, ty, tx), np.int64)
    padded[:, half:half + c] = pooled.astype(np.int64) - h.zx
    acc = sum(h.taps[t] * padded[:, t:t + c] for t in range(k))
    excite = _requant(acc, h.mult, h.shift, h.ze, h.rounding)
    gate = h.gate_lut[excite].astype(np.uint8)
    out = _broadcast(x, gate, tile, h.zx, h.mul_mult, h.mul_shift, h.zo, h.mul_rounding)
    return {"input": x, "tile_sums": sums, "pooled": pooled, "excite": excite, "gate": gate,
            "output": out}


def srm_hw_stages(x: np.ndarray, tile, h: SrmHw) -> dict:
    """Codes of every stage of tiled SRM in the hw profile, x uint8 [N, C, H, W]."""
    ty, tx, kinds = _tiles(x, tile)
    d = x.astype(np.int64) - h.zx
    s1, s2 = _tile_sums(d, tile), _tile_sums(d * d, tile)
    pooled = _pooled(s1, kinds, h.mean, h.zx)
    std = np.empty(s1.shape, np.uint8)
    for idx in np.ndindex(*s1.shape):
        kind = kinds[idx[2], idx[3]]
        std[idx] = srm_deviation_code(s1[idx], s2[idx], h.mean.counts[kind], kind,
                                      h.var_recip, h.var_shift, h.std_mult, h.std_shift,
                                      h.zstd, h.style_rounding)
    sm = _requant(pooled.astype(np.int64) - h.zx, h.mean_mult, h.mean_shift, h.zs,
                  h.style_rounding).astype(np.int64)
    ss = _requant(std.astype(np.int64) - h.zstd, h.dev_mult, h.dev_shift, h.zs,
                  h.style_rounding).astype(np.int64)
    w0 = h.weights[:, 0][None, :, None, None]
    w1 = h.weights[:, 1][None, :, None, None]
    acc = h.bias[None, :, None, None] + ((w0 * (sm - h.zs) + w1 * (ss - h.zs)) << h.frac_bits)
    excite = _requant(acc, h.mult, h.shift, h.ze, h.rounding)
    gate = h.gate_lut[excite].astype(np.uint8)
    out = _broadcast(x, gate, tile, h.zx, h.mul_mult, h.mul_shift, h.zo, h.mul_rounding)
    return {"input": x, "tile_sums": s1, "square_sums": s2, "pooled": pooled, "std": std,
            "style": np.stack([sm, ss], -1).astype(np.uint8), "excite": excite, "gate": gate,
            "output": out}


# ---- TSE with the paper's 3x1 excite (Appendix B), hw profile -------------------------------
#
#     pooled  as SE's squeeze (the mean of hw.mean_rounding)
#     hidden  requant_hw(b1 + (sum_t sum_c w1[j, c, t] (pooled[c, i + t - 1] - zx)) << f,
#             fc1's multiplier and rounding, lower clamp zh: the fused ReLU)
#             rows of tiles i; zero padding at the frame's top and bottom (a padded row is
#             the zero point: it adds nothing)
#     excite  the same over the hidden rows with fc2's multiplier and rounding
#     gate, output as ECA (fbgemm's int16 pairs: not this datapath's)

def conv_rows_hw(codes: np.ndarray, z: int, layer: ConvLayer, bits: int, frac_bits: int,
                 rounding: int) -> np.ndarray:
    """A taps x 1 convolution over the rows of tiles of codes [N, C, ty, tx] in the hw
    profile: the bias as a fixed-point value (int_params.conv_tables), integer products,
    requant_hw."""
    engine, per_channel, w_scale, bias, s_in, s_out = layer.quantization
    *_, hb, hm, hs = conv_tables(engine, per_channel, s_in, w_scale, bias, s_out, bits,
                                 frac_bits)
    n, c, ty, tx = codes.shape
    taps = layer.weights.shape[2]
    half = (taps - 1) // 2
    raw = np.full((n, c, ty + taps - 1, tx), z, np.int64)
    raw[:, :, half:half + ty] = codes
    acc = np.zeros((n, layer.weights.shape[0], ty, tx), np.int64)
    for t in range(taps):
        acc += np.einsum("oc,ncyx->noyx", layer.weights[:, :, t], raw[:, :, t:t + ty] - z)
    acc = hb[None, :, None, None] + (acc << frac_bits)
    return _requant(acc, hm, hs, layer.zo, rounding, layer.lo)


def excite3x1_hw_stages(x: np.ndarray, cfg: TSEConfig, p: Excite3x1Params) -> dict:
    """Codes of every stage of the 3x1-excite TSE block in the hw profile of cfg (its tile
    and [hw]), x uint8 [N, C, H, W]; p: attention_numerics.Excite3x1Params."""
    hw, f = cfg.hw, cfg.hw.bias_frac_bits
    tile = (cfg.tile_rows, cfg.tile_cols)
    _, _, kinds = _tiles(x, tile)
    sums = _tile_sums(x.astype(np.int64) - p.zx, tile)
    pooled = _pooled(sums, kinds, mean_tables(cfg), p.zx)
    hidden = conv_rows_hw(pooled, p.zx, p.fc1, hw.fc1_multiplier_bits, f,
                          ROUNDING_CODES[hw.fc1_rounding])
    excite = conv_rows_hw(hidden, p.fc1.zo, p.fc2, hw.fc2_multiplier_bits, f,
                          ROUNDING_CODES[hw.fc2_rounding])
    gate = gate_table(p.gate_table, hw.gate_bits)[excite].astype(np.uint8)
    mm, ms = quantize_multiplier(float(p.out_mult), hw.mul_multiplier_bits)
    out = _broadcast(x, gate, tile, p.zx, mm, ms, p.out_zp, ROUNDING_CODES[hw.mul_rounding])
    return {"input": x, "tile_sums": sums, "pooled": pooled, "hidden": hidden,
            "excite": excite, "gate": gate, "output": out}


JIT_SOURCES = (*hw_numerics.JIT_SOURCES, sys.modules[__name__])
"""The modules this module's machine code is compiled from (tse.ref_model.jit_cache)."""
flush_module(globals(), JIT_SOURCES)
