"""The arithmetic of every stage of the TSE unit, dispatched by numerics profile.

Two profiles compute the same block from the same integer parameters:

  torch  reproduces quantized PyTorch (eager mode, fbgemm or qnnpack) code for code, including
         its float32 requantization steps (tse.ref_model.torch_numerics);
  hw     integer-only arithmetic of the RTL: multiply, add, shift, table lookup, saturate,
         every width a field of tse.ref_model.hw_profile.HwProfile (tse.ref_model.hw_numerics).

Written in the style of TFLite's reference kernels: each rounding and clamp is a named
function (tse.ref_model.rounding), and each stage is one function here that picks the profile's
arithmetic. Everything jitted is a numba @njit function on scalars or small arrays, so the
whole-frame kernels (tse.ref_model.kernels) and the cycle-stepped streaming model
(tse.ref_model.streaming) call the very same code; from Python they run as ordinary (slow)
functions. The integer parameters both profiles compute with come from one place,
tse.ref_model.int_params (derive() -> IntParams); docs/numerics.md writes every formula out.

This module owns the profiles, the stage names, the per-stage dispatch, tile kinds and the
input check; it re-exports the public names of the modules above, so `numerics.derive`,
`numerics.round_shift_mul`, ... keep working.

Stages and their arrays (channels last; per-tile stages are [N, tiles_y, tiles_x, C']):
  tile_sums  int64  sum over the tile of (x - zx)                 line accumulator
  pooled     uint8  the tile mean, requantized                    excite MAC: squeeze
  hidden     uint8  ReLU(W1 pooled + b1), requantized             excite MAC: fc1
                    (SiLU: table[W1 pooled + b1, requantized])          (+ the SiLU ROM)
  excite     uint8  W2 hidden + b2, requantized                   excite MAC: fc2
  gate       uint8  gate table[excite] (scale 1/256, zp 0)        excite MAC: gate ROM
                    (sigmoid or hard sigmoid)
                    (hw: hw.gate_bits kept, gate_table)
  output     uint8  x * gate of its tile, requantized             tile broadcaster
"""
from __future__ import annotations

import sys

import numpy as np
from numba import njit

from . import edge_tiles, hw_numerics, int_params, torch_numerics
from .config import TSEConfig
from .edge_tiles import edge_tile_kind
from .errors import ConfigError, InputError
from .jit_cache import flush_module
# Re-exported: the public names of the split-out modules, as numerics.X.
from .hw_numerics import (gate_table, mean_hw, mean_hw_f32, mul_hw,  # noqa: F401
                          quantize_multiplier, requant_hw)
from .int_params import IntParams, Tables, derive, int_params_for  # noqa: F401
from .rounding import (F32, HALF_EVEN, HALF_UP, ROUNDING_CODES, clamp, f32,  # noqa: F401
                       f32_of, floor_shift_mul, fma_f32, rint_to_int, round_half_even_shift,
                       round_half_even_shift_jit, round_shift_mul, round_significant,
                       saturating_add)
from .torch_numerics import (gate_lut, hardsigmoid_table, mean_torch,  # noqa: F401
                             mul_torch, pair_saturation_excess, requant_torch, sigmoid_table,
                             silu_table)

PROFILES = ("torch", "hw")
TORCH, HW = 0, 1
"""Profile codes passed to the jitted functions."""
STAGES = ("tile_sums", "pooled", "hidden", "excite", "gate", "output")


# =====================================================================================
# Stages, dispatched by profile (the functions both implementations call)
# =====================================================================================

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
    """Excite MAC, fc1 and the hidden activation: ReLU fused (lower clamp at the hidden zero
    point), or SiLU: fc1's code (its own zero point, no clamp but 0) through the SiLU table
    (the same table in both profiles: the RTL's ROM)."""
    sat = _fc(pooled, T.zx, T.w1, T.t_b1i, T.t_b1f, T.t_b1m, T.t_m1, T.h_b1, T.h_m1, T.h_s1,
              T.z1, T.lo1, T.fc1_lo, T.fc1_hi, T.r_fc1, T, profile, hidden)
    if T.hact:
        for j in range(hidden.shape[0]):
            hidden[j] = T.hlut[hidden[j]]
    return sat


@njit(cache=True)
def fc2(hidden, T, profile, excite):
    """Excite MAC, fc2 (no activation: lower clamp 0)."""
    return _fc(hidden, T.zh, T.w2, T.t_b2i, T.t_b2f, T.t_b2m, T.t_m2, T.h_b2, T.h_m2, T.h_s2,
               T.ze, 0, T.fc2_lo, T.fc2_hi, T.r_fc2, T, profile, excite)


@njit(cache=True)
def sigmoid(excite, T, gate, profile=TORCH):
    """Excite MAC, the gate (sigmoid or hard sigmoid, whichever the configuration's): the
    256-entry table indexed by the excite code. torch: the quantized gate's 8-bit codes;
    hw: the same table with hw.gate_bits kept (gate_table:
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
    """Edge-tile kind of tile (i, j) of cfg's frame (tse.ref_model.edge_tiles)."""
    return int(edge_tile_kind(i, j, cfg.tiles_y, cfg.tiles_x,
                              cfg.height % cfg.tile_rows != 0, cfg.width % cfg.tile_cols != 0))


JIT_SOURCES = tuple(dict.fromkeys((*torch_numerics.JIT_SOURCES, *hw_numerics.JIT_SOURCES,
                                   *edge_tiles.JIT_SOURCES, int_params,
                                   sys.modules[__name__])))
"""The modules the jitted stage functions are compiled from (int_params for Tables, whose
fields type every call). A kernel calling them passes these to jit_cache.flush_stale_cache."""
flush_module(globals(), JIT_SOURCES)
