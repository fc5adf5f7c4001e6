"""Whole-frame numba kernels of tiled ECA and tiled SRM in the hw profile (issue 18): the
golden vectors' generator for these blocks, bit-identical to the frame-level profile
(tse.ref_model.attention_hw's eca_hw_stages / srm_hw_stages) and to the streaming model
(tse.ref_model.attention_streaming).

    out = eca_frames(cfg, hw_params, x)     # x: uint8 [N, H, W, C] (channels last)
    out = srm_frames(cfg, hw_params, x)
    out["tile_sums"] (+ "square_sums" for SRM), out["pooled"], (out["std"]), out["excite"],
    out["gate"]: [N, ty, tx, C]; out["output"]: uint8 [N, H, W, C]

The per-tile arithmetic is attention_hw's (eca_excite_tile, srm_excite_tile, the same functions
the streaming model calls); this module only walks frames, tiles and pixels, serially.
"""
from __future__ import annotations

import sys

import numpy as np
from numba import njit

from . import attention_hw, edge_tiles
from .attention_hw import (EcaHw, SrmHw, eca_excite_tile, eca_tile_args, srm_excite_tile,
                           srm_tile_args)
from .config import TSEConfig
from .edge_tiles import edge_tile_kind
from .errors import ConfigError
from .hw_numerics import mul_hw
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


JIT_SOURCES = tuple(dict.fromkeys((*attention_hw.JIT_SOURCES, *edge_tiles.JIT_SOURCES,
                                   sys.modules[__name__])))
"""The modules this module's machine code is compiled from (tse.ref_model.jit_cache)."""
flush_module(globals(), JIT_SOURCES)
