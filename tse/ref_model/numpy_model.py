"""The hw profile as straightforward vectorized numpy: a second, independent implementation.

Written from the hw profile's definition (docs/numerics.md), not from the numba code: whole
arrays of tile sums, exact wide integer products (Python integers where a product can exceed
64 bits), one rounding rule per requantizer. It is the `numpy` baseline of `tse bench` and an
oracle the tests hold the numba kernels to. Non-saturating widths only.
"""
from __future__ import annotations

import numpy as np

from .config import TSEConfig
from .edge_tiles import kind_table
from .errors import ConfigError
from .numerics import IntParams, check_frames, gate_table

HALF = {"half_up", "half_even"}


def round_shift(v: np.ndarray, shift: np.ndarray, rounding: str) -> np.ndarray:
    """round(v / 2**shift) for integer arrays (int64 or Python-int object arrays)."""
    one = np.ones_like(v)
    q = v >> shift
    rem = v - (q << shift)
    half = (one << shift) >> 1
    up = (rem > half) | ((rem == half) & (shift > 0) &
                         ((rounding == "half_up") | ((q & 1) == 1)))
    return q + up.astype(v.dtype if v.dtype != object else np.int64)


def tile_sums(x: np.ndarray, cfg: TSEConfig, zx: int) -> np.ndarray:
    """Sum of (x - zx) over every tile: [N, tiles_y, tiles_x, C] int64."""
    n, h, w, c = x.shape
    th, tw = cfg.tile_rows, cfg.tile_cols
    ty, tx = cfg.tiles_y, cfg.tiles_x
    padded = np.zeros((n, ty * th, tx * tw, c), np.int64)
    padded[:, :h, :w] = x.astype(np.int64) - zx
    return padded.reshape(n, ty, th, tx, tw, c).sum(axis=(2, 4))


def tile_kinds(cfg: TSEConfig) -> np.ndarray:
    """Edge-tile kind of every tile [tiles_y, tiles_x] (tse.ref_model.edge_tiles)."""
    return kind_table(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols)


def mean(sums: np.ndarray, kinds: np.ndarray, ip: IntParams, zp: int) -> np.ndarray:
    """The mean requantizer. "f32": PyTorch's float32 mean, which the hw datapath reproduces
    with integer rounding to 24 significant bits; here it is plain float32 arithmetic:
    q = rint(f32(f32(f32(S) * r) + zp)) with r = R[n] / 2**shift, which is f32(1/n) itself
    for reciprocal_bits >= 24 and f32(1/n) rounded to fewer significant bits below (a
    float32 either way). "half_up"/"half_even": q = round(S / n + zp)
    via S * R[n]: the floor of (S R + zp 2**s) / 2**s, then the comparator on the remainder
    that decides the rounding exactly (docs/numerics.md)."""
    if ip.hw.mean_rounding == "f32":
        recip = np.ldexp(ip.hw_recip.astype(np.float64), -ip.hw_recip_shift).astype(np.float32)
        recip = recip[kinds][None, :, :, None]
        a = (sums.astype(np.float32) * recip).astype(np.float32)
        return np.clip(np.rint((a + np.float32(zp)).astype(np.float32)), 0, 255).astype(np.int64)
    r = ip.hw_recip[kinds][None, :, :, None]
    s = ip.hw_recip_shift[kinds][None, :, :, None]
    t = sums * r + (np.int64(zp) << s)
    q0 = t >> s
    rem = t - (q0 << s)
    d2 = 4 * rem - (np.int64(2) << s)
    if ip.hw.mean_rounding == "half_up":
        up = d2 > -r
    else:
        up = (d2 >= r) | ((-r < d2) & ((q0 & 1) == 1))
    return np.clip(q0 + up, 0, 255)


def fc(x: np.ndarray, zx: int, w: np.ndarray, bias, mult, shift, zo: int, lo: int,
       frac_bits: int, rounding: str) -> np.ndarray:
    """1x1 conv on every tile: round((bias + sum (x - zx) w << f) * M / 2**s) + zo, clamped."""
    acc = (x.astype(np.int64) - zx) @ w.astype(np.int64).T            # [..., out]
    acc = (acc << frac_bits) + bias
    wide = acc.astype(object) * mult.astype(object)                   # up to ~93 bits
    q = round_shift(wide, shift.astype(object), rounding).astype(np.int64)
    return np.clip(q + zo, lo, 255)


def run(cfg: TSEConfig, ip: IntParams, x: np.ndarray) -> dict:
    """Every stage of the hw profile on frames x (uint8 [N, H, W, C])."""
    if cfg.hw.saturate:
        raise ConfigError("hw.saturate: true is not allowed in the numpy model; allowed: "
                          "false (use tse.ref_model.kernels for saturating widths)")
    x = check_frames(cfg, x)
    zp = ip.zero_points
    zx, zh, ze, zo = zp["input"], zp["hidden"], zp["excite"], zp["output"]
    hw, f = ip.hw, ip.hw.bias_frac_bits
    sums = tile_sums(x, cfg, zx)
    kinds = tile_kinds(cfg)
    pooled = mean(sums, kinds, ip, zx)
    z1, lo1 = ip.fc1_output()           # (zh, zh): fused ReLU; SiLU: its input's zp, 0
    hidden = fc(pooled, zx, ip.w1, ip.hw_fc1_bias, ip.hw_fc1_mult, ip.hw_fc1_shift, z1, lo1,
                f, hw.fc1_rounding)
    if ip.hidden_lut is not None:
        hidden = ip.hidden_lut.astype(np.int64)[hidden]
    excite = fc(hidden, zh, ip.w2, ip.hw_fc2_bias, ip.hw_fc2_mult, ip.hw_fc2_shift, ze, 0,
                f, hw.fc2_rounding)
    gate = gate_table(ip.sigmoid_lut, hw.gate_bits)[excite].astype(np.int64)
    rows = np.minimum(np.arange(cfg.height) // cfg.tile_rows, cfg.tiles_y - 1)
    cols = np.minimum(np.arange(cfg.width) // cfg.tile_cols, cfg.tiles_x - 1)
    wide_gate = gate[:, rows][:, :, cols]                               # [N, H, W, C]
    prod = (x.astype(np.int64) - zx) * wide_gate * int(ip.hw_mul_mult[0])
    out = round_shift(prod, np.int64(ip.hw_mul_shift[0]), hw.mul_rounding)
    out = np.clip(out + zo, 0, 255)
    return {"tile_sums": sums, "pooled": pooled.astype(np.uint8),
            "hidden": hidden.astype(np.uint8), "excite": excite.astype(np.uint8),
            "gate": gate.astype(np.uint8), "output": out.astype(np.uint8)}
