"""tse.ref_model.kernels: the numba whole-frame kernels, both profiles.

torch profile == quantized PyTorch at every stage (zero mismatches): a fixed regression set of
calibrated blocks (tse.quant.reference.build, both engines, every tiling, non-dividing tiles,
non-zero zero points) and random configurations, parameters and codes (hypothesis).
hw profile == two independent oracles: exact Python integer/fraction arithmetic (any widths)
and fxpmath fixed-point registers with explicit rounding and saturation (small cases).
hw distance from torch is reported; bad input is an InputError.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from fxpmath import Fxp
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tse.quant.reference import build
from tse.ref_model import kernels, numerics as nm
from tse.ref_model.config import TSEConfig
from tse.ref_model.errors import ConfigError, InputError
from tse.ref_model.hw_profile import DEFAULT_HW, min_reciprocal_bits, required_bits, tile_counts

from test_numerics import (SETTINGS, examples, nchw, nhwc, random_quant_params,
                           torch_block, tse_cases)

STAGES = ("pooled", "hidden", "excite", "gate", "output")
pytestmark = pytest.mark.filterwarnings("ignore:.*quantized tensor creation:UserWarning")

REGRESSION = [
    TSEConfig(),                                                           # C=128 28x28 7xW
    TSEConfig(tile="HxW"),
    TSEConfig(tile="7x7"),
    TSEConfig(tile="Hx3"),
    TSEConfig(channels=24, height=13, width=11, tile="5x4", reduction=3, lanes=4),
    TSEConfig(channels=16, height=9, width=7, tile="2xW", reduction=16, lanes=16),
    TSEConfig(channels=1, height=5, width=7, tile="2x3", reduction=1, lanes=1),
    TSEConfig(channels=3, height=1, width=9, tile="1x4", reduction=1, lanes=3),
    TSEConfig(channels=64, height=15, width=15, tile="Hx4", reduction=8, lanes=8),
]


def _assert_torch_profile(cfg, ref_codes, x_nhwc, ip):
    out = kernels.run(cfg, ip, x_nhwc, "torch")
    for stage in STAGES:
        got = kernels.nchw(out[stage])
        bad = int((got != ref_codes[stage]).sum())
        assert bad == 0, f"{stage}: {bad} of {got.size} codes differ from PyTorch"
    return out


@pytest.mark.parametrize("engine", ["fbgemm", "qnnpack"])
@pytest.mark.parametrize("cfg", REGRESSION, ids=lambda c: f"C{c.channels}-{c.height}x{c.width}"
                                                         f"-{c.tile}-r{c.reduction}")
def test_regression_torch_profile_matches_pytorch(cfg, engine):
    cfg = cfg.replace(engine=engine)
    ref = build(cfg, frames=2)
    ip = nm.derive(ref.params, cfg)
    x = kernels.nhwc(ref.codes["input"])
    out = _assert_torch_profile(cfg, ref.codes, x, ip)
    par = kernels.run(cfg, ref.params, x, "torch", parallel=True)
    for stage in nm.STAGES:
        np.testing.assert_array_equal(par[stage], out[stage])


@pytest.mark.parametrize("engine", ["fbgemm", "qnnpack"])
def test_regression_nonzero_zero_points(tmp_path, engine):
    """Activations with negative values (zero points inside 1..254), from files."""
    cfg = TSEConfig(channels=32, height=11, width=13, tile="3x5", reduction=4, lanes=8,
                    engine=engine, seed=4)
    rng = np.random.default_rng(0)
    for name, n in (("calib", 4), ("input", 2)):
        a = rng.standard_normal((n, 32, 11, 13)).astype(np.float32) * 2 - 0.7
        np.save(tmp_path / f"{name}.npy", a)
    ref = build(cfg, frames=2, calibration_file=str(tmp_path / "calib.npy"),
                input_file=str(tmp_path / "input.npy"))
    assert 0 < ref.params.zero_points["input"] < 255
    _assert_torch_profile(cfg, ref.codes, kernels.nhwc(ref.codes["input"]),
                          nm.derive(ref.params, cfg))


@settings(max_examples=examples(250), **SETTINGS)
@given(case=tse_cases())
def test_torch_profile_matches_pytorch_random(case):
    """Random configurations, parameters (extreme zero points) and codes (extremes)."""
    cfg, qp, x = case
    ref = torch_block(qp, x, (cfg.tile_rows, cfg.tile_cols))
    out = kernels.run(cfg, qp, nhwc(x), "torch")
    for stage in STAGES:
        np.testing.assert_array_equal(nchw(out[stage]), ref[stage], err_msg=stage)
    # tile sums: the plain integer sum of (x - zx) over each tile
    zx = qp.zero_points["input"]
    xs = x.astype(np.int64) - zx
    th, tw = cfg.tile_rows, cfg.tile_cols
    for i in range(cfg.tiles_y):
        for j in range(cfg.tiles_x):
            want = xs[:, :, i * th:(i + 1) * th, j * tw:(j + 1) * tw].sum(axis=(2, 3))
            np.testing.assert_array_equal(out["tile_sums"][:, i, j, :], want)


@settings(max_examples=examples(40), **SETTINGS)
@given(case=tse_cases(max_side=12, max_channels=16, max_frames=3))
def test_parallel_equals_serial(case):
    cfg, qp, x = case
    for profile in ("torch", "hw"):
        a = kernels.run(cfg, qp, nhwc(x), profile)
        b = kernels.run(cfg, qp, nhwc(x), profile, parallel=True)
        for stage in nm.STAGES:
            np.testing.assert_array_equal(a[stage], b[stage])


def test_changed_int_params_run_their_own_kernels():
    """A copy of IntParams with other weights (dataclasses.replace, as tse mutate's targeted
    sets make them) computes with its own: the run() cache and the tables are the copy's.
    They were shared once, and the copy returned the original's stages."""
    import dataclasses
    cfg = TSEConfig(channels=8, height=4, width=4, tile="HxW", reduction=2)
    ref = build(cfg, 1)
    ip = nm.derive(ref.params, cfg)
    x = nhwc(ref.codes["input"])
    before = kernels.run(cfg, ip, x, "hw")["excite"]
    changed = dataclasses.replace(ip, w2=np.zeros_like(ip.w2))
    after = kernels.run(cfg, changed, x, "hw")["excite"]
    assert changed.tables() is not ip.tables()
    # no weights: each excite code is its bias's alone, the same in every tile
    assert (after == after[:1, :1, :1]).all() and not np.array_equal(after, before)


