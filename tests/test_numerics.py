"""tse.ref_model.numerics and hw_profile: every stage of both profiles against an independent oracle.

torch profile: each stage against quantized PyTorch itself (avg_pool2d, ConvReLU2d/Conv2d,
sigmoid, quantized mul, on both engines), fed the stage's own PyTorch input codes, over
random quantization parameters, extreme codes and zero points: zero mismatches.
hw profile: the exact requantizer and mean against Python integers and fractions.

The helpers at the top (random_quant_params, torch_block, codes) are shared with
test_kernels.py and test_streaming.py.
"""
from __future__ import annotations

import dataclasses
import os
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
from tse.quant import engine_probe
from tse.quant.float_block import broadcast_gate
from tse.ref_model import numerics as nm
from tse.ref_model.config import TSEConfig
from tse.ref_model.errors import ConfigError, InputError
from tse.ref_model.hw_profile import (DEFAULT_HW, min_reciprocal_bits, reciprocal,
                                  reciprocal_exact, required_bits, tile_counts)
from tse.ref_model.params import ACTIVATIONS, QuantParams

warnings.filterwarnings("ignore", category=DeprecationWarning)
pytestmark = pytest.mark.filterwarnings("ignore:.*quantized tensor creation:UserWarning")

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.data_too_large,
                                                     HealthCheck.filter_too_much])


def examples(n: int) -> int:
    """Hypothesis examples per test: n times TSE_EXAMPLES_SCALE (default 1; raise it for a
    long soak run, e.g. TSE_EXAMPLES_SCALE=20)."""
    return max(1, int(n * float(os.environ.get("TSE_EXAMPLES_SCALE", "1"))))
f32 = np.float32


# =========================================================================================
# Shared helpers: random quantization parameters, quantized PyTorch ops, input codes
# =========================================================================================

def _f32_scale(v: float) -> float:
    """A scale as PyTorch's observers make them: a float32 value, reported as a double."""
    return float(np.float32(max(v, 1e-8)))


def _zero_point(rng, mode: str, natural: int) -> int:
    return {"zero": 0, "max": 255, "natural": int(np.clip(natural, 0, 255)),
            "random": int(rng.integers(0, 256))}[mode]


def random_quant_params(seed: int, channels: int, hidden: int, engine: str,
                        per_channel: bool, zp_mode: str = "natural") -> QuantParams:
    """Random but sensible integer parameters: weights over the whole int8 range, biases of
    any sign and size, and activation scales calibrated on the ranges the block produces,
    so that most codes land inside 0..255. zp_mode picks the zero points: natural (from the
    ranges), zero, max (255) or random."""
    rng = np.random.default_rng(seed)
    zmode = lambda: zp_mode if zp_mode != "mixed" else rng.choice(  # noqa: E731
        ["zero", "max", "natural", "random"])
    s_in = _f32_scale(np.exp(rng.uniform(np.log(1e-3), 0)))
    z_in = _zero_point(rng, zmode(), int(rng.integers(0, 256)))
    w1 = rng.integers(-128, 128, (hidden, channels)).astype(np.int8)
    w2 = rng.integers(-128, 128, (channels, hidden)).astype(np.int8)
    if rng.random() < 0.15:
        w1[0, :] = -128                             # the extreme product
    sw1 = np.exp(rng.uniform(np.log(1e-4), np.log(1e-2), hidden if per_channel else 1))
    sw2 = np.exp(rng.uniform(np.log(1e-4), np.log(1e-2), channels if per_channel else 1))
    sw1 = np.resize(sw1.astype(np.float32).astype(np.float64), hidden)
    sw2 = np.resize(sw2.astype(np.float32).astype(np.float64), channels)
    # calibrate on random pooled vectors
    xf = (rng.integers(0, 256, (64, channels)) - z_in) * s_in
    h_pre = xf @ (w1 * sw1[:, None]).T
    b1 = (rng.standard_normal(hidden) * np.exp(rng.uniform(-3, 1)) *
          max(np.abs(h_pre).max(), 1e-3)).astype(np.float32)
    hf = np.maximum(h_pre + b1, 0)
    s_h = _f32_scale(max(hf.max(), 1e-4) / 255 * np.exp(rng.uniform(-0.7, 0.7)))
    z_h = _zero_point(rng, zmode(), 0)
    e_pre = hf @ (w2 * sw2[:, None]).T
    b2 = (rng.standard_normal(channels) * np.exp(rng.uniform(-3, 1)) *
          max(np.abs(e_pre).max(), 1e-3)).astype(np.float32)
    ef = e_pre + b2
    lo, hi = min(ef.min(), 0), max(ef.max(), 0)
    s_e = _f32_scale(max(hi - lo, 1e-3) / 255 * np.exp(rng.uniform(-0.7, 0.7)))
    z_e = _zero_point(rng, zmode(), int(round(-lo / s_e)))
    x_lo, x_hi = (0 - z_in) * s_in, (255 - z_in) * s_in
    s_o = _f32_scale((x_hi - x_lo) / 255 * np.exp(rng.uniform(-0.7, 0.7)))
    z_o = _zero_point(rng, zmode(), int(round(-x_lo / s_o)))
    scales = {"input": s_in, "pooled": s_in, "hidden": s_h, "excite": s_e,
              "gate": 1.0 / 256, "output": s_o}
    zps = {"input": z_in, "pooled": z_in, "hidden": z_h, "excite": z_e, "gate": 0,
           "output": z_o}
    return QuantParams(engine=engine, scales=scales, zero_points=zps, w1=w1, w1_scale=sw1,
                       b1=b1, w2=w2, w2_scale=sw2, b2=b2, per_channel=per_channel,
                       pair_saturation=engine_probe.pair_saturation(engine))


