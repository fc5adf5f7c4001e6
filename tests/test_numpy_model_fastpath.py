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