# =========================================================================================
# hw profile against independent oracles
# =========================================================================================

class IntRegister:
    """A two's complement register of `bits` bits in plain Python integers."""

    def __init__(self, bits, raw=0, saturate=False):
        self.lo, self.hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        self.saturate, self.saturated = saturate, False
        self.raw = 0
        self.add(raw)

    def add(self, v):
        s = self.raw + v
        if self.saturate and not self.lo <= s <= self.hi:
            s, self.saturated = min(max(s, self.lo), self.hi), True
        assert self.lo <= s <= self.hi, "overflow the configuration should have rejected"
        self.raw = s


class FxpRegister:
    """The same register as an fxpmath fixed-point number of the hw profile's format (an
    fxpmath dtype from HwProfile.fxp_formats), overflow saturating (a saturating adder) or
    checked."""

    def __init__(self, dtype, raw=0, saturate=False):
        self.saturate, self.saturated = saturate, False
        self.reg = Fxp(None, dtype=dtype, overflow="saturate", rounding="trunc",
                       shifting="expand")
        self.frac = self.reg.n_frac
        self.reg.set_val(0, raw=True)
        self.add(raw)

    @property
    def raw(self):
        return int(np.asarray(self.reg.raw()).reshape(-1)[0])

    def add(self, v):                    # v: raw units (2**-frac)
        term = Fxp(None, signed=True, n_word=max(abs(v).bit_length() + 2, 2),
                   n_frac=self.frac)
        term.set_val(v, raw=True)
        total = self.reg + term          # exact (fxpmath grows the word)
        want = int(np.asarray(total.raw()).reshape(-1)[0])
        self.reg.set_val(total)          # saturates into the register
        if self.raw != want:
            assert self.saturate, "overflow the configuration should have rejected"
            self.saturated = True


