"""tse.rtl.unit.TSEUnit in Amaranth's simulator: the whole unit against the model, bit for bit.

Every output beat equals kernels.run(..., "hw")["output"] (and the streaming model's), every
gate the probe reports equals the model's gate stage, TLAST marks each frame's last beat;
at the full-throughput depth the input never stalls and the strip-buffer occupancy peaks
exactly where the streaming model's does. Also: backpressure on both sides, a buffer of one
strip, early and late TLAST, a reset in the middle of a frame.
"""
from __future__ import annotations

import numpy as np
import pytest

from tse.ref_model import kernels, streaming
from tse.ref_model.config import TSEConfig
from tse.ref_model.hw_profile import DEFAULT_HW
from tse.rtl.unit import TSEUnit

from rtl_helpers import frame_beats, gates_of, outputs_of, run_unit, small_case

ROW = TSEConfig(channels=8, height=6, width=8, tile="3xW", reduction=2, lanes=2,
                excite_multipliers=4)

CONFIGS = {
    "row-strip": ROW,
    "se-P1": TSEConfig(channels=6, height=5, width=7, tile="HxW", reduction=3, lanes=1,
                       excite_multipliers=3),
    "column-strip-partial": TSEConfig(channels=8, height=5, width=9, tile="Hx2", reduction=4,
                                      lanes=4, excite_multipliers=16),
    "patch-partial-full-rate": TSEConfig(channels=8, height=7, width=8, tile="3x3",
                                         reduction=2, lanes=2, excite_multipliers=8),
    "patch-partial-PeqC": TSEConfig(channels=8, height=7, width=8, tile="3x3", reduction=2,
                                    lanes=8, excite_multipliers=8),
    "se-PeqC": TSEConfig(channels=8, height=4, width=5, tile="HxW", reduction=2, lanes=8,
                         excite_multipliers=4),
    "row-partial-Q1": TSEConfig(channels=4, height=5, width=6, tile="2xW", reduction=2,
                                lanes=2, excite_multipliers=1),
    "saturating-narrow": TSEConfig(channels=8, height=4, width=6, tile="2x3", reduction=2,
                                   lanes=4, excite_multipliers=3,
                                   hw=DEFAULT_HW.replace(saturate=True, sum_bits=9,
                                                         fc1_acc_bits=13, fc2_acc_bits=12,
                                                         bias_frac_bits=4)),
    "exact-mean-half-up-gate5": TSEConfig(channels=4, height=6, width=5, tile="4x2",
                                          reduction=1, lanes=2, excite_multipliers=2,
                                          hw=DEFAULT_HW.replace(
                                              mean_rounding="half_even", gate_bits=5,
                                              reciprocal_bits=16, fc1_rounding="half_up",
                                              fc2_rounding="half_up", mul_rounding="half_up",
                                              fc1_multiplier_bits=14)),
}


def _check(cfg, ip, x, res):
    ref = kernels.run(cfg, ip, x, "hw")
    np.testing.assert_array_equal(outputs_of(res, cfg), ref["output"])
    np.testing.assert_array_equal(gates_of(res, cfg), ref["gate"])
    per_frame = cfg.beats_per_frame
    assert [i for i, (_, last) in enumerate(res["out"]) if last] == \
        [per_frame * (n + 1) - 1 for n in range(x.shape[0])]
    return ref


@pytest.mark.parametrize("name", list(CONFIGS))
def test_unit_matches_model(name):
    cfg, ip, x = small_case(CONFIGS[name], seed=len(name), frames=2)
    res = run_unit(TSEUnit(cfg, ip), frame_beats(x, cfg.lanes))
    _check(cfg, ip, x, res)
    assert res["error"] == 0
    model = streaming.run(cfg, ip, x, profile="hw")
    np.testing.assert_array_equal(outputs_of(res, cfg), model["output"])
    if cfg.excite_keeps_up:              # every strip outlasts the excite latency
        assert res["in_stalls"] == 0 == model["stats"]["input_stall_cycles"]
        assert max(res["levels"]) == model["stats"]["peak_strip_buffer_occupancy"]
        if cfg.height % cfg.tile_rows == 0:   # equal strips: one output beat per clock
            assert np.all(np.diff(res["out_cycles"]) == 1)    # across the frame boundary
    assert max(res["levels"]) <= cfg.strip_buffer_depth + 1


def test_unit_with_golden_vectors():
    """Parameters and frames from the quantized PyTorch block (tse.quant.reference.build)."""
    from tse.quant.reference import build
    from tse.ref_model import numerics as nm
    cfg = CONFIGS["row-strip"]
    ref = build(cfg, frames=2)
    ip = nm.derive(ref.params, cfg)
    x = kernels.nhwc(ref.codes["input"])
    res = run_unit(TSEUnit(cfg, ip), frame_beats(x, cfg.lanes))
    _check(cfg, ip, x, res)
    assert res["in_stalls"] == 0


def test_backpressure_on_both_sides_loses_nothing():
    cfg, ip, x = small_case(ROW, seed=5, frames=2)
    rng = np.random.default_rng(0)
    gaps = rng.random(20000) < 0.3
    stalls = rng.random(20000) < 0.4
    res = run_unit(TSEUnit(cfg, ip), frame_beats(x, cfg.lanes),
                   in_valid=lambda c: not gaps[c], out_ready=lambda c: not stalls[c])
    _check(cfg, ip, x, res)


def test_one_strip_buffer_stalls_but_is_exact():
    cfg, ip, x = small_case(ROW.replace(buffer_depth=ROW.strip_beats), seed=6, frames=2)
    res = run_unit(TSEUnit(cfg, ip), frame_beats(x, cfg.lanes))
    _check(cfg, ip, x, res)
    assert res["in_stalls"] > 0
    assert max(res["levels"]) <= cfg.strip_beats + 1


@pytest.mark.parametrize("fault", ["early", "late"])
def test_misplaced_tlast_sets_error_and_resynchronizes(fault):
    cfg, ip, x = small_case(ROW, seed=7, frames=2)
    good = frame_beats(x, cfg.lanes)
    n = cfg.beats_per_frame
    if fault == "early":        # frame 0 ends 10 beats early: the unit pads it
        bad = good[:n - 11] + [(good[n - 11][0], True)]
    else:                       # frame 0 runs 3 beats long: the unit drops the excess
        bad = good[:n - 1] + [(good[n - 1][0], False)] + [(0, False), (0, False), (0, True)]
    res = run_unit(TSEUnit(cfg, ip), bad + good[n:], expect_out=2 * n)
    assert res["error"] == 1
    ref = kernels.run(cfg, ip, x, "hw")
    np.testing.assert_array_equal(outputs_of(res, cfg)[1], ref["output"][1])
    assert [i for i, (_, last) in enumerate(res["out"]) if last] == [n - 1, 2 * n - 1]
    if fault == "late":         # the frame itself was whole: its output is right too
        np.testing.assert_array_equal(outputs_of(res, cfg)[0], ref["output"][0])


def test_reset_mid_frame_leaves_it_ready_for_a_clean_frame():
    cfg, ip, x = small_case(ROW, seed=8, frames=2)
    beats = frame_beats(x, cfg.lanes)
    n = cfg.beats_per_frame
    partial = n + n // 2 + 3                 # a frame and a half, then reset
    res = run_unit(TSEUnit(cfg, ip), beats[:partial] + beats[n:], reset_after=partial,
                   expect_out=n)
    assert res["error"] == 0
    ref = kernels.run(cfg, ip, x, "hw")
    np.testing.assert_array_equal(outputs_of(res, cfg)[0], ref["output"][1])
