"""Three implementations of the same integer block must agree code for code: the per-element
numba kernel (tse.ref_model.kernels, reads as the spec), the vectorized numba fast path
(tse.ref_model.fastpath, what generates vectors quickly) and the numpy model (written from the
hw profile's definition)."""
import numpy as np
import pytest

from tse.quant import reference
from tse.ref_model import kernels, numerics, numpy_model
from tse.ref_model.config import TSEConfig

NARROW = dict(mean_rounding="half_up", fc1_rounding="half_up", fc2_rounding="half_up",
              mul_rounding="half_up", fc1_multiplier_bits=8, fc2_multiplier_bits=9,
              mul_multiplier_bits=7, bias_frac_bits=3)
CASES = [
    (TSEConfig(), {}),
    (TSEConfig(channels=24, height=13, width=11, tile="5x4", reduction=4, lanes=8), {}),
    (TSEConfig(channels=10, height=9, width=15, tile="Hx4", reduction=2, lanes=5,
               engine="qnnpack"), NARROW),
    (TSEConfig(channels=6, height=7, width=5, tile="HxW", reduction=3, lanes=6), NARROW),
    (TSEConfig(channels=1, height=3, width=2, tile="1x1", reduction=1, lanes=1), {}),
    # line accumulator: 7 x 56 tiles fold 32 columns in uint16, then in int32; 150-row
    # tiles fold none in uint16 (255 * 150 * 2 > 65535); 260-row tiles sum in int64
    (TSEConfig(channels=5, height=15, width=56, tile="7xW", reduction=5, lanes=5), {}),
    (TSEConfig(channels=3, height=150, width=41, tile="HxW", reduction=3, lanes=3), {}),
    (TSEConfig(channels=2, height=260, width=9, tile="Hx5", reduction=2, lanes=2), {}),
    # excite MAC: C = 130 and hidden = 65 pad to 9 and 5 vectors of 16 outputs (simd.madd_pairs)
    (TSEConfig(channels=130, height=5, width=3, tile="2xW", reduction=2, lanes=5), NARROW),
]


def frames(cfg, seed=1):
    x = np.random.default_rng(seed).integers(0, 256, (4, cfg.height, cfg.width, cfg.channels),
                                              dtype=np.uint8)
    x[0] = 0        # extreme codes: a black frame, a saturated row and a saturated frame
    x[1, 0] = 255
    x[2] = 255
    return x


@pytest.mark.parametrize("cfg, widths", CASES, ids=lambda c: getattr(c, "tile", ""))
def test_fast_path_and_numpy_equal_the_per_element_kernel(cfg, widths):
    cfg = cfg.replace(hw=cfg.hw.replace(**widths))
    ip = numerics.derive(reference.build(cfg).params, cfg)
    x = frames(cfg)
    slow = {p: kernels.run(cfg, ip, x, p, fast=False) for p in ("hw", "torch")}
    for profile in ("hw", "torch"):
        fast = kernels.run(cfg, ip, x, profile, fast=True)
        for stage in numerics.STAGES:
            assert np.array_equal(slow[profile][stage], fast[stage]), (profile, stage)
    ours = numpy_model.run(cfg, ip, x)
    for stage in numerics.STAGES:
        assert np.array_equal(ours[stage], slow["hw"][stage]), stage


def test_tie_with_an_odd_output_zero_point():
    """Known answer: u = 69 - 203 = -134, gate 128, M = 3, s = 9 gives -100.5, a tie that
    half-even rounds to -100; plus the output zero point 255 is 155. Rounding after adding
    the odd zero point (154.5 -> 154) is the classic mistake this pins down."""
    from tse.ref_model.hw_profile import HwProfile
    from tse.ref_model.params import QuantParams

    hw = HwProfile(reciprocal_bits=2, fc1_multiplier_bits=2, fc2_multiplier_bits=2,
                   mul_multiplier_bits=2, bias_frac_bits=0, sum_bits=11, fc1_acc_bits=17,
                   fc2_acc_bits=17, mean_rounding="half_up", fc1_rounding="half_up",
                   fc2_rounding="half_up", mul_rounding="half_even")
    cfg = TSEConfig(channels=1, height=1, width=4, tile="HxW", reduction=1, lanes=1, hw=hw)
    params = QuantParams(
        engine="fbgemm",
        scales={"input": 0.05219966545701027, "pooled": 0.05219966545701027,
                "hidden": 0.0003970774414483458, "excite": 5.8235709730070084e-06,
                "gate": 0.00390625, "output": 0.0401393361389637},
        zero_points={"input": 203, "pooled": 203, "hidden": 0, "excite": 0, "gate": 0,
                     "output": 255},
        w1=np.array([[-51]], np.int8), w1_scale=np.array([0.00022218]),
        b1=np.array([0.00675671], np.float32), w2=np.array([[-5]], np.int8),
        w2_scale=np.array([0.00019045]), b2=np.array([0.00093375], np.float32),
        per_channel=False)
    ip = numerics.derive(params, cfg)
    assert (int(ip.hw_mul_mult[0]), int(ip.hw_mul_shift[0])) == (3, 9)
    x = np.array([217, 163, 130, 69], np.uint8).reshape(1, 1, 4, 1)
    for fast in (True, False):
        out = kernels.run(cfg, ip, x, "hw", fast=fast)
        assert out["gate"].ravel()[0] == 128
        assert out["output"].ravel()[3] == 155, fast
    assert numpy_model.run(cfg, ip, x)["output"].ravel()[3] == 155