def _round24(v: Fraction) -> Fraction:
    """v rounded to 24 significant bits, ties to even (a float32 without range limits)."""
    if v == 0:
        return v
    e = 0
    while abs(v) >= 2**24 * Fraction(2) ** e:
        e += 1
    while abs(v) < 2**23 * Fraction(2) ** e:
        e -= 1
    return round(v / Fraction(2) ** e) * Fraction(2) ** e


def _mean(s: int, n: int, zp: int, rounding: str, recip: int, shift: int) -> int:
    """The hw mean from its definition: exact (half_up, half_even) or float32 steps (f32)."""
    if rounding != "f32":
        q = _round_exact(Fraction(s, n) + zp, rounding)
    else:
        assert Fraction(recip, 2**shift) == Fraction(float(np.float32(1.0 / n)))
        a = _round24(_round24(Fraction(s)) * Fraction(recip, 2**shift))
        q = _round_exact(_round24(a + zp), "half_even")
    return min(max(q, 0), 255)


def _round_exact(value: Fraction, rounding: str) -> int:
    fl = value.numerator // value.denominator
    rest = value - fl
    half = Fraction(1, 2)
    return fl + int(rest > half or (rest == half and (rounding == "half_up" or fl % 2)))


def _requant_fxp(raw, frac, mult, shift, rounding) -> int:
    """round(raw 2**-frac * mult 2**-(shift-frac)) with fxpmath: an exact product, then a
    precision reduction with rounding 'around' (half-even) or floor(v + 1/2) (half-up)."""
    acc = Fxp(None, signed=True, n_word=max(abs(raw).bit_length() + 2, 2), n_frac=int(frac))
    acc.set_val(raw, raw=True)
    m = Fxp(None, signed=False, n_word=max(int(mult).bit_length(), 1),
            n_frac=int(shift) - int(frac))
    m.set_val(int(mult), raw=True)
    prod = acc * m
    if rounding == "half_even":
        q = Fxp(None, signed=True, n_word=64, n_frac=0, rounding="around", overflow="saturate")
        q.set_val(prod)
    else:
        half = Fxp(None, signed=True, n_word=4, n_frac=1)
        half.set_val(1, raw=True)
        q = Fxp(None, signed=True, n_word=64, n_frac=0, rounding="floor", overflow="saturate")
        q.set_val(prod + half)
    return int(np.asarray(q.raw()).reshape(-1)[0])


def _requant_exact(raw, frac, mult, shift, rounding) -> int:
    return _round_exact(Fraction(raw * int(mult), 1 << int(shift)), rounding)