def _qtensor(codes, scale, zp):
    return torch._make_per_tensor_quantized_tensor(
        torch.from_numpy(np.ascontiguousarray(codes)), scale, zp)


def _qweight(w, scales, per_channel):
    t = torch.from_numpy(w).reshape(w.shape[0], w.shape[1], 1, 1)
    if per_channel:
        return torch._make_per_channel_quantized_tensor(
            t, torch.from_numpy(scales), torch.zeros(w.shape[0], dtype=torch.long), 0)
    return torch._make_per_tensor_quantized_tensor(t, float(scales[0]), 0)


def torch_conv(qp: QuantParams, which: int, x_codes: np.ndarray) -> np.ndarray:
    """Quantized PyTorch 1x1 conv (fc1 fused with ReLU, or fc2) on NCHW codes."""
    w, sw, b = ((qp.w1, qp.w1_scale, qp.b1) if which == 1 else (qp.w2, qp.w2_scale, qp.b2))
    s_in, z_in = ((qp.scales["pooled"], qp.zero_points["pooled"]) if which == 1
                  else (qp.scales["hidden"], qp.zero_points["hidden"]))
    role = "hidden" if which == 1 else "excite"
    with _engine(qp.engine):
        conv = (nniq.ConvReLU2d if which == 1 else nnq.Conv2d)(w.shape[1], w.shape[0], 1)
        conv.set_weight_bias(_qweight(w, sw, qp.per_channel), torch.from_numpy(b))
        conv.scale, conv.zero_point = qp.scales[role], qp.zero_points[role]
        return conv(_qtensor(x_codes, s_in, z_in)).int_repr().numpy()


class _engine:
    def __init__(self, name):
        self.name = name

    def __enter__(self):
        self.prev = torch.backends.quantized.engine
        torch.backends.quantized.engine = self.name

    def __exit__(self, *exc):
        torch.backends.quantized.engine = self.prev


def torch_block(qp: QuantParams, codes: np.ndarray, kernel) -> dict:
    """The quantized TSE block (as tse.quant.quantized_block.QuantTSE.stages composes it) from
    quantized PyTorch ops with the integer parameters qp, on NCHW input codes."""
    sc, zp = qp.scales, qp.zero_points
    with _engine(qp.engine), torch.no_grad():
        q = _qtensor(codes, sc["input"], zp["input"])
        pooled = F.avg_pool2d(q, kernel, stride=kernel, ceil_mode=True)
        p = pooled.int_repr().numpy()
        hidden = torch_conv(qp, 1, p)
        excite = torch_conv(qp, 2, hidden)
        gate = torch.sigmoid(_qtensor(excite, sc["excite"], zp["excite"]))
        wide = broadcast_gate(gate, kernel, codes.shape[2], codes.shape[3])
        out = torch.ops.quantized.mul(q, wide, sc["output"], zp["output"])
        return {"input": codes, "pooled": p, "hidden": hidden, "excite": excite,
                "gate": gate.int_repr().numpy(), "output": out.int_repr().numpy()}