def _exact_products(x, zx, zo, g, mult, shift, half_up):
    """The exact rational rounding of (x - zx) * g * M / 2**s (Python integers), + zo, clamp."""
    v = (x.astype(object) - zx) * g * mult
    q = v >> shift
    rem = v - (q << shift)
    half = 1 << (shift - 1)
    up = (rem > half) | ((rem == half) & (half_up | (q % 2 == 1)))
    return np.clip((q + up.astype(int) + zo).astype(np.int64), 0, 255)


NO_LINE = {(3, 9, False), (1 << 23, 31, False), (96, 12, False)}


@pytest.fixture(scope="module")
def tables():
    cfg = TSEConfig()
    return numerics.derive(reference.build(cfg).params, cfg).tables()


def _broadcast_every_pair(table, method, t, coef):
    """The broadcaster's output for every (gate code, input code) by one method: one strip
    per gate code, row g holding every input code."""
    from tse.ref_model import fastpath

    codes = np.arange(256, dtype=np.uint8)
    x = np.tile(codes, (1, 256, 1)).reshape(1, 256, 256, 1)
    gate = codes.reshape(1, 256, 1, 1)
    out = np.zeros_like(x)
    scratch = [np.zeros((1, fastpath.BLOCK), np.int32) for _ in range(2)]
    for g in range(256):
        fastpath._broadcast(x.reshape(1, 256, 256), 1, 0, g, 1, 256, gate[0, g], method, t,
                            coef, table.reshape(-1), *scratch, out.reshape(1, 256, 256))
    return out[0, :, :, 0]


CASES = [(11863283, 31, False), (11863283, 31, True), (127, 15, False), (127, 15, True),
         (3, 9, False), ((1 << 31) - 1, 44, True), (1 << 23, 31, False), (96, 12, False),
         (16777215, 40, False)]


@pytest.mark.parametrize("mult, shift, half_up", CASES)
def test_broadcaster_is_exact_for_every_input_and_gate_code(tables, mult, shift, half_up):
    """The broadcaster's table is the exact rational rounding of (x - zx) g M / 2**s + zo
    for every input and gate code, and the broadcaster gives it on all 65,536 pairs by the
    table lookup and, where fit_lines finds one, by the line. Half_even ties that no line
    follows send fit_lines to the table (NO_LINE): e.g. g = 2 of (1 << 23, 31) rounds
    u / 128, whose steps fall between u = -65|-64, 64|65 and 191|192, 129 and 127 apart,
    and the steps of floor(a u + o) are never spaced more than one apart. With zero points
    7 and 3, x = 0 maps to 3 - 7 g M / 2**s, not 0 for every g: no SCALE."""
    from tse.ref_model import fastpath

    zx, zo = 7, 3
    T = tables._replace(h_mm=mult, h_ms=shift, zx=zx, zo=zo,
                        r_mul=numerics.HALF_UP if half_up else numerics.HALF_EVEN)
    table = fastpath.broadcast_table(T, numerics.HW)
    codes = np.arange(256)
    for g in range(256):
        assert np.array_equal(table[g], _exact_products(codes, zx, zo, g, mult, shift,
                                                        half_up)), g
    assert fastpath.fit_scales(table)[0] == -1
    t, coef = fastpath.fit_lines(table)
    assert (t < 0) == ((mult, shift, half_up) in NO_LINE), t
    methods = [fastpath.TABLE] + ([fastpath.LINE] if t >= 0 else [])
    for method in methods:
        assert np.array_equal(_broadcast_every_pair(table, method, max(t, 0), coef), table), \
            method


