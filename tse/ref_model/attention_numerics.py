"""The torch profile of the seeds' other blocks (issue 18): tiled ECA, tiled SRM and TSE with
the paper's 3x1 excite, in quantized PyTorch's integer arithmetic, code for code
(tse.quant.attention_quantized is the reference each is tested against). ECA's and SRM's hw
profile, kernels and streaming model are tse.ref_model.attention_hw, attention_kernels and
attention_streaming; the 3x1 excite has only this profile so far, and no block here has RTL.

ECA:

    pooled  = mean_torch per tile (avg_pool2d on quint8; the input's qparams)
    acc[c]  = sum_t w[t] * (pooled[c + t - (k-1)/2] - zp)     zero padding: the zero point,
                                                              so a padded tap adds nothing
              (+ fbgemm's int16 pair saturation over taps (t0, t1), (t2, t3), ...)
    excite  = clamp(rint(f32(f32(acc) * mult)) + zo, 0, 255) (requant_torch with no bias)
    gate    = the quantized sigmoid's table[excite]
    output  = mul_torch(x, zx, gate, 0, ...)

Vectorized numpy over whole frames: this is the reference the streaming model and the kernels
will be held to, not the fast path. Parameters are prepared once (EcaParams) from the
converted block's scales, zero points and weight codes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .int_params import torch_requant_params
from .rounding import f32_of
from .torch_numerics import dequantized, quantized, requant_torch, sigmoid_table


@dataclass(frozen=True)
class EcaQuantParams:
    """What the converted quantized ECA block holds (tse.quant.attention_quantized)."""

    engine: str
    scales: dict          # role -> scale: input, excite, output (pooled keeps the input's)
    zero_points: dict
    taps: np.ndarray      # int8 [k]: the conv1d's weight codes
    tap_scale: float
    pair_saturation: bool  # fbgemm's int16 pairs saturate on this CPU (engine_probe)


@dataclass(frozen=True)
class EcaParams:
    """Integer parameters, prepared once."""

    zx: int
    taps: np.ndarray      # int64 [k]
    pair_saturation: bool
    excite_mult: np.float32
    excite_zp: int
    gate_table: np.ndarray   # uint8 [256]
    out_mult: np.float32
    out_zp: int


def prepare_eca(q: EcaQuantParams) -> EcaParams:
    s_in, s_e, s_out = (q.scales[r] for r in ("input", "excite", "output"))
    if q.engine == "fbgemm":
        atw = f32_of(f32_of(s_in) * f32_of(q.tap_scale))
        excite_mult = f32_of(atw / f32_of(s_e))
    else:  # qnnpack
        sxw = f32_of(np.float64(s_in) * np.float64(q.tap_scale))
        excite_mult = f32_of(sxw * f32_of(np.float32(1.0) / f32_of(s_e)))
    # the gate's qparams are fixed (1/256, 0)
    out_mult = gate_mul_mult(s_in, s_out)
    return EcaParams(zx=int(q.zero_points["input"]), taps=q.taps.astype(np.int64),
                     pair_saturation=bool(q.pair_saturation),
                     excite_mult=excite_mult, excite_zp=int(q.zero_points["excite"]),
                     gate_table=sigmoid_table(s_e, q.zero_points["excite"]),
                     out_mult=out_mult, out_zp=int(q.zero_points["output"]))


def gate_mul_mult(s_in: float, s_out: float) -> np.float32:
    """mul_torch's multiplier for x (s_in) times a gate (fixed qparams 1/256, 0) into s_out."""
    return f32_of(f32_of(f32_of(s_in) * f32_of(1.0 / 256)) * f32_of(np.float32(1.0)
                                                                 / f32_of(s_out)))


def gated_output(x: np.ndarray, gate: np.ndarray, tile, zx: int, mult: np.float32,
                 zo: int) -> np.ndarray:
    """The gates [N, C, ty, tx] broadcast over their tiles and multiplied into x [N, C, H, W]
    (mul_torch: clamp(rint(f32(f32((x - zx) g) * mult)) + zo, 0, 255))."""
    kh, kw = tile
    g = np.repeat(np.repeat(gate, kh, axis=2), kw, axis=3)[:, :, :x.shape[2], :x.shape[3]]
    prod = ((x.astype(np.int64) - zx) * g.astype(np.int64)).astype(np.float32)
    return np.clip(np.rint((prod * mult).astype(np.float32)).astype(np.int64) + zo,
                   0, 255).astype(np.uint8)


