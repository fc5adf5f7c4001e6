"""Whole-frame numba kernels of tiled ECA, tiled SRM and TSE with the paper's 3x1 excite in
the hw profile (issue 18): the golden vectors' generator for these blocks, bit-identical to the
frame-level profile (tse.ref_model.attention_hw's eca_hw_stages / srm_hw_stages /
excite3x1_hw_stages) and to the streaming models (tse.ref_model.attention_streaming,
tse.ref_model.excite3x1_streaming).

    out = eca_frames(cfg, hw_params, x)     # x: uint8 [N, H, W, C] (channels last)
    out = srm_frames(cfg, hw_params, x)
    out = excite3x1_frames(cfg, excite3x1_hw_params(p, cfg), x)   # block "se", excite "3x1"
    out["tile_sums"] (+ "square_sums" for SRM), out["pooled"], (out["std"]), out["excite"],
    out["gate"]: [N, ty, tx, C]; (3x1: out["hidden"] [N, ty, tx, hidden]);
    out["output"]: uint8 [N, H, W, C]

The per-tile arithmetic is attention_hw's (eca_excite_tile, srm_excite_tile, the same functions
the streaming model calls); this module only walks frames, tiles and pixels, serially.

The 3x1 excite (Appendix B): both excite convolutions read three rows of tiles (zero padding
at the frame's top and bottom), so strip i's gates need the pooled values of strips i+1 and
i+2 (plan.lookahead_strips). The kernel walks a frame strip by strip as the unit does: it
accumulates strip s, pools it into a ring of `taps` pooled rows, computes hidden row s-1 (into
a ring of `taps` hidden rows), then excite, gates and output of strip s-2; after the frame's
last strip the remaining rows with the bottom padding. Its working memory is the two rings and
one strip's sums, never a frame of pooled values. conv_tile is the per-tile convolution both
the kernel and the streaming model call.
"""
from __future__ import annotations

import sys

import numpy as np
from numba import njit

from dataclasses import dataclass

from . import attention_hw, edge_tiles
from .attention_hw import (EcaHw, MeanHw, SrmHw, eca_excite_tile, eca_tile_args, mean_tables,
                           squeeze_hw, srm_excite_tile, srm_tile_args)
from .attention_numerics import ConvLayer, Excite3x1Params
from .config import TSEConfig
from .edge_tiles import edge_tile_kind
from .errors import ConfigError
from .hw_numerics import gate_table, mul_hw, quantize_multiplier, requant_hw
from .int_params import conv_tables
from .rounding import ROUNDING_CODES
from .jit_cache import flush_module
from .numerics import check_frames


@njit(cache=True)
def accumulate(x, th, tw, zx, sums, squares, with_squares):
    """The line accumulator over whole frames: S1 (and S2) of every tile."""
    n_frames, height, width, channels = x.shape
    for n in range(n_frames):
        for h in range(height):
            i = h // th
            for w in range(width):
                j = w // tw
                for c in range(channels):
                    d = np.int64(x[n, h, w, c]) - zx
                    sums[n, i, j, c] += d
                    if with_squares:
                        squares[n, i, j, c] += d * d