def oracle_hw(cfg: TSEConfig, ip: nm.IntParams, x: np.ndarray, use_fxp: bool) -> dict:
    """The hw profile written out from its definition (docs/numerics.md), per element, in
    Python integers and fractions (use_fxp=False) or fxpmath registers (use_fxp=True)."""
    hw, f = cfg.hw, cfg.hw.bias_frac_bits
    reg = FxpRegister if use_fxp else IntRegister
    requant = _requant_fxp if use_fxp else _requant_exact
    zx, zh, ze, zo = (ip.zero_points[r] for r in ("input", "hidden", "excite", "output"))
    n_frames, height, width, channels = x.shape
    th, tw, ty, tx, hid = cfg.tile_rows, cfg.tile_cols, cfg.tiles_y, cfg.tiles_x, cfg.hidden
    w1, w2 = ip.w1.astype(int), ip.w2.astype(int)
    out = {k: np.zeros((n_frames, ty, tx, c), np.int64) for k, c in (
        ("tile_sums", channels), ("pooled", channels), ("hidden", hid),
        ("excite", channels), ("gate", channels))}
    out["output"] = np.zeros(x.shape, np.int64)
    sat = {"tile_sums": 0, "hidden": 0, "excite": 0}

    formats = hw.fxp_formats()

    def kw(reg_name, bits, raw=0):
        return (dict(dtype=formats[reg_name], raw=raw, saturate=hw.saturate) if use_fxp
                else dict(bits=bits, raw=raw, saturate=hw.saturate))

    for n in range(n_frames):
        for i in range(ty):
            for j in range(tx):
                rows = range(i * th, min(height, (i + 1) * th))
                cols = range(j * tw, min(width, (j + 1) * tw))
                count = len(rows) * len(cols)
                pooled = []
                for c in range(channels):
                    acc = reg(**kw("tile_sum", hw.sum_bits))
                    for h in rows:
                        for w in cols:
                            acc.add(int(x[n, h, w, c]) - zx)
                    sat["tile_sums"] += acc.saturated
                    s = acc.raw
                    out["tile_sums"][n, i, j, c] = s
                    kind = nm.tile_kind(i, j, cfg)
                    pooled.append(_mean(s, count, zx, hw.mean_rounding,
                                        int(ip.hw_recip[kind]), int(ip.hw_recip_shift[kind])))
                hidden = []
                for k in range(hid):
                    acc = reg(**kw("fc1_acc", hw.fc1_acc_bits + f, int(ip.hw_fc1_bias[k])))
                    for c in range(channels):
                        acc.add(((pooled[c] - zx) * int(w1[k, c])) << f)
                    sat["hidden"] += acc.saturated
                    v = requant(acc.raw, f, ip.hw_fc1_mult[k], ip.hw_fc1_shift[k],
                                hw.fc1_rounding)
                    hidden.append(min(max(v + zh, zh), 255))
                excite = []
                for c in range(channels):
                    acc = reg(**kw("fc2_acc", hw.fc2_acc_bits + f, int(ip.hw_fc2_bias[c])))
                    for k in range(hid):
                        acc.add(((hidden[k] - zh) * int(w2[c, k])) << f)
                    sat["excite"] += acc.saturated
                    v = requant(acc.raw, f, ip.hw_fc2_mult[c], ip.hw_fc2_shift[c],
                                hw.fc2_rounding)
                    excite.append(min(max(v + ze, 0), 255))
                out["pooled"][n, i, j] = pooled
                out["hidden"][n, i, j] = hidden
                out["excite"][n, i, j] = excite
                out["gate"][n, i, j] = [ip.sigmoid_lut[e] for e in excite]
    for n in range(n_frames):
        for h in range(height):
            for w in range(width):
                for c in range(channels):
                    p = (int(x[n, h, w, c]) - zx) * int(out["gate"][n, h // th, w // tw, c])
                    v = (_requant_fxp(p, 0, ip.hw_mul_mult[0], ip.hw_mul_shift[0],
                                      hw.mul_rounding) if use_fxp else
                         _requant_exact(p, 0, ip.hw_mul_mult[0], ip.hw_mul_shift[0],
                                        hw.mul_rounding))
                    out["output"][n, h, w, c] = min(max(v + zo, 0), 255)
    out["saturated"] = sat
    return out


@st.composite
def hw_widths(draw, cfg: TSEConfig, small: bool):
    """Random hw widths valid for cfg; small keeps fxpmath's rounding exact (< 2**53)."""
    counts = tile_counts(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols)
    mean_rounding = draw(st.sampled_from(["half_up", "half_even", "f32"]))
    least = 24 if mean_rounding == "f32" else max(min_reciprocal_bits(n) for n in counts)
    assume(least <= 30)
    saturate = draw(st.booleans())
    need = required_bits(cfg.channels, cfg.hidden, max(counts))
    mb_hi = 16 if small else 31
    f = draw(st.integers(0, 8 if small else 24))
    widths = dict(
        reciprocal_bits=draw(st.integers(least, 30)),
        fc1_multiplier_bits=draw(st.integers(2, mb_hi)),
        fc2_multiplier_bits=draw(st.integers(2, mb_hi)),
        mul_multiplier_bits=draw(st.integers(2, mb_hi)),
        bias_frac_bits=f,
        mean_rounding=mean_rounding,
        fc1_rounding=draw(st.sampled_from(["half_up", "half_even"])),
        fc2_rounding=draw(st.sampled_from(["half_up", "half_even"])),
        mul_rounding=draw(st.sampled_from(["half_up", "half_even"])),
        saturate=saturate)
    for name, bits in need.items():   # narrow (saturating) or the least safe width + slack
        lo = 3 if saturate else bits
        widths[name] = draw(st.integers(lo, (bits + 4) if small else min(bits + 12, 62 - f)))
    return DEFAULT_HW.replace(**widths)


def _hw_case(data, small):
    cfg, qp, x = data.draw(tse_cases(max_side=6 if small else 9,
                                     max_channels=8 if small else 12, max_frames=1))
    hw = data.draw(hw_widths(cfg, small))
    try:
        cfg = cfg.replace(hw=hw)
        ip = nm.derive(qp, cfg)
    except ConfigError:
        assume(False)             # e.g. a bias too large for the drawn accumulator
    if small:                     # fxpmath rounds through float64: keep products < 2**53
        f = hw.bias_frac_bits
        big = max(int(np.abs(ip.hw_fc1_bias).max()), int(np.abs(ip.hw_fc2_bias).max()))
        acc_bits = max(hw.fc1_acc_bits, hw.fc2_acc_bits, big.bit_length() - f + 1) + f
        assume(acc_bits + max(hw.fc1_multiplier_bits, hw.fc2_multiplier_bits) <= 52)
    return cfg, ip, nhwc(x)


def _assert_same(got, want):
    for stage in nm.STAGES:
        np.testing.assert_array_equal(got[stage], want[stage], err_msg=stage)
    assert got["saturated"] == want["saturated"]


@settings(max_examples=examples(60), **SETTINGS)
@given(data=st.data())
def test_hw_kernels_match_fxpmath_oracle(data):
    cfg, ip, x = _hw_case(data, small=True)
    _assert_same(kernels.run(cfg, ip, x, "hw"), oracle_hw(cfg, ip, x, use_fxp=True))


@settings(max_examples=examples(200), **SETTINGS)
@given(data=st.data())
def test_hw_kernels_match_exact_oracle(data):
    cfg, ip, x = _hw_case(data, small=False)
    _assert_same(kernels.run(cfg, ip, x, "hw"), oracle_hw(cfg, ip, x, use_fxp=False))


@pytest.mark.parametrize("engine", ["fbgemm", "qnnpack"])
def test_hw_default_preset_matches_exact_oracle_on_a_real_block(engine):
    cfg = TSEConfig(channels=16, height=9, width=10, tile="4x3", reduction=4, lanes=4,
                    engine=engine)
    ref = build(cfg, frames=1)
    ip = nm.derive(ref.params, cfg)
    x = kernels.nhwc(ref.codes["input"])
    _assert_same(kernels.run(cfg, ip, x, "hw"), oracle_hw(cfg, ip, x, use_fxp=False))


def test_fxp_formats_state_the_registers():
    hw = DEFAULT_HW.replace(sum_bits=20, fc1_acc_bits=26, bias_frac_bits=12)
    formats = hw.fxp_formats()
    assert formats["tile_sum"] == "fxp-s20/0" and formats["fc1_acc"] == "fxp-s38/12"
    for name, dtype in formats.items():
        r = Fxp(None, dtype=dtype)
        assert r.dtype == dtype, name


def test_saturation_is_counted():
    qp = random_quant_params(7, 8, 2, "fbgemm", True, "random")
    hw = DEFAULT_HW.replace(sum_bits=6, fc1_acc_bits=8, fc2_acc_bits=6, saturate=True)
    cfg = TSEConfig(channels=8, reduction=4, lanes=8, height=6, width=6, tile="3x3", hw=hw)
    ip = nm.derive(qp, cfg)
    x = np.full((1, 6, 6, 8), 255, np.uint8)
    x[..., ::2] = 0
    got = kernels.run(cfg, ip, x, "hw")
    assert got["saturated"]["tile_sums"] > 0
    _assert_same(got, oracle_hw(cfg, ip, x, use_fxp=False))
    assert kernels.run(cfg, ip, x, "torch")["saturated"] == {"tile_sums": 0, "hidden": 0,
                                                             "excite": 0}


# =========================================================================================
# hw distance from torch
# =========================================================================================

@pytest.mark.parametrize("engine", ["fbgemm", "qnnpack"])
def test_hw_distance_is_reported(engine):
    cfg = TSEConfig(engine=engine)
    ref = build(cfg, frames=4)
    report = kernels.hw_distance(cfg, ref.params, kernels.nhwc(ref.codes["input"]))
    for kind in ("propagated", "local"):
        assert set(report[kind]) == set(STAGES)
        for stage, r in report[kind].items():
            assert set(r) == {"values", "mismatches", "mismatch_rate", "max_err_lsb"}
            assert r["mismatch_rate"] <= 1e-3, (kind, stage, r)   # docs/numerics.md
    assert report["saturated"] == {"tile_sums": 0, "hidden": 0, "excite": 0}
    # a coarse preset is measurably further away
    coarse = cfg.replace(hw=DEFAULT_HW.replace(fc1_multiplier_bits=6, fc2_multiplier_bits=6,
                                               mul_multiplier_bits=6, bias_frac_bits=0))
    far = kernels.hw_distance(coarse, ref.params, kernels.nhwc(ref.codes["input"]))
    assert far["propagated"]["output"]["mismatches"] > report["propagated"]["output"][
        "mismatches"]


# =========================================================================================
# Bad input
# =========================================================================================

@pytest.fixture(scope="module")
def small():
    cfg = TSEConfig(channels=8, height=5, width=6, tile="2x3", reduction=2, lanes=4)
    return cfg, nm.derive(random_quant_params(1, 8, 4, "fbgemm", True), cfg)


@pytest.mark.parametrize("x, match", [
    (np.zeros((1, 5, 6, 8), np.float32), "dtype float32"),
    (np.zeros((1, 5, 6, 8), np.bool_), "dtype bool"),
    (np.zeros((1, 8, 5, 6), np.uint8), r"shape \[1, 8, 5, 6\]"),
    (np.zeros((5, 6, 8), np.uint8), "shape"),
    (np.zeros((0, 5, 6, 8), np.uint8), "N >= 1"),
    (np.full((1, 5, 6, 8), 256, np.int16), "out of range"),
    (np.full((1, 5, 6, 8), -1, np.int32), "out of range"),
    (np.zeros((1, 5, 12, 8), np.uint8)[:, :, ::2], "C-contiguous"),
    ([[1, 2]], "list"),
])
def test_bad_input_is_an_input_error(small, x, match):
    cfg, ip = small
    with pytest.raises(InputError, match=match) as e:
        kernels.run(cfg, ip, x, "torch")
    assert "\n" not in str(e.value)


def test_integer_codes_in_range_are_accepted(small):
    cfg, ip = small
    x = np.random.default_rng(0).integers(0, 256, (2, 5, 6, 8))
    a = kernels.run(cfg, ip, x, "hw")
    b = kernels.run(cfg, ip, x.astype(np.uint8), "hw")
    np.testing.assert_array_equal(a["output"], b["output"])


def test_bad_params_and_profile(small):
    cfg, ip = small
    x = np.zeros((1, 5, 6, 8), np.uint8)
    with pytest.raises(ConfigError, match="profile"):
        kernels.run(cfg, ip, x, "float")
    with pytest.raises(InputError, match="do not match"):
        kernels.run(cfg.replace(channels=16, lanes=4), ip, np.zeros((1, 5, 6, 16), np.uint8))
    with pytest.raises(InputError, match="tile element counts"):
        kernels.run(cfg.replace(tile="3x3"), ip, x)
    with pytest.raises(InputError, match="hw widths"):
        kernels.run(cfg.replace(hw=DEFAULT_HW.replace(bias_frac_bits=8)), ip, x)
    with pytest.raises(InputError, match="QuantParams"):
        kernels.run(cfg, "params", x)


def test_int_params_pickle_without_their_compiled_kernels():
    """kernels.run keeps a compiled Kernel with the IntParams; a pickled copy (a worker
    process's) leaves it behind and compiles its own, with the same codes."""
    import pickle

    cfg = TSEConfig(channels=12, height=9, width=7, tile="4xW", reduction=3, lanes=4)
    ip = nm.derive(build(cfg).params, cfg)
    x = np.random.default_rng(5).integers(0, 256, (2, 9, 7, 12), dtype=np.uint8)
    first = kernels.run(cfg, ip, x)
    assert ip._kernels
    copy = pickle.loads(pickle.dumps(ip))
    assert not copy._kernels and np.array_equal(copy.hw_fc1_mult, ip.hw_fc1_mult)
    again = kernels.run(cfg, copy, x)
    assert all(np.array_equal(first[s], again[s]) for s in nm.STAGES)