def codes(seed: int, shape, mode: str, zp: int = 128) -> np.ndarray:
    """Input codes: uniform, all 0, all 255, only 0 and 255, or near the zero point."""
    rng = np.random.default_rng(seed)
    if mode == "zeros":
        return np.zeros(shape, np.uint8)
    if mode == "full":
        return np.full(shape, 255, np.uint8)
    if mode == "binary":
        return np.where(rng.random(shape) < 0.5, 0, 255).astype(np.uint8)
    if mode == "near_zp":
        return np.clip(zp + rng.integers(-3, 4, shape), 0, 255).astype(np.uint8)
    return rng.integers(0, 256, shape).astype(np.uint8)


CODE_MODES = ["uniform", "uniform", "uniform", "zeros", "full", "binary", "near_zp"]
ZP_MODES = ["natural", "zero", "max", "random", "mixed"]


@st.composite
def tse_cases(draw, max_side=16, max_channels=24, max_frames=2):
    """A random configuration (every tiling strategy, tiles that do not divide the frame,
    odd sides, C from 1, lanes, reduction), random integer parameters and input codes."""
    h = draw(st.integers(1, max_side))
    w = draw(st.integers(1, max_side))
    kind = draw(st.sampled_from(["row", "col", "patch", "se"]))
    th = h if kind in ("col", "se") else draw(st.integers(1, h))
    tw = w if kind in ("row", "se") else draw(st.integers(1, w))
    tile = f"{'H' if th == h else th}x{'W' if tw == w else tw}"
    c = draw(st.integers(1, max_channels))
    r = draw(st.integers(1, c))
    lanes = draw(st.sampled_from([d for d in range(1, c + 1) if c % d == 0]))
    engine = draw(st.sampled_from(["fbgemm", "qnnpack"]))
    per_channel = draw(st.booleans())
    cfg = TSEConfig(channels=c, height=h, width=w, tile=tile, reduction=r, lanes=lanes,
                    excite_multipliers=draw(st.integers(1, 8)), engine=engine)
    qp = random_quant_params(draw(st.integers(0, 2**31)), c, cfg.hidden, engine,
                             per_channel, draw(st.sampled_from(ZP_MODES)))
    n = draw(st.integers(1, max_frames))
    x = codes(draw(st.integers(0, 2**31)), (n, c, h, w), draw(st.sampled_from(CODE_MODES)),
              qp.zero_points["input"])
    return cfg, qp, x


