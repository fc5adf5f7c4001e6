"""Three implementations of the same integer block must agree code for code: the per-element
numba kernel (ref_model.kernels, reads as the spec), the vectorized numba fast path
(ref_model.fastpath, what generates vectors quickly) and the numpy model (written from the
hw profile's definition)."""
import numpy as np
import pytest

from quant import reference
from ref_model import kernels, numerics, numpy_model
from ref_model.config import TSEConfig

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
]


def frames(cfg, seed=1):
    x = np.random.default_rng(seed).integers(0, 256, (3, cfg.height, cfg.width, cfg.channels),
                                              dtype=np.uint8)
    x[0] = 0        # extreme codes: a black frame and a saturated row
    x[1, 0] = 255
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
    from ref_model.hw_profile import HwProfile
    from ref_model.params import QuantParams

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


@pytest.mark.parametrize("mult, shift, half_up", [(11863283, 31, False), (11863283, 31, True),
                                                   (127, 15, False), (127, 15, True),
                                                   (3, 9, False), ((1 << 31) - 1, 44, True)])
def test_float64_broadcaster_rounds_every_product_exactly(mult, shift, half_up):
    """Every input code against every gate: the float64 broadcaster equals the exact rational
    rounding of (x - zx) * g * M / 2**s (Python integers), then + zo and the clamp."""
    from ref_model import fastpath

    zx, zo = 7, 3
    x = np.arange(256, dtype=np.uint8).reshape(1, 1, 256, 1)
    out = np.empty_like(x)
    wg = np.zeros(256, np.int32)
    u = np.arange(256, dtype=object) - zx
    m = mult * 2.0 ** -shift
    for g in range(256):
        gate = np.full((256, 1), g, np.uint8)
        fastpath._broadcast_hw(x, 0, 0, 1, 1, gate, np.int32(zx), float(zo), m, half_up, wg,
                               out)
        v = u * g * mult
        q = v >> shift
        rem = v - (q << shift)
        half = 1 << (shift - 1)
        up = (rem > half) | ((rem == half) & (half_up | (q % 2 == 1)))
        want = np.clip((q + up.astype(int) + zo).astype(np.int64), 0, 255)
        assert np.array_equal(out.ravel(), want), g