def tile_means(x: np.ndarray, tile: tuple[int, int], zx: int) -> np.ndarray:
    """avg_pool2d(ceil_mode) on quint8 codes [N, C, H, W] -> [N, C, ty, tx] (mean_torch)."""
    n, c, h, w = x.shape
    kh, kw = tile
    ty, tx = -(-h // kh), -(-w // kw)
    pooled = np.empty((n, c, ty, tx), np.uint8)
    for i in range(ty):
        for j in range(tx):
            block = x[:, :, i * kh:(i + 1) * kh, j * kw:(j + 1) * kw].astype(np.int64) - zx
            count = block.shape[2] * block.shape[3]
            a = (block.sum(axis=(2, 3)).astype(np.float32) * f32_of(1.0 / count)).astype(
                np.float32)
            pooled[:, :, i, j] = np.clip(np.rint((a + np.float32(zx)).astype(np.float32)),
                                         0, 255)
    return pooled


def _pair_saturation_excess(raw: np.ndarray, taps: np.ndarray, c: int) -> np.ndarray:
    """What fbgemm's int16 pairs add to each accumulator: its vpmaddubsw sums the raw codes'
    products two taps at a time, (t0, t1), (t2, t3), ..., saturating each pair to int16 (the
    1x1 conv's pairs run over input channels; a one-channel conv1d's over taps, measured).
    raw: the pooled codes padded with the zero point, channel axis 1."""
    excess = np.zeros((raw.shape[0], c, *raw.shape[2:]), np.int64)
    for t in range(0, len(taps), 2):
        pair = taps[t] * raw[:, t:t + c]
        if t + 1 < len(taps):
            pair = pair + taps[t + 1] * raw[:, t + 1:t + 1 + c]
        excess += np.clip(pair, -32768, 32767) - pair
    return excess


def eca_stages(x: np.ndarray, tile: tuple[int, int], p: EcaParams) -> dict:
    """Codes of every stage for input codes x [N, C, H, W] (NCHW, like the reference)."""
    pooled = tile_means(x, tile, p.zx)
    centred = pooled.astype(np.int64) - p.zx
    k = len(p.taps)
    half = (k - 1) // 2
    c = x.shape[1]
    padded = np.zeros((*centred.shape[:1], c + k - 1, *centred.shape[2:]), np.int64)
    padded[:, half:half + c] = centred
    acc = sum(p.taps[t] * padded[:, t:t + c] for t in range(k))
    if p.pair_saturation:
        acc = acc + _pair_saturation_excess(padded + p.zx, p.taps, c)
    v = (acc.astype(np.float32) * p.excite_mult).astype(np.float32)
    excite = np.clip(np.rint(v).astype(np.int64) + p.excite_zp, 0, 255).astype(np.uint8)
    gate = p.gate_table[excite]
    out = gated_output(x, gate, tile, p.zx, p.out_mult, p.out_zp)
    return {"input": x, "pooled": pooled, "excite": excite, "gate": gate, "output": out}


# ---- SRM ----------------------------------------------------------------------------------
#
#     pooled  = mean_torch per tile (the input's qparams)
#     std     = QuantStub(style deviation of the dequantized input), float32 steps:
#               xf = f32(f32(s) * (q - zp)); mean = f32(sequential f32 sum over the tile / n)
#               (avg_pool2d's float kernel, row by row); d = f32(xf - mean); var =
#               f32(f32(f32(sum d*d / n) * n) / (n - 1)); std = the correctly rounded sqrt
#     style   = cat(pooled, std): each dequantized and quantized to the pair's qparams
#     acc[c]  = w[c,0] (style_mean - zs) + w[c,1] (style_std - zs)   (grouped conv1d, 2 taps,
#               + fbgemm's int16 pair saturation over the two taps)
#     excite  = requant_torch(acc, bias terms of the engine, mult, zo, 0)
#     gate, output as for ECA


@dataclass(frozen=True)
class SrmQuantParams:
    """What the converted quantized SRM block holds (batch norm folded into the FC)."""

    engine: str
    scales: dict          # role -> scale: input, std, style, excite, output
    zero_points: dict
    weights: np.ndarray   # int8 [C, 2]
    weight_scale: np.ndarray   # float64 [C] (per channel on fbgemm, one value repeated else)
    bias: np.ndarray      # float32 [C]
    per_channel: bool
    pair_saturation: bool


@dataclass(frozen=True)
class SrmParams:
    scales: dict
    zero_points: dict
    weights: np.ndarray   # int64 [C, 2]
    bias_i: np.ndarray
    bias_f: np.ndarray
    bias_mul: np.ndarray
    mult: np.ndarray      # float32 [C]
    pair_saturation: bool
    gate_table: np.ndarray
    out_mult: np.float32


def prepare_srm(q: SrmQuantParams) -> SrmParams:
    s_style, s_e = q.scales["style"], q.scales["excite"]
    bias_i, bias_f, bias_mul, mult = torch_requant_params(
        q.engine, q.per_channel, s_style, q.weight_scale, q.bias, s_e)
    s_in, s_out = q.scales["input"], q.scales["output"]
    out_mult = gate_mul_mult(s_in, s_out)
    return SrmParams(scales=dict(q.scales), zero_points=dict(q.zero_points),
                     weights=q.weights.astype(np.int64), bias_i=bias_i, bias_f=bias_f,
                     bias_mul=bias_mul, mult=mult, pair_saturation=bool(q.pair_saturation),
                     gate_table=sigmoid_table(s_e, q.zero_points["excite"]), out_mult=out_mult)


def _tile_sums_f32(v: np.ndarray, tile) -> np.ndarray:
    """Sequential float32 sums over each tile, row by row (avg_pool2d's float kernel)."""
    n, c, h, w = v.shape
    kh, kw = tile
    ty, tx = -(-h // kh), -(-w // kw)
    out = np.empty((n, c, ty, tx), np.float32)
    for i in range(ty):
        for j in range(tx):
            s = np.zeros((n, c), np.float32)
            for r in range(i * kh, min((i + 1) * kh, h)):
                for col in range(j * kw, min((j + 1) * kw, w)):
                    s = (s + v[:, :, r, col]).astype(np.float32)
            out[:, :, i, j] = s
    return out


def srm_deviation(x: np.ndarray, tile, scale: float, zero_point: int) -> np.ndarray:
    """The float32 tile deviation of the dequantized codes, as TiledSRM.style computes it."""
    n, c, h, w = x.shape
    kh, kw = tile
    xf = dequantized(scale, zero_point)[x.astype(np.int64)]
    rows = np.array([min(kh, h - i) for i in range(0, h, kh)], np.float32)
    cols = np.array([min(kw, w - j) for j in range(0, w, kw)], np.float32)
    counts = (rows[:, None] * cols[None, :]).astype(np.float32)
    mean = (_tile_sums_f32(xf, tile) / counts).astype(np.float32)
    d = (xf - np.repeat(np.repeat(mean, kh, 2), kw, 3)[:, :, :h, :w]).astype(np.float32)
    var = (_tile_sums_f32((d * d).astype(np.float32), tile) / counts).astype(np.float32)
    var = ((var * counts).astype(np.float32) / (counts - np.float32(1))).astype(np.float32)
    return np.sqrt(var)


def srm_stages(x: np.ndarray, tile: tuple[int, int], p: SrmParams) -> dict:
    sc, zp = p.scales, p.zero_points
    zx = zp["input"]
    pooled = tile_means(x, tile, zx)
    std = quantized(srm_deviation(x, tile, sc["input"], zx), sc["std"], zp["std"])
    requantize = (lambda codes, role: quantized(
        dequantized(sc[role], zp[role])[codes.astype(np.int64)], sc["style"], zp["style"]))
    s_mean = requantize(pooled, "input").astype(np.int64)
    s_std = requantize(std, "std").astype(np.int64)
    zs = zp["style"]
    w0 = p.weights[:, 0][None, :, None, None]
    w1 = p.weights[:, 1][None, :, None, None]
    acc = w0 * (s_mean - zs) + w1 * (s_std - zs)
    if p.pair_saturation:                  # raw codes, the two taps as one int16 pair
        pair = w0 * s_mean + w1 * s_std
        acc = acc + np.clip(pair, -32768, 32767) - pair
    excite = np.empty(acc.shape, np.uint8)
    for idx in np.ndindex(*acc.shape):
        ch = idx[1]
        excite[idx] = requant_torch(int(acc[idx]), int(p.bias_i[ch]), p.bias_f[ch],
                                    p.bias_mul[ch], p.mult[ch], zp["excite"], 0)
    gate = p.gate_table[excite]
    out = gated_output(x, gate, tile, zx, p.out_mult, zp["output"])
    return {"input": x, "pooled": pooled, "std": std, "excite": excite, "gate": gate,
            "output": out}


# ---- TSE with the 3x1 excite (paper Appendix B) ---------------------------------------------
#
#     pooled  = mean_torch per tile
#     acc1[j] = sum_t sum_c w1[j, c, t] (pooled[c, i + t - 1] - zx) + b1   (rows of tiles i;
#               zero padding: a padded row is the zero point, so it adds nothing)
#               (+ fbgemm's int16 pairs over the flattened (tap, channel) index, channel fastest)
#     hidden  = requant_torch(acc1, ..., lo = zh)                          (fused ReLU)
#     excite  = requant_torch(acc2 over the hidden rows i-1, i, i+1, ...)
#     gate    = the sigmoid's table; output = mul_torch


@dataclass(frozen=True)
class ConvLayer:
    """One quantized excite convolution over rows of tiles: codes [out, in, taps], the torch
    profile's requantization (int_params.torch_requant_params), the output zero point and
    its lower clamp."""

    weights: np.ndarray
    bias_i: np.ndarray
    bias_f: np.ndarray
    bias_mul: np.ndarray
    mult: np.ndarray
    zo: int
    lo: int
    quantization: tuple = ()
    """(engine, per_channel, w_scale, bias, s_in, s_out): what the hw profile derives its own
    requantizer from (tse.ref_model.attention_hw.conv_rows_hw)."""


def conv_layer(engine, per_channel, weights, w_scale, bias, s_in, s_out, zo, relu) -> ConvLayer:
    bias_i, bias_f, bias_mul, mult = torch_requant_params(engine, per_channel, s_in, w_scale,
                                                          bias, s_out)
    return ConvLayer(weights.astype(np.int64), bias_i, bias_f, bias_mul, mult, int(zo),
                     int(zo) if relu else 0,
                     (engine, per_channel, np.asarray(w_scale, np.float64),
                      np.asarray(bias, np.float32), float(s_in), float(s_out)))


def conv_rows(codes: np.ndarray, z: int, layer: ConvLayer, pair_saturation: bool) -> np.ndarray:
    """A taps x 1 convolution over the rows of tiles of codes [N, C, ty, tx] (zero padding),
    requantized: [N, out, ty, tx] uint8."""
    n, c, ty, tx = codes.shape
    taps = layer.weights.shape[2]
    half = (taps - 1) // 2
    raw = np.full((n, c, ty + taps - 1, tx), z, np.int64)
    raw[:, :, half:half + ty] = codes
    # window[n, t, c, i, x] = raw[n, c, i + t, x]; flattened (t, c), channel fastest
    window = np.stack([raw[:, :, t:t + ty] for t in range(taps)], axis=1)
    flat = window.reshape(n, taps * c, ty, tx)
    w = layer.weights.transpose(0, 2, 1).reshape(layer.weights.shape[0], taps * c)
    acc = np.einsum("ok,nkyx->noyx", w, flat - z)
    if pair_saturation:
        for k in range(0, taps * c, 2):
            pair = np.einsum("o,nyx->noyx", w[:, k], flat[:, k])
            if k + 1 < taps * c:
                pair = pair + np.einsum("o,nyx->noyx", w[:, k + 1], flat[:, k + 1])
            acc += np.clip(pair, -32768, 32767) - pair
    out = np.empty(acc.shape, np.uint8)
    for idx in np.ndindex(*acc.shape):
        o = idx[1]
        out[idx] = requant_torch(int(acc[idx]), int(layer.bias_i[o]), layer.bias_f[o],
                                 layer.bias_mul[o], layer.mult[o], layer.zo, layer.lo)
    return out


@dataclass(frozen=True)
class Excite3x1Params:
    zx: int
    fc1: ConvLayer
    fc2: ConvLayer
    pair_saturation: bool
    gate_table: np.ndarray
    out_mult: np.float32
    out_zp: int
    out_scale: float = 0.0      # the output's scale (dequantizing it; no integer model needs it)


def excite3x1_stages(x: np.ndarray, tile: tuple[int, int], p: Excite3x1Params) -> dict:
    """Codes of every stage of the 3x1-excite TSE block for input codes x [N, C, H, W]."""
    pooled = tile_means(x, tile, p.zx)
    hidden = conv_rows(pooled, p.zx, p.fc1, p.pair_saturation)
    excite = conv_rows(hidden, p.fc1.zo, p.fc2, p.pair_saturation)
    gate = p.gate_table[excite]
    out = gated_output(x, gate, tile, p.zx, p.out_mult, p.out_zp)
    return {"input": x, "pooled": pooled, "hidden": hidden, "excite": excite, "gate": gate,
            "output": out}
