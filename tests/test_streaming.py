"""tse.ref_model.streaming: the cycle-stepped dataflow model of the unit.

Bit for bit: streaming == kernels (both profiles, every stage, saturation counts) ==
quantized PyTorch (torch profile), on a regression set and random configurations.
Timing: the strip buffer's peak occupancy, the excite latency it assumes, stalls.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tse.quant.reference import build
from tse.ref_model import kernels, numerics as nm, plan, streaming
from tse.ref_model.config import TSEConfig
from tse.ref_model.errors import ConfigError, InputError
from tse.ref_model.hw_profile import DEFAULT_HW

from test_numerics import (SETTINGS, examples, nchw, nhwc, random_quant_params,
                           torch_block, tse_cases)

STAGES = ("pooled", "hidden", "excite", "gate", "output")
pytestmark = pytest.mark.filterwarnings("ignore:.*quantized tensor creation:UserWarning")


def _assert_same(a, b):
    for stage in nm.STAGES:
        np.testing.assert_array_equal(a[stage], b[stage], err_msg=stage)
    assert a["saturated"] == b["saturated"]


@pytest.mark.parametrize("engine", ["fbgemm", "qnnpack"])
@pytest.mark.parametrize("cfg", [
    # lanes chosen so that every strip, the short last one too, outlasts the excite
    # latency (cfg.excite_keeps_up): these must never stall
    TSEConfig(channels=16, height=9, width=7, tile="4xW", reduction=4, lanes=1,
              excite_multipliers=4),
    TSEConfig(channels=24, height=13, width=11, tile="5x4", reduction=3, lanes=4),
    TSEConfig(channels=8, height=5, width=6, tile="HxW", reduction=2, lanes=2),
    TSEConfig(channels=6, height=7, width=9, tile="Hx2", reduction=3, lanes=1),
], ids=lambda c: f"C{c.channels}-{c.height}x{c.width}-{c.tile}")
def test_regression_streaming_matches_kernels_and_pytorch(cfg, engine):
    cfg = cfg.replace(engine=engine)
    ref = build(cfg, frames=2)
    ip = nm.derive(ref.params, cfg)
    x = kernels.nhwc(ref.codes["input"])
    for profile in ("torch", "hw"):
        got = streaming.run(cfg, ip, x, profile=profile)
        _assert_same(got, kernels.run(cfg, ip, x, profile))
        if profile == "torch":
            for stage in STAGES:
                np.testing.assert_array_equal(kernels.nchw(got[stage]), ref.codes[stage])
        assert cfg.excite_keeps_up and not got["stats"]["stalls"]


@settings(max_examples=examples(120), **SETTINGS)
@given(case=tse_cases(max_side=10, max_channels=12, max_frames=2), data=st.data())
def test_streaming_matches_kernels_and_pytorch_random(case, data):
    cfg, qp, x = case
    strip = cfg.strip_beats
    depth = data.draw(st.integers(strip, cfg.full_throughput_depth + 4))
    ip = nm.derive(qp, cfg)
    ref = torch_block(qp, x, (cfg.tile_rows, cfg.tile_cols))
    for profile in ("torch", "hw"):
        got = streaming.run(cfg, ip, nhwc(x), depth=depth, profile=profile)
        _assert_same(got, kernels.run(cfg, ip, nhwc(x), profile))
        if profile == "torch":
            for stage in STAGES:
                np.testing.assert_array_equal(nchw(got[stage]), ref[stage], err_msg=stage)
    stats = got["stats"]
    assert stats["peak_strip_buffer_occupancy"] <= depth
    assert stats["excite_latency_cycles"] == cfg.excite_latency_cycles
    assert stats["stalls"] == (stats["input_stall_cycles"] > 0)
    # The depth formula's stated limit (README): every strip, the frame's short last strip
    # included, must last at least the excite latency, or the excite MAC lags and the input
    # stalls (test_a_short_last_strip_shorter_than_the_latency_stalls_at_full_depth).
    if depth >= cfg.full_throughput_depth and cfg.excite_keeps_up:
        assert not stats["stalls"]        # the excite MAC keeps up and the buffer suffices


@settings(max_examples=examples(40), **SETTINGS)
@given(case=tse_cases(max_side=8, max_channels=8, max_frames=1), sat_bits=st.integers(3, 9))
def test_streaming_saturation_matches_kernels(case, sat_bits):
    cfg, qp, x = case
    cfg = cfg.replace(hw=DEFAULT_HW.replace(sum_bits=sat_bits, fc1_acc_bits=sat_bits + 4,
                                            fc2_acc_bits=sat_bits + 4, saturate=True))
    ip = nm.derive(qp, cfg)
    _assert_same(streaming.run(cfg, ip, nhwc(x), profile="hw"),
                 kernels.run(cfg, ip, nhwc(x), "hw"))


# =========================================================================================
# Strip buffer and timing
# =========================================================================================

@pytest.fixture(scope="module")
def default_like():
    """Row strips of 7 rows, 4 strips a frame, two frames back to back."""
    cfg = TSEConfig(channels=16, height=28, width=8, tile="7xW", reduction=4, lanes=8,
                    excite_multipliers=4)
    qp = random_quant_params(2, 16, 4, "fbgemm", True)
    x = np.random.default_rng(0).integers(0, 256, (2, 28, 8, 16)).astype(np.uint8)
    return cfg, nm.derive(qp, cfg), x


def test_full_throughput_depth_is_the_peak_and_does_not_stall(default_like):
    cfg, ip, x = default_like
    latency = plan.excite_latency_cycles(16, 4, 1, 4)
    assert latency <= cfg.strip_beats               # the MAC keeps up
    stats = streaming.run(cfg, ip, x)["stats"]
    assert stats["excite_latency_cycles"] == latency == cfg.excite_latency_cycles
    assert stats["depth"] == cfg.full_throughput_depth == cfg.strip_beats + latency
    assert stats["peak_strip_buffer_occupancy"] == cfg.full_throughput_depth
    assert stats["input_stall_cycles"] == 0 and not stats["stalls"]
    beats = 2 * cfg.beats_per_frame
    # the two input slices' cycles, the last strip's gates `latency` cycles after the last
    # input beat, then the strip drains
    assert stats["cycles"] == beats + 2 + latency + cfg.strip_beats


def test_a_shallower_buffer_stalls_the_input(default_like):
    cfg, ip, x = default_like
    full = streaming.run(cfg, ip, x)
    for depth in (cfg.strip_beats, cfg.full_throughput_depth - 1):
        got = streaming.run(cfg, ip, x, depth=depth)
        _assert_same(got, full)                      # same results, later
        stats = got["stats"]
        assert stats["stalls"] and stats["input_stall_cycles"] > 0
        assert stats["peak_strip_buffer_occupancy"] == depth
        assert stats["cycles"] == full["stats"]["cycles"] + stats["input_stall_cycles"]
    # at depth = one strip every strip but the very last waits out the whole latency
    got = streaming.run(cfg, ip, x, depth=cfg.strip_beats)["stats"]
    assert got["input_stall_cycles"] == (2 * cfg.tiles_y - 1) * cfg.excite_latency_cycles


def test_plain_se_needs_the_whole_frame(default_like):
    _, _, x = default_like
    cfg = TSEConfig(channels=16, height=28, width=8, tile="HxW", reduction=4, lanes=8,
                    excite_multipliers=4)
    ip = nm.derive(random_quant_params(2, 16, 4, "fbgemm", True), cfg)
    assert cfg.strip_beats == cfg.beats_per_frame
    one = streaming.run(cfg, ip, x[:1], depth=cfg.strip_beats)["stats"]
    assert not one["stalls"]                          # one frame: nothing arrives meanwhile
    two = streaming.run(cfg, ip, x, depth=cfg.strip_beats)["stats"]
    assert two["input_stall_cycles"] == cfg.excite_latency_cycles


def test_depth_smaller_than_a_strip_is_rejected(default_like):
    cfg, ip, x = default_like
    with pytest.raises(ConfigError, match=r"^depth: 111 is not allowed; allowed: an integer "
                                          r">= 112 \(one strip"):
        streaming.run(cfg, ip, x, depth=cfg.strip_beats - 1)


def test_slow_excite_mac_backs_up_into_the_input():
    """One multiplier: the excite latency exceeds a strip time, so even the
    full-throughput depth stalls (plan: the MAC does not keep up)."""
    cfg = TSEConfig(channels=16, height=12, width=4, tile="2xW", reduction=4, lanes=16,
                    excite_multipliers=1, engine="qnnpack")
    assert cfg.excite_latency_cycles > cfg.strip_beats
    ip = nm.derive(random_quant_params(3, 16, 4, "qnnpack", False), cfg)
    x = np.random.default_rng(1).integers(0, 256, (1, 12, 4, 16)).astype(np.uint8)
    got = streaming.run(cfg, ip, x)
    assert got["stats"]["stalls"]
    _assert_same(got, kernels.run(cfg, ip, x, cfg.profile))


def test_a_short_last_strip_shorter_than_the_latency_stalls_at_full_depth():
    """The depth formula's stated limit: a 1-row last strip (12 beats) shorter than the
    excite latency (68 cycles: 21 lead-in, 31 for the tile, 16 drain) lets the excite MAC lag
    at the full-throughput depth; 12 rows (two whole strips) of the same layer do not stall."""
    stalls = {}
    for h in (7, 12):
        cfg = TSEConfig(channels=11, height=h, width=12, tile="6xW", reduction=4, lanes=11,
                        excite_multipliers=4)
        assert cfg.excite_latency_cycles == 68 and cfg.strip_beats == 72
        assert cfg.excite_keeps_up == (h == 12)
        ip = nm.derive(random_quant_params(4, 11, cfg.hidden, "fbgemm", True), cfg)
        # three frames: the input slices' extra beats absorb the lag of the first short strip
        x = np.random.default_rng(2).integers(0, 256, (3, h, 12, 11)).astype(np.uint8)
        got = streaming.run(cfg, ip, x)
        _assert_same(got, kernels.run(cfg, ip, x, cfg.profile))
        stalls[h] = got["stats"]["input_stall_cycles"]
    assert stalls[7] > 0 and stalls[12] == 0, stalls


# =========================================================================================
# Protocol and bad input
# =========================================================================================

def test_line_accumulator_checks_the_last_flag(default_like):
    cfg, ip, x = default_like
    beats = list(streaming.beats_of(cfg, x[:1]))
    beats[5] = streaming.Beat(beats[5].lanes, True)          # TLAST too early
    source = streaming.Fifo("beats", len(beats))         # the input slice, already full
    for b in beats:
        source.push(b)
    proc = streaming.line_accumulator(
        cfg, ip.tables(), nm.TORCH, streaming.Clock(), source,
        streaming.StripBuffer(10**6), streaming.Fifo("sums", 100))
    with pytest.raises(streaming.StreamError, match=r"last flag True on beat \(row 0, col 2, "
                                                    r"group 1\)"):
        for _ in range(10):
            next(proc)


def test_beats_are_raster_order_channels_innermost():
    cfg = TSEConfig(channels=4, height=2, width=3, tile="1xW", reduction=2, lanes=2)
    x = np.arange(24, dtype=np.uint8).reshape(1, 2, 3, 4)
    beats = list(streaming.beats_of(cfg, x))
    assert len(beats) == cfg.beats_per_frame == 12
    assert [list(b.lanes) for b in beats[:3]] == [[0, 1], [2, 3], [4, 5]]
    assert [b.last for b in beats] == [False] * 11 + [True]


@pytest.mark.parametrize("x, match", [
    (np.zeros((1, 28, 8, 16), np.float64), "dtype"),
    (np.zeros((1, 16, 28, 8), np.uint8), "shape"),
    (np.full((1, 28, 8, 16), 999, np.int32), "out of range"),
])
def test_bad_input_is_an_input_error(default_like, x, match):
    cfg, ip, _ = default_like
    with pytest.raises(InputError, match=match):
        streaming.run(cfg, ip, x)