NO_SCALE = {(3, 9, False), (1 << 23, 31, False), (96, 12, False)}


@pytest.mark.parametrize("mult, shift, half_up", CASES)
def test_broadcaster_scaling_is_exact_with_zero_points_at_zero(tables, mult, shift, half_up):
    """Zero points 0 (post-ReLU input, non-negative output: the usual case) make every row
    a rounded scaling of x through the origin; fit_scales finds one wherever a line exists
    (the same half_even ties defeat both), and the SCALE method gives the exact table on all
    65,536 pairs."""
    from tse.ref_model import fastpath

    T = tables._replace(h_mm=mult, h_ms=shift, zx=0, zo=0,
                        r_mul=numerics.HALF_UP if half_up else numerics.HALF_EVEN)
    table = fastpath.broadcast_table(T, numerics.HW)
    codes = np.arange(256)
    for g in (0, 1, 2, 127, 128, 255):
        assert np.array_equal(table[g], _exact_products(codes, 0, 0, g, mult, shift,
                                                        half_up)), g
    t, slopes = fastpath.fit_scales(table)
    assert (t < 0) == ((mult, shift, half_up) in NO_SCALE), t
    if t >= 0:
        coef = np.stack([slopes, np.zeros_like(slopes)])
        assert np.array_equal(_broadcast_every_pair(table, fastpath.SCALE, t, coef), table)


def test_float64_requantizer_equals_the_exact_one_near_ties_and_far_out():
    """The excite MAC's vectorized requantizer (float64, exact fallback near a tie) against
    numerics.requant_hw on accumulators built to land on, next to, and far from ties, for
    both roundings, and on values far beyond the 8-bit range."""
    from tse.ref_model import fastpath

    rng = np.random.default_rng(5)
    frac_bits, zo, lo = 4, 128, 0
    for rounding in (numerics.HALF_UP, numerics.HALF_EVEN):
        mult = rng.integers(1 << 20, 1 << 24, 64).astype(np.int64)
        shift = rng.integers(20, 46, 64).astype(np.int64)
        bias = rng.integers(-(1 << 30), 1 << 30, 64).astype(np.int64)
        acc = rng.integers(-(1 << 31), (1 << 31) - 1, 64).astype(np.int32)
        # exact ties: bias chosen so that (bias + acc << f) * M = (2k + 1) 2**(s-1)
        for j in range(0, 64, 4):
            mult[j], shift[j] = 3 << 20, 22 + frac_bits
            target = (2 * int(rng.integers(-60, 60)) + 1) << (shift[j] - 1)
            bias[j] = target // int(mult[j]) - (int(acc[j]) << frac_bits)
            bias[j + 1] = bias[j] + 1          # one unit beside a tie, both ways
            bias[j + 2] = bias[j] - 1
            mult[j + 1:j + 3], shift[j + 1:j + 3] = mult[j], shift[j]
        m = fastpath._multipliers(mult, shift)
        out = np.zeros(64, np.uint8)
        near = np.zeros(64, np.bool_)
        if fastpath._requant_hw(acc, bias, frac_bits, m, zo, lo, near, out):
            fastpath._requant_hw_exact(acc, bias, frac_bits, mult, shift, zo, lo, rounding,
                                       near, out)
        want = [numerics.requant_hw(int(b) + (int(a) << frac_bits), int(mu), int(s), zo, lo,
                                    rounding)
                for a, b, mu, s in zip(acc, bias, mult, shift)]
        assert out.tolist() == want, rounding
        assert len(set(want)) > 10             # not all clamped: the test can see rounding


def test_a_kernel_reused_on_frames_of_every_kind():
    """One Kernel, called on batches of different sizes, a read-only array and int64 codes,
    gives what the per-element kernel gives; a bad frame is still rejected by name."""
    from tse.ref_model.errors import InputError

    cfg = TSEConfig(channels=24, height=13, width=11, tile="5x4", reduction=4, lanes=8)
    ip = numerics.derive(reference.build(cfg).params, cfg)
    kernel = kernels.Kernel(cfg, ip, "hw")
    x = frames(cfg)
    readonly = x[:1].copy()
    readonly.flags.writeable = False
    for batch in (x, x[1:], readonly, x.astype(np.int64)):
        want = kernels.run(cfg, ip, batch, "hw", fast=False)
        got = kernel(batch)
        for stage in numerics.STAGES:
            assert np.array_equal(got[stage], want[stage]), stage
    with pytest.raises(InputError, match="shape"):
        kernel(x[:, :, :5])