@njit(cache=True)
def broadcast(x, gate, th, tw, zx, mult, shift, zo, rounding, out):
    """The tile broadcaster: every element times its tile's gate (mul_hw)."""
    n_frames, height, width, channels = x.shape
    for n in range(n_frames):
        for h in range(height):
            for w in range(width):
                for c in range(channels):
                    out[n, h, w, c] = mul_hw(np.int64(x[n, h, w, c]), zx,
                                             np.int64(gate[n, h // th, w // tw, c]), 0, mult,
                                             shift, zo, rounding)


@njit(cache=True)
def _eca_tiles(sums, bottom, right, zx, taps, mult, shift, ze, rounding, lut, recip, rshift,
               mean_rounding, pooled, excite, gate):
    n_frames, ty, tx = sums.shape[0], sums.shape[1], sums.shape[2]
    for n in range(n_frames):
        for i in range(ty):
            for j in range(tx):
                eca_excite_tile(sums[n, i, j], edge_tile_kind(i, j, ty, tx, bottom, right), zx,
                                taps, mult, shift, ze, rounding, lut, recip, rshift,
                                mean_rounding, pooled[n, i, j], excite[n, i, j], gate[n, i, j])


@njit(cache=True)
def _srm_tiles(sums, squares, bottom, right, counts, zx, recip, rshift, mean_rounding,
               var_recip, var_shift, std_mult, std_shift, zstd, mean_mult, mean_shift,
               dev_mult, dev_shift, zs, style_rounding, weights, bias, mult, shift, frac_bits,
               ze, rounding, lut, pooled, std, excite, gate):
    n_frames, ty, tx = sums.shape[0], sums.shape[1], sums.shape[2]
    for n in range(n_frames):
        for i in range(ty):
            for j in range(tx):
                srm_excite_tile(sums[n, i, j], squares[n, i, j],
                                edge_tile_kind(i, j, ty, tx, bottom, right), counts, zx, recip,
                                rshift, mean_rounding, var_recip, var_shift, std_mult,
                                std_shift, zstd, mean_mult, mean_shift, dev_mult, dev_shift,
                                zs, style_rounding, weights, bias, mult, shift, frac_bits, ze,
                                rounding, lut, pooled[n, i, j], std[n, i, j],
                                excite[n, i, j], gate[n, i, j])


def _frames(cfg: TSEConfig, x, block: str):
    if cfg.block != block:
        raise ConfigError(f"block: {cfg.block!r} is not allowed for the {block} kernels; "
                          f"allowed: {block!r}")
    x = check_frames(cfg, x)
    shape = (x.shape[0], cfg.tiles_y, cfg.tiles_x, cfg.channels)
    return x, shape, cfg.height % cfg.tile_rows != 0, cfg.width % cfg.tile_cols != 0


def eca_frames(cfg: TSEConfig, h: EcaHw, x) -> dict:
    """Every stage of tiled ECA (hw profile) on frames x uint8 [N, H, W, C]."""
    x, shape, bottom, right = _frames(cfg, x, "eca")
    sums = np.zeros(shape, np.int64)
    accumulate(x, cfg.tile_rows, cfg.tile_cols, h.zx, sums, sums, False)
    pooled, excite, gate = (np.empty(shape, np.uint8) for _ in range(3))
    _eca_tiles(sums, bottom, right, *eca_tile_args(h), pooled, excite, gate)
    out = np.empty(x.shape, np.uint8)
    broadcast(x, gate, cfg.tile_rows, cfg.tile_cols, h.zx, h.mul_mult, h.mul_shift, h.zo,
              h.mul_rounding, out)
    return {"tile_sums": sums, "pooled": pooled, "excite": excite, "gate": gate,
            "output": out}


def srm_frames(cfg: TSEConfig, h: SrmHw, x) -> dict:
    """Every stage of tiled SRM (hw profile) on frames x uint8 [N, H, W, C]."""
    x, shape, bottom, right = _frames(cfg, x, "srm")
    sums, squares = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    accumulate(x, cfg.tile_rows, cfg.tile_cols, h.zx, sums, squares, True)
    pooled, std, excite, gate = (np.empty(shape, np.uint8) for _ in range(4))
    _srm_tiles(sums, squares, bottom, right, *srm_tile_args(h), pooled, std, excite, gate)
    out = np.empty(x.shape, np.uint8)
    broadcast(x, gate, cfg.tile_rows, cfg.tile_cols, h.zx, h.mul_mult, h.mul_shift, h.zo,
              h.mul_rounding, out)
    return {"tile_sums": sums, "square_sums": squares, "pooled": pooled, "std": std,
            "excite": excite, "gate": gate, "output": out}


# ---- TSE with the paper's 3x1 excite (Appendix B), hw profile ----------------------------

@dataclass(frozen=True)
class ConvHw:
    """One excite convolution over rows of tiles in the hw profile (as
    attention_hw.conv_rows_hw derives it): int8 codes [out, in, taps], the fixed-point bias and
    the requantizer per output (bias_frac_bits folded into shift)."""

    weights: np.ndarray     # int64 [out, in, taps]
    bias: np.ndarray        # int64 [out]
    mult: np.ndarray        # int64 [out]
    shift: np.ndarray       # int64 [out]
    zi: int                 # the input's zero point (a padded row: adds nothing)
    zo: int
    lo: int                 # lower clamp (fc1: zo, the fused ReLU)
    rounding: int


@dataclass(frozen=True)
class Excite3x1Hw:
    zx: int
    fc1: ConvHw
    fc2: ConvHw
    frac_bits: int
    gate_lut: np.ndarray    # int64 [256]: the sigmoid table, hw.gate_bits kept
    mul_mult: int
    mul_shift: int
    zo: int
    mul_rounding: int
    mean: MeanHw

    @property
    def taps(self) -> int:
        return int(self.fc1.weights.shape[2])


def _conv_hw(layer: ConvLayer, zi: int, bits: int, frac_bits: int, rounding: str) -> ConvHw:
    engine, per_channel, w_scale, bias, s_in, s_out = layer.quantization
    *_, hb, hm, hs = conv_tables(engine, per_channel, s_in, w_scale, bias, s_out, bits,
                                 frac_bits)
    return ConvHw(np.ascontiguousarray(layer.weights, np.int64),
                  np.ascontiguousarray(hb, np.int64), np.ascontiguousarray(hm, np.int64),
                  np.ascontiguousarray(hs, np.int64), int(zi), int(layer.zo), int(layer.lo),
                  ROUNDING_CODES[rounding])


def excite3x1_hw_params(p: Excite3x1Params, cfg: TSEConfig) -> Excite3x1Hw:
    """The 3x1 excite's hw parameters from the torch profile's (attention_numerics
    .Excite3x1Params, tse.quant.attention_quantized.excite3x1_params) and cfg.hw."""
    hw, f = cfg.hw, cfg.hw.bias_frac_bits
    mm, ms = quantize_multiplier(float(p.out_mult), hw.mul_multiplier_bits)
    return Excite3x1Hw(
        zx=int(p.zx), fc1=_conv_hw(p.fc1, p.zx, hw.fc1_multiplier_bits, f, hw.fc1_rounding),
        fc2=_conv_hw(p.fc2, p.fc1.zo, hw.fc2_multiplier_bits, f, hw.fc2_rounding),
        frac_bits=f, gate_lut=gate_table(p.gate_table, hw.gate_bits).astype(np.int64),
        mul_mult=mm, mul_shift=ms, zo=int(p.out_zp),
        mul_rounding=ROUNDING_CODES[hw.mul_rounding], mean=mean_tables(cfg))


@njit(cache=True)
def conv_tile(rows, slots, j, weights, bias, mult, shift, zi, zo, lo, rounding, frac_bits,
              out):
    """A taps x 1 convolution for tile column j of one row of tiles: tap t reads
    rows[slots[t], j, :] (slot -1: a padded row beyond the frame's top or bottom, which adds
    nothing); out[o] = requant_hw(bias[o] + (sum w[o, c, t] (code - zi)) << frac_bits)."""
    for o in range(weights.shape[0]):
        acc = np.int64(0)
        for t in range(weights.shape[2]):
            s = slots[t]
            if s >= 0:
                for c in range(weights.shape[1]):
                    acc += weights[o, c, t] * (np.int64(rows[s, j, c]) - zi)
        out[o] = requant_hw(bias[o] + (acc << frac_bits), mult[o], shift[o], zo, lo, rounding)


@njit(cache=True)
def ring_slots(r, tiles_y, half, ring, slots):
    """slots[t]: the ring slot of row r + t - half, -1 outside rows 0..tiles_y-1."""
    for t in range(slots.shape[0]):
        i = r + t - half
        slots[t] = i % ring if 0 <= i < tiles_y else -1


@njit(cache=True)
def _excite3x1(x, th, tw, bottom, right, zx, recip, rshift, mean_rounding,
               w1, b1, m1, s1, zi1, zo1, lo1, r1, w2, b2, m2, s2, zi2, zo2, lo2, r2, frac_bits,
               lut, mul_mult, mul_shift, zo, mul_rounding,
               tile_sums, pooled, hidden, excite, gate, out):
    n_frames, height, width, channels = x.shape
    ty, tx = tile_sums.shape[1], tile_sums.shape[2]
    taps = w1.shape[2]
    half = (taps - 1) // 2
    ring = taps
    prow = np.zeros((ring, tx, channels), np.uint8)      # the last `taps` pooled rows
    hrow = np.zeros((ring, tx, w1.shape[0]), np.uint8)   # the last `taps` hidden rows
    sums = np.zeros((tx, channels), np.int64)            # the line accumulator: one strip
    slots = np.empty(taps, np.int64)
    for n in range(n_frames):
        for s in range(ty + 2 * half):
            if s < ty:                                   # strip s: sums, pooled
                sums[:] = 0
                for h in range(s * th, min(height, (s + 1) * th)):
                    for w in range(width):
                        j = w // tw
                        for c in range(channels):
                            sums[j, c] += np.int64(x[n, h, w, c]) - zx
                for j in range(tx):
                    kind = edge_tile_kind(s, j, ty, tx, bottom, right)
                    for c in range(channels):
                        tile_sums[n, s, j, c] = sums[j, c]
                        p = squeeze_hw(sums[j, c], kind, zx, recip, rshift, mean_rounding)
                        prow[s % ring, j, c] = p
                        pooled[n, s, j, c] = p
            r = s - half                                 # hidden row r: pooled r +- half in
            if 0 <= r < ty:
                ring_slots(r, ty, half, ring, slots)
                for j in range(tx):
                    conv_tile(prow, slots, j, w1, b1, m1, s1, zi1, zo1, lo1, r1, frac_bits,
                              hrow[r % ring, j])
                    hidden[n, r, j] = hrow[r % ring, j]
            e = s - 2 * half                             # excite row e: hidden e +- half in
            if 0 <= e < ty:
                ring_slots(e, ty, half, ring, slots)
                for j in range(tx):
                    conv_tile(hrow, slots, j, w2, b2, m2, s2, zi2, zo2, lo2, r2, frac_bits,
                              excite[n, e, j])
                    for c in range(channels):
                        gate[n, e, j, c] = lut[excite[n, e, j, c]]
                for h in range(e * th, min(height, (e + 1) * th)):   # strip e's output
                    for w in range(width):
                        j = w // tw
                        for c in range(channels):
                            out[n, h, w, c] = mul_hw(np.int64(x[n, h, w, c]), zx,
                                                     np.int64(gate[n, e, j, c]), 0, mul_mult,
                                                     mul_shift, zo, mul_rounding)


def conv_args(layer: ConvHw) -> tuple:
    """conv_tile's parameter arguments of one layer, in order (after rows, slots and j;
    frac_bits follows)."""
    return (layer.weights, layer.bias, layer.mult, layer.shift, layer.zi, layer.zo, layer.lo,
            layer.rounding)


def check_excite3x1(cfg: TSEConfig, h) -> None:
    if cfg.block != "se" or cfg.excite_kernel != "3x1":
        raise ConfigError(f"excite_kernel: block {cfg.block!r} with excite_kernel "
                          f"{cfg.excite_kernel!r} is not allowed for the 3x1 excite; allowed: "
                          "block 'se' with excite_kernel '3x1'")
    if not isinstance(h, Excite3x1Hw):
        raise ConfigError(f"params: {type(h).__name__} is not allowed for the 3x1 excite; "
                          "allowed: Excite3x1Hw (excite3x1_hw_params)")
    if h.fc1.weights.shape[1] != cfg.channels or h.fc2.weights.shape[0] != cfg.channels \
            or h.fc1.weights.shape[0] != h.fc2.weights.shape[1]:
        raise ConfigError(f"params: convolutions {h.fc1.weights.shape} and "
                          f"{h.fc2.weights.shape} are not allowed for C={cfg.channels}; "
                          "allowed: [hidden, C, taps] and [C, hidden, taps]")


def excite3x1_frames(cfg: TSEConfig, h: Excite3x1Hw, x) -> dict:
    """Every stage of TSE with the 3x1 excite (hw profile) on frames x uint8 [N, H, W, C]."""
    check_excite3x1(cfg, h)
    x = check_frames(cfg, x)
    shape = (x.shape[0], cfg.tiles_y, cfg.tiles_x, cfg.channels)
    sums = np.zeros(shape, np.int64)
    pooled, excite, gate = (np.empty(shape, np.uint8) for _ in range(3))
    hidden = np.empty(shape[:3] + (h.fc1.weights.shape[0],), np.uint8)
    out = np.empty(x.shape, np.uint8)
    _excite3x1(x, cfg.tile_rows, cfg.tile_cols, cfg.height % cfg.tile_rows != 0,
               cfg.width % cfg.tile_cols != 0, h.zx, h.mean.recip, h.mean.shift,
               h.mean.rounding, *conv_args(h.fc1), *conv_args(h.fc2), h.frac_bits,
               h.gate_lut, h.mul_mult, h.mul_shift, h.zo, h.mul_rounding,
               sums, pooled, hidden, excite, gate, out)
    return {"tile_sums": sums, "pooled": pooled, "hidden": hidden, "excite": excite,
            "gate": gate, "output": out}


JIT_SOURCES = tuple(dict.fromkeys((*attention_hw.JIT_SOURCES, *edge_tiles.JIT_SOURCES,
                                   sys.modules[__name__])))
"""The modules this module's machine code is compiled from (tse.ref_model.jit_cache)."""
flush_module(globals(), JIT_SOURCES)