def nhwc(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def nchw(a):
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


# =========================================================================================
# torch profile, stage by stage, against quantized PyTorch
# =========================================================================================

def _cfg_for(qp: QuantParams, **kw) -> TSEConfig:
    c, h = qp.channels, qp.hidden
    return TSEConfig(channels=c, reduction=c // h if c // (c // h) == h else 1,
                     lanes=1, engine=qp.engine, **kw)


def _ip(qp: QuantParams, **kw) -> nm.IntParams:
    cfg = _cfg_for(qp, **kw)
    assume(cfg.hidden == qp.hidden)
    return nm.derive(qp, cfg)


def _tile_codes(fn, xs, *args, out_len):
    """Apply a stage function (vector in, vector out) to every row of xs."""
    out = np.zeros((xs.shape[0], out_len), np.uint8)
    for i in range(xs.shape[0]):
        fn(np.ascontiguousarray(xs[i]), *args, out[i])
    return out


@settings(max_examples=examples(150), **SETTINGS)
@given(h=st.integers(1, 23), w=st.integers(1, 23), data=st.data(),
       zp=st.sampled_from([0, 1, 127, 128, 254, 255]) | st.integers(0, 255),
       mode=st.sampled_from(CODE_MODES), seed=st.integers(0, 2**31))
def test_mean_torch_matches_avg_pool2d(h, w, data, zp, mode, seed):
    """avg_pool2d(ceil_mode) on NCHW quint8: every tile size, partial edge tiles, ties."""
    kh, kw = data.draw(st.integers(1, h)), data.draw(st.integers(1, w))
    x = codes(seed, (2, 3, h, w), mode, zp)
    scale = _f32_scale(np.exp(np.random.default_rng(seed).uniform(-7, 0)))
    ref = F.avg_pool2d(_qtensor(x, scale, zp), (kh, kw), stride=(kh, kw),
                       ceil_mode=True).int_repr().numpy()
    counts = tile_counts(h, w, kh, kw)
    got = np.zeros_like(ref)
    ty, tx = ref.shape[2], ref.shape[3]
    for i in range(ty):
        for j in range(tx):
            kind = 2 * int(i == ty - 1 and h % kh != 0) + int(j == tx - 1 and w % kw != 0)
            blk = x[:, :, i * kh:(i + 1) * kh, j * kw:(j + 1) * kw].astype(np.int64)
            assert blk.shape[2] * blk.shape[3] == counts[kind]
            sums = blk.sum(axis=(2, 3)) - counts[kind] * zp
            recip = nm.f32_of(1.0 / counts[kind])
            for n in range(2):
                for c in range(3):
                    got[n, c, i, j] = nm.mean_torch(sums[n, c], recip, zp)
    np.testing.assert_array_equal(got, ref)


def test_mean_torch_even_tile_ties():
    """Every sum of the even tiles where f32(1/n) pushes ties (7x2=14, 7x4=28, 2x13=26)."""
    for kh, kw in ((7, 2), (7, 4), (2, 13)):
        n = kh * kw
        for zp in (0, 3, 255):
            # one channel per sum value: rows of codes with every sum 0..255 n
            total = np.arange(0, 255 * n + 1)
            x = np.zeros((1, total.size, kh, kw), np.int64)
            flat = x.reshape(total.size, n)
            for k in range(n):
                flat[:, k] = np.clip(total - 255 * k, 0, 255)
            x = x.astype(np.uint8)
            ref = F.avg_pool2d(_qtensor(x, 0.05, zp), (kh, kw), stride=(kh, kw),
                               ceil_mode=True).int_repr().numpy().ravel()
            recip = nm.f32_of(1.0 / n)
            got = np.array([nm.mean_torch(int(s) - n * zp, recip, zp) for s in total])
            np.testing.assert_array_equal(got, ref)


@settings(max_examples=examples(150), **SETTINGS)
@given(c=st.integers(1, 48), r=st.integers(1, 48), engine=st.sampled_from(["fbgemm", "qnnpack"]),
       per_channel=st.booleans(), zp_mode=st.sampled_from(ZP_MODES),
       mode=st.sampled_from(CODE_MODES), seed=st.integers(0, 2**31))
def test_fc_torch_matches_quantized_conv(c, r, engine, per_channel, zp_mode, mode, seed):
    """fc1 (ConvReLU2d) and fc2 (Conv2d), each fed its own PyTorch input codes."""
    assume(r <= c)
    qp = random_quant_params(seed, c, c // r, engine, per_channel, zp_mode)
    ip = _ip(qp)
    T = ip.tables()
    pooled = codes(seed + 1, (1, c, 7, 5), mode, qp.zero_points["pooled"])
    ref_h = torch_conv(qp, 1, pooled)
    got_h = _tile_codes(lambda v, o: nm.fc1(v, T, nm.TORCH, o),
                        nhwc(pooled).reshape(-1, c), out_len=qp.hidden)
    np.testing.assert_array_equal(got_h, nhwc(ref_h).reshape(-1, qp.hidden))
    hid = codes(seed + 2, (1, qp.hidden, 7, 5), mode, qp.zero_points["hidden"])
    ref_e = torch_conv(qp, 2, hid)
    got_e = _tile_codes(lambda v, o: nm.fc2(v, T, nm.TORCH, o),
                        nhwc(hid).reshape(-1, qp.hidden), out_len=c)
    np.testing.assert_array_equal(got_e, nhwc(ref_e).reshape(-1, c))


def test_pair_saturation_excess_known_answer():
    """fbgemm's vpmaddubsw: p = 217 * -109 + 163 * -124 = -43865 saturates at -32768."""
    x, w = np.array([217, 163, 255], np.uint8), np.array([-109, -124, -128], np.int64)
    assert nm.pair_saturation_excess(x, w) == -32768 + 43865   # the lone last code: no pair
    assert nm.pair_saturation_excess(np.array([127, 127], np.uint8),
                                     np.array([-128, -128], np.int64)) == 0


@pytest.mark.parametrize("engine", ["fbgemm", "qnnpack"])
@pytest.mark.parametrize("per_channel", [False, True])
def test_fc_torch_profile_follows_engine_pair_saturation(engine, per_channel):
    """Codes above 127 against large same-sign weights: the torch profile with the probed
    pair_saturation equals the engine on this CPU, and with the flag flipped it does not
    (fbgemm without VNNI saturates; qnnpack never does)."""
    c = 6
    qp = random_quant_params(7, c, 3, engine, per_channel)
    qp.w1[:] = -128
    pooled = np.full((1, c, 2, 2), 250, np.uint8)
    pooled[0, 0, 0, 0] = 3
    ref = torch_conv(qp, 1, pooled)
    results = {}
    for flag in (False, True):
        q = dataclasses.replace(qp, pair_saturation=flag)
        T = nm.derive(q, _cfg_for(q)).tables()
        results[flag] = _tile_codes(lambda v, o: nm.fc1(v, T, nm.TORCH, o),
                                    nhwc(pooled).reshape(-1, c), out_len=q.hidden)
    probed = engine_probe.pair_saturation(engine)
    np.testing.assert_array_equal(results[probed], nhwc(ref).reshape(-1, qp.hidden))
    if engine == "fbgemm":
        assert not np.array_equal(results[False], results[True])
    else:
        assert not probed


@settings(max_examples=examples(200), **SETTINGS)
@given(scale_exp=st.floats(-9, 1), zp=st.integers(0, 255),
       engine=st.sampled_from(["fbgemm", "qnnpack"]))
def test_sigmoid_table_matches_quantized_sigmoid(scale_exp, zp, engine):
    """The 256-entry table equals torch.sigmoid on every code: vectorized (all 256 codes at
    once) and scalar (one code per call) paths of both engines."""
    scale = _f32_scale(np.exp(scale_exp))
    lut = nm.sigmoid_table(scale, zp)
    t = _qtensor(np.arange(256, dtype=np.uint8), scale, zp)
    with _engine(engine):
        ref = torch.sigmoid(t)
        assert ref.q_scale() == 1 / 256 and ref.q_zero_point() == 0
        np.testing.assert_array_equal(lut, ref.int_repr().numpy())
        for q in np.random.default_rng(zp).integers(0, 256, 8):
            assert lut[q] == torch.sigmoid(t[q:q + 1]).int_repr().item()


@settings(max_examples=examples(100), **SETTINGS)
@given(seed=st.integers(0, 2**31), engine=st.sampled_from(["fbgemm", "qnnpack"]),
       mode=st.sampled_from(CODE_MODES), zp_mode=st.sampled_from(ZP_MODES))
def test_mul_torch_matches_quantized_mul(seed, engine, mode, zp_mode):
    """The tile broadcaster's multiply (x by a 1/256-scaled gate), every gate code."""
    qp = random_quant_params(seed, 4, 2, engine, False, zp_mode)
    ip = _ip(qp)
    T = ip.tables()
    x = codes(seed, (1, 1, 64, 256), mode, qp.zero_points["input"])
    g = np.broadcast_to(np.arange(256, dtype=np.uint8), x.shape).copy()
    with _engine(engine):
        ref = torch.ops.quantized.mul(_qtensor(x, qp.scales["input"], qp.zero_points["input"]),
                                      _qtensor(g, 1 / 256, 0), qp.scales["output"],
                                      qp.zero_points["output"]).int_repr().numpy()
    got = np.vectorize(lambda a, b: nm.scale(a, b, T, nm.TORCH))(x, g)
    np.testing.assert_array_equal(got, ref)


# =========================================================================================
# Primitives and the hw profile, against exact integer arithmetic
# =========================================================================================

def _round_exact(num: int, shift: int, rounding: int) -> int:
    fr = Fraction(num, 1 << shift)
    fl = fr.numerator // fr.denominator
    rest = fr - fl
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and
                                 (rounding == nm.HALF_UP or fl % 2 == 1)):
        fl += 1
    return fl


@settings(max_examples=examples(1000), **SETTINGS)
@given(t=st.integers(-(2**62) + 1, 2**62 - 1) | st.integers(-(2**20), 2**20),
       m=st.integers(0, 2**31 - 1), shift=st.integers(0, 100),
       add=st.integers(0, 2**40) | st.just(0), rounding=st.sampled_from([0, 1]))
def test_round_shift_mul_is_exact(t, m, shift, add, rounding):
    p = t * m + add
    got = nm.round_shift_mul(t, m, add, shift, rounding)
    want = _round_exact(p, shift, rounding)
    if abs(want) >= 2**62:                      # far outside 8 bits: saturated marker
        assert abs(got) >= 2**62 - 1 and (got > 0) == (want > 0)
    else:
        assert got == want
    if shift <= 61 and abs(p >> shift) < 2**62:
        q, r = nm.floor_shift_mul(t, m, add, shift)
        assert q == p >> shift and r == p - (q << shift)


def test_round_shift_mul_ties():
    for shift in (1, 5, 30, 31, 32, 45, 70):
        for k in (-3, -2, -1, 0, 1, 2, 3):
            b = min(30, shift - 1)                  # t m / 2**shift = k + 1/2
            t, m = (2 * k + 1) << (shift - 1 - b), 1 << b
            assert nm.round_shift_mul(t, m, 0, shift, nm.HALF_UP) == k + 1
            assert nm.round_shift_mul(t, m, 0, shift, nm.HALF_EVEN) == k + (k % 2)
            assert nm.round_shift_mul(t, m, 1, shift, nm.HALF_EVEN) == k + 1


@settings(max_examples=examples(40), **SETTINGS)
@given(n=st.integers(1, 3000), extra=st.integers(0, 4), zp=st.sampled_from([0, 1, 128, 255]),
       rounding=st.sampled_from([0, 1]))
def test_mean_hw_is_the_exact_rounded_mean(n, extra, zp, rounding):
    """With a reciprocal the configuration accepts, the hw mean equals round(S/n + zp) of
    exact rational arithmetic, ties by the mode, for every possible sum."""
    bits = min(min_reciprocal_bits(n) + extra, 30)
    r, shift = reciprocal(n, bits)
    sums = list(range(-255 * n, 255 * n + 1, max(1, n // 40)))
    ties = [k * n + n // 2 + d for k in range(-256, 256) for d in (-1, 0, 1)]
    for s in sums + [s for s in ties if abs(s) <= 255 * n]:
        num = Fraction(s, n) + zp
        fl = num.numerator // num.denominator
        rest = num - fl
        want = fl + (rest > Fraction(1, 2) or (rest == Fraction(1, 2) and
                                               (rounding == nm.HALF_UP or fl % 2 == 1)))
        assert nm.mean_hw(s, r, shift, zp, rounding) == min(max(want, 0), 255), (s, n)


@settings(max_examples=examples(40), **SETTINGS)
@given(n=st.integers(1, 5000) | st.sampled_from([14, 28, 56, 112, 196, 784, 70000]),
       bits=st.integers(24, 30), zp=st.sampled_from([0, 1, 77, 128, 255]))
def test_mean_hw_f32_reproduces_mean_torch(n, bits, zp):
    """The f32 mean rounding (integer steps) equals PyTorch's float32 mean (mean_torch,
    itself checked against avg_pool2d above) on every tie and a sweep of sums."""
    r, shift = reciprocal(n, bits, f32=True)
    recip = nm.f32_of(1.0 / n)
    assert Fraction(r, 2**shift) == Fraction(float(recip))
    sums = list(range(-255 * n, 255 * n + 1, max(1, n // 20)))
    ties = [k * n + n // 2 + d for k in range(-256, 256) for d in (-1, 0, 1)]
    for s in sums + ties:
        assert nm.mean_hw_f32(s, r, shift, zp) == nm.mean_torch(s, recip, zp), (s, n, zp)


def test_reciprocal_bits_rejected_below_minimum():
    assert not reciprocal_exact(784, min_reciprocal_bits(784) - 1)
    assert reciprocal_exact(784, min_reciprocal_bits(784))
    assert all(reciprocal_exact(n, 26) for n in (1, 2, 3, 49, 196, 784, 3136, 50176))


@settings(max_examples=examples(200), **SETTINGS)
@given(m=st.floats(1e-9, 1e4, allow_subnormal=False), bits=st.integers(2, 31))
def test_quantize_multiplier(m, bits):
    m = float(np.float32(m))
    mult, shift = nm.quantize_multiplier(m, bits)
    assert shift >= 0 and mult < 2**31
    if shift > 0:
        assert 2 ** (bits - 1) <= mult < 2**bits
    err = abs(Fraction(mult, 2**shift) - Fraction(m))
    assert err <= Fraction(m) / 2**bits                 # half an LSB of the mantissa
    if bits >= 24:                                      # float32 keeps 24 significant bits
        assert Fraction(mult, 2**shift) == Fraction(m)


def test_f32_and_rint_primitives():
    assert nm.f32(16777217.0) == 16777216.0                    # 2**24 + 1 -> even
    assert nm.f32(0.1) == np.float32(0.1)
    assert [nm.rint_to_int(v) for v in (0.5, 1.5, 2.5, -0.5, -1.5)] == [0, 2, 2, 0, -2]
    assert nm.clamp(300, 0, 255) == 255 and nm.clamp(-3, 7, 255) == 7
    assert nm.saturating_add(100, 50, -128, 127) == (127, True)
    assert nm.saturating_add(-100, -50, -128, 127) == (-128, True)
    assert nm.saturating_add(1, 2, -128, 127) == (3, False)


# =========================================================================================
# hw widths: validation, the default preset, TOML
# =========================================================================================

def test_hw_preset_fields_and_toml_round_trip(tmp_path):
    cfg = TSEConfig(hw=DEFAULT_HW.replace(fc1_rounding="half_up", sum_bits=20))
    path = tmp_path / "c.toml"
    path.write_text(cfg.to_toml())
    assert "[hw]" in cfg.to_toml()
    assert TSEConfig.from_toml(path) == cfg
    assert TSEConfig.from_dict(cfg.to_dict()) == cfg
    assert TSEConfig(hw={"saturate": True}).hw.saturate


@pytest.mark.parametrize("change, field", [
    ({"sum_bits": 16}, "hw.sum_bits"),                 # 196 x 255 needs 17 bits
    ({"fc1_acc_bits": 22}, "hw.fc1_acc_bits"),         # 128 x 255 x 128 needs 23 bits
    ({"fc2_acc_bits": 20}, "hw.fc2_acc_bits"),         # 32 x 255 x 128 needs 21 bits
    ({"reciprocal_bits": 12}, "hw.reciprocal_bits"),     # f32 mean needs 24
    ({"reciprocal_bits": 12, "mean_rounding": "half_even"}, "hw.reciprocal_bits"),
    ({"reciprocal_bits": 31}, "hw.reciprocal_bits"),
    ({"fc2_multiplier_bits": 40}, "hw.fc2_multiplier_bits"),
    ({"bias_frac_bits": -1}, "hw.bias_frac_bits"),
    ({"mul_rounding": "nearest"}, "hw.mul_rounding"),
    ({"saturate": "yes"}, "hw.saturate"),
    ({"fc1_acc_bits": 50, "bias_frac_bits": 16}, "hw.fc1_acc_bits"),
])
def test_hw_widths_rejected_with_a_clear_message(change, field):
    with pytest.raises(ConfigError) as e:
        TSEConfig(hw={**DEFAULT_HW.to_dict(), **change})
    msg = str(e.value)
    assert msg.startswith(field) and "allowed" in msg and "\n" not in msg


def test_hw_overflow_allowed_with_saturate():
    need = required_bits(128, 32, 196)
    assert need == {"sum_bits": 17, "fc1_acc_bits": 23, "fc2_acc_bits": 21}
    TSEConfig(hw=DEFAULT_HW.replace(**need))
    cfg = TSEConfig(hw=DEFAULT_HW.replace(sum_bits=8, fc1_acc_bits=10, saturate=True))
    assert cfg.hw.sum_bits == 8


def test_hw_unknown_key_names_a_near_match():
    with pytest.raises(ConfigError, match=r"unknown key 'hw.bias_frac_bit'.*bias_frac_bits"):
        TSEConfig.from_dict({"hw": {"bias_frac_bit": 8}})


def test_bias_overflow_rejected_at_derivation():
    qp = random_quant_params(3, 16, 4, "fbgemm", True)
    qp.b1[0] = np.float32(1e6)        # a bias of ~1e11 accumulator units
    cfg = TSEConfig(channels=16, reduction=4, lanes=1, height=8, width=8,
                    hw=DEFAULT_HW.replace(fc1_acc_bits=24))
    with pytest.raises(ConfigError, match=r"^hw\.fc1_acc_bits: 24 can overflow"):
        nm.derive(qp, cfg)
    nm.derive(qp, cfg.replace(hw=cfg.hw.replace(saturate=True)))


def test_derive_rejects_mismatched_params():
    qp = random_quant_params(1, 16, 4, "fbgemm", True)
    with pytest.raises(InputError, match="do not match"):
        nm.derive(qp, TSEConfig(channels=32, reduction=4, lanes=1))
    with pytest.raises(InputError, match="engine"):
        nm.derive(qp, TSEConfig(channels=16, reduction=4, lanes=1, engine="qnnpack"))
    with pytest.raises(InputError, match="QuantParams"):
        nm.derive({"w1": 1}, TSEConfig())


def test_int_params_save_load_round_trip(tmp_path):
    qp = random_quant_params(5, 24, 6, "qnnpack", False)
    cfg = TSEConfig(channels=24, reduction=4, lanes=8, height=9, width=11, tile="4x3",
                    engine="qnnpack")
    ip = nm.derive(qp, cfg)
    ip.save(tmp_path / "ip")
    back = nm.IntParams.load(tmp_path / "ip")
    assert back.equals(ip)
    assert all(isinstance(a, np.ndarray) for a in ip.arrays().values())
    assert list(ip.tile_counts) == [12, 8, 3, 2]      # 4x3, 4x2, 1x3, 1x2
    with pytest.raises(InputError):
        nm.IntParams.load(tmp_path / "missing")


def test_int_params_derived_values_are_exact():
    """Spot-check derive() against the formulas written out by hand."""
    qp = random_quant_params(11, 8, 2, "fbgemm", True)
    cfg = TSEConfig(channels=8, reduction=4, lanes=1, height=6, width=6, tile="3x3")
    ip = nm.derive(qp, cfg)
    j = 1
    atw = f32(f32(qp.scales["pooled"]) * f32(qp.w1_scale[j]))
    assert ip.torch_fc1_mult[j] == f32(atw / f32(qp.scales["hidden"]))
    assert ip.torch_fc1_bias_f32[j] == f32(qp.b1[j] / atw)
    assert ip.torch_fc1_bias_int[j] == 0
    f = cfg.hw.bias_frac_bits
    assert ip.hw_fc1_bias[j] == round(Fraction(float(ip.torch_fc1_bias_f32[j])) * 2**f)
    assert (Fraction(int(ip.hw_fc1_mult[j]), 2 ** int(ip.hw_fc1_shift[j] - f))
            == Fraction(float(ip.torch_fc1_mult[j])))
    assert ip.torch_recip[0] == f32(1 / 9)
    qq = dataclasses.replace(qp, engine="qnnpack")
    ipq = nm.derive(qq, cfg.replace(engine="qnnpack"))
    sxw = f32(qp.scales["pooled"] * qp.w1_scale[j])
    assert ipq.torch_fc1_bias_int[j] == np.rint(f32(qp.b1[j] * f32(f32(1) / sxw)))
    assert ipq.hw_fc1_bias[j] == int(ipq.torch_fc1_bias_int[j]) << f
    assert ipq.torch_fc1_bias_f32[j] == 0
    assert set(ip.zero_points) == set(ACTIVATIONS)
