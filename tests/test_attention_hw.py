"""The hw profile of tiled ECA and SRM (tse.ref_model.attention_hw) against quantized PyTorch
and independent arithmetic, and the numba kernels and the streaming model against it, bit for
bit: odd shapes, partial edge tiles, C not a power of two, extreme codes. The same for TSE
with the 3x1 excite (attention_kernels.excite3x1_frames, excite3x1_streaming against
attention_hw.excite3x1_hw_stages), and its strip buffer's peak against tse.ref_model.buffers."""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest

from attention_cases import eca_case, srm_case
from tse.ref_model import attention_hw as ah
from tse.ref_model import attention_kernels, attention_streaming
from tse.ref_model.attention_numerics import eca_stages, prepare_eca, prepare_srm
from tse.ref_model.config import ConfigError, TSEConfig
from tse.ref_model.hw_numerics import quantize_multiplier
from tse.ref_model.hw_profile import DEFAULT_HW, reciprocal


def cfg_for(c, h, w, tile, block, lanes=1, **kw):
    return TSEConfig(channels=c, height=h, width=w, tile=f"{tile[0]}x{tile[1]}", lanes=lanes,
                     reduction=1, block=block, **kw)


def differ(a, b):
    return int((a != b).sum()), int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


ECA_CASES = [  # C, H, W, tile, k: partial edge tiles, C odd / not a power of two
    (24, 9, 7, (3, 7), None),
    (13, 7, 5, (2, 2), 5),
    (7, 5, 9, (1, 9), 3),
]


@pytest.mark.parametrize("engine_name", ["fbgemm", "qnnpack"])
@pytest.mark.parametrize("c, h, w, tile, k", ECA_CASES)
def test_eca_hw_profile_against_quantized_pytorch(engine_name, c, h, w, tile, k):
    _, q, ref = eca_case(engine_name, c, h, w, tile, k)
    p = prepare_eca(q)
    ours = ah.eca_hw_stages(ref["input"], tile, ah.eca_hw_params(p, cfg_for(c, h, w, tile, "eca")))
    assert differ(ours["pooled"], ref["pooled"]) == (0, 0)        # the f32 mean: exact
    # Without fbgemm's int16 pair saturation (a CPU kernel's quirk, not this datapath's) the
    # excite is quantized PyTorch's, code for code, on these cases (measured: docs/numerics.md)
    plain = eca_stages(ref["input"], tile, dataclasses.replace(p, pair_saturation=False))
    assert differ(ours["excite"], plain["excite"]) == (0, 0)
    for role in ("gate", "output"):
        n, worst = differ(ours[role], ref[role])
        assert worst <= 1 and n <= ref[role].size // 100, (role, n, worst)


def test_eca_excite_is_the_exactly_rounded_product():
    """Independent of attention_hw: acc from the pooled codes by a loop, times the float32
    multiplier as an exact fraction, rounded half-even (hw.fc2_rounding) with 24-bit
    multipliers (which hold a float32 exactly)."""
    c, h, w, tile, k = 13, 7, 5, (2, 2), 5
    _, q, ref = eca_case("qnnpack", c, h, w, tile, k)
    p = prepare_eca(q)
    ours = ah.eca_hw_stages(ref["input"], tile, ah.eca_hw_params(p, cfg_for(c, h, w, tile, "eca")))
    pooled = ours["pooled"].astype(int)
    for idx in np.ndindex(*pooled.shape):
        n, ch, i, j = idx
        acc = sum(int(p.taps[t]) * (pooled[n, ch + t - k // 2, i, j] - p.zx)
                  for t in range(k) if 0 <= ch + t - k // 2 < c)
        v = Fraction(acc) * Fraction(float(p.excite_mult))
        want = min(255, max(0, round(v) + p.excite_zp))            # round(): half to even
        assert ours["excite"][idx] == want, idx


SRM_CASES = [  # C, H, W, tile: every tile 2 or more elements
    (13, 7, 5, (2, 3)),
    (6, 6, 6, (6, 6)),
    (9, 9, 7, (3, 7)),
]


@pytest.mark.parametrize("engine_name", ["fbgemm", "qnnpack"])
@pytest.mark.parametrize("c, h, w, tile", SRM_CASES)
def test_srm_hw_profile_against_quantized_pytorch(engine_name, c, h, w, tile):
    _, q, ref = srm_case(engine_name, c, h, w, tile)
    hp = ah.srm_hw_params(q, prepare_srm(q), cfg_for(c, h, w, tile, "srm"))
    ours = ah.srm_hw_stages(ref["input"], tile, hp)
    assert differ(ours["pooled"], ref["pooled"]) == (0, 0)
    for role in ("std", "excite", "gate", "output"):
        n, worst = differ(ours[role], ref[role])
        assert worst <= 1 and n <= max(1, ref[role].size // 100), (role, n, worst)
    assert len(np.unique(ref["std"])) >= 3


@pytest.mark.parametrize("v", [0, 1, 2, 3, 5, 6, 7, 2**20, 2**20 + 2**10, 2**20 + 2**10 + 1,
                               (2**31 - 1)**2 - 1, 2**62 - 1])
def test_isqrt_nearest_rounds_half_up(v):
    r = math.isqrt(v)
    want = r + 1 if Fraction(v) > Fraction(2 * r + 1, 2) ** 2 else r
    assert ah.isqrt_nearest(v) == want


def test_isqrt_nearest_on_every_small_integer():
    for v in range(0, 5000):
        r = ah.isqrt_nearest(v)
        assert max(2 * r - 1, 0) ** 2 <= 4 * v < (2 * r + 1) ** 2, v  # |sqrt(v) - r| <= 1/2


def test_srm_deviation_code_against_exact_arithmetic():
    """Random tiles: the std code within one of round(sqrt(unbiased variance) * s_in / s_std)
    from exact integers (math.isqrt on a scaled value), and equal away from a rounding edge."""
    rng = np.random.default_rng(5)
    cfg = cfg_for(1, 7, 20, (7, 20), "srm")
    mean = ah.mean_tables(cfg)
    n = int(mean.counts[0])
    vr = reciprocal(n * (n - 1), DEFAULT_HW.reciprocal_bits)
    m, s = quantize_multiplier(0.37, 24)
    for trial in range(300):
        d = rng.integers(-255 if trial % 3 else -3, 256 if trial % 3 else 4, n)
        s1, s2 = int(d.sum()), int((d * d).sum())
        got = ah.srm_deviation_code(s1, s2, n, 0, np.array([vr[0]]), np.array([vr[1] - 24]),
                                    m, s + 12, 3, 1)
        exact = math.sqrt(Fraction(n * s2 - s1 * s1, n * (n - 1))) * m / 2**s
        assert abs(got - min(255, exact + 3)) <= 0.5 + 1e-6 or (got == 255 and exact + 3 > 255)


KERNEL_CASES = [  # C, H, W, tile, lanes
    (12, 9, 7, (3, 7), 4),          # partial bottom strip
    (5, 7, 5, (2, 3), 5),           # partial tiles both ways, C odd
    (6, 4, 6, (4, 6), 2),           # one tile: SE-like
]


@pytest.mark.parametrize("block", ["eca", "srm"])
@pytest.mark.parametrize("c, h, w, tile, lanes", KERNEL_CASES)
def test_kernels_and_streaming_are_the_hw_profile(block, c, h, w, tile, lanes):
    cfg = cfg_for(c, h, w, tile, block, lanes=lanes, eca_kernel=3 if block == "eca" else 0)
    if block == "eca":
        _, q, ref = eca_case("fbgemm", c, h, w, tile, 3, seed=2, frames=5)
        hp = ah.eca_hw_params(prepare_eca(q), cfg)
        profile = ah.eca_hw_stages(ref["input"], tile, hp)
        kern = attention_kernels.eca_frames(cfg, hp, np.ascontiguousarray(
            ref["input"].transpose(0, 2, 3, 1)))
    else:
        _, q, ref = srm_case("qnnpack", c, h, w, tile, seed=2, frames=5)
        hp = ah.srm_hw_params(q, prepare_srm(q), cfg)
        profile = ah.srm_hw_stages(ref["input"], tile, hp)
        kern = attention_kernels.srm_frames(cfg, hp, np.ascontiguousarray(
            ref["input"].transpose(0, 2, 3, 1)))
    x = np.ascontiguousarray(ref["input"].transpose(0, 2, 3, 1))
    stream = attention_streaming.run(cfg, hp, x)
    roles = ["tile_sums", "pooled", "excite", "gate"] + (
        ["square_sums", "std"] if block == "srm" else [])
    for role in roles:
        want = profile[role].transpose(0, 2, 3, 1)
        assert np.array_equal(kern[role], want), role
        assert np.array_equal(stream[role], want), role
    want = profile["output"].transpose(0, 2, 3, 1)
    assert np.array_equal(kern["output"], want) and np.array_equal(stream["output"], want)
    assert {0, 255} <= set(np.unique(x))                   # extreme codes streamed
    assert stream["stats"]["peak_strip_buffer_occupancy"] <= cfg.strip_beats


def test_kernels_refuse_a_config_of_another_block():
    _, q, ref = eca_case("qnnpack", 5, 7, 5, (2, 3), 3)
    cfg = cfg_for(5, 7, 5, (2, 3), "eca", eca_kernel=3)
    hp = ah.eca_hw_params(prepare_eca(q), cfg)
    with pytest.raises(ConfigError, match="block: 'srm' is not allowed for the eca kernels"):
        attention_kernels.eca_frames(cfg.replace(block="srm", eca_kernel=0), hp, ref["input"])


@pytest.mark.parametrize("changes, message", [
    ({"block": "srm", "channels": 1, "height": 4096, "width": 4096, "tile": "HxW",
      "hw": DEFAULT_HW.replace(sum_bits=40)}, r"variance numerator for block = 'srm'"),
    ({"block": "eca", "hw": DEFAULT_HW.replace(fc2_acc_bits=16)},
     r"hw.fc2_acc_bits: 16 can overflow for the eca excite"),
    ({"block": "eca", "hw": DEFAULT_HW.replace(sum_bits=12)},
     r"hw.sum_bits: 12 can overflow for tile sums of up to 196 elements"),
    ({"block": "srm", "hw": DEFAULT_HW.replace(saturate=True)},
     r"hw.saturate: True is not supported for block = 'srm'"),
])
def test_hw_widths_of_the_other_blocks_are_validated(changes, message):
    with pytest.raises(ConfigError, match=message):
        TSEConfig(lanes=1, reduction=1, **changes)


EXCITE3X1_CASES = [  # C, H, W, tile, hidden
    (12, 7, 6, (1, 6), 3),
    (13, 9, 5, (2, 5), 4),
    (5, 4, 4, (4, 4), 5),
]


@pytest.mark.parametrize("engine_name", ["fbgemm", "qnnpack"])
@pytest.mark.parametrize("c, h, w, tile, hidden", EXCITE3X1_CASES)
def test_excite3x1_hw_profile_against_quantized_pytorch(engine_name, c, h, w, tile, hidden):
    from test_attention_numerics import quantized_3x1
    from tse.quant.attention_quantized import excite3x1_params
    from tse.quant.quantized_block import run_stages
    from tse.ref_model.attention_numerics import excite3x1_stages

    model, x = quantized_3x1(engine_name, c, h, w, tile, hidden)
    ref = run_stages(model, x)
    p = excite3x1_params(model)
    cfg = TSEConfig(channels=c, height=h, width=w, tile=f"{tile[0]}x{tile[1]}", hidden=hidden,
                    lanes=1, excite_kernel="3x1")
    ours = ah.excite3x1_hw_stages(ref["input"], cfg, p)
    assert differ(ours["pooled"], ref["pooled"]) == (0, 0)
    # Without fbgemm's int16 pairs (these weights saturate them on purpose; qnnpack has
    # none), the torch profile's codes exactly: the requantizers agree on every code here.
    plain = excite3x1_stages(ref["input"], tile, dataclasses.replace(p, pair_saturation=False))
    for role in ("hidden", "excite", "gate", "output"):
        assert differ(ours[role], plain[role]) == (0, 0), role
    if engine_name == "qnnpack":
        assert differ(ours["output"], ref["output"]) == (0, 0)


# ---- the 3x1 excite: kernels and streaming model against excite3x1_hw_stages ---------------

EXCITE3X1_STREAM_CASES = [  # engine, C, H, W, tile, hidden, lanes
    ("fbgemm", 12, 7, 6, (1, 6), 3, 4),     # 1xW: seven strips, C not a power of two
    ("qnnpack", 13, 9, 5, (2, 2), 4, 1),    # lanes 1, C odd, short last strip and column
    ("qnnpack", 5, 4, 4, (4, 4), 5, 5),     # one tile row: top and bottom padding at once
    ("fbgemm", 6, 8, 3, (3, 3), 2, 6),      # lanes = C, three strips, the last one short
    ("fbgemm", 7, 5, 9, (4, 4), 3, 7),      # two strips, short last strip and column
]


def excite3x1_case(engine_name, c, h, w, tile, hidden, lanes, **kw):
    """(cfg, Excite3x1Hw, frames NHWC, excite3x1_hw_stages NHWC) of a seeded 3x1-excite block;
    frames 0 and 1 are every code 255 and every code 0."""
    from test_attention_numerics import quantized_3x1
    from tse.quant.attention_quantized import excite3x1_params
    from tse.quant.quantized_block import run_stages

    model, x = quantized_3x1(engine_name, c, h, w, tile, hidden)
    codes = run_stages(model, x)["input"]
    p = excite3x1_params(model)
    cfg = TSEConfig(channels=c, height=h, width=w, tile=f"{tile[0]}x{tile[1]}",
                    hidden=hidden, lanes=lanes, excite_kernel="3x1", **kw)
    profile = {k: v.transpose(0, 2, 3, 1) for k, v in
               ah.excite3x1_hw_stages(codes, cfg, p).items()}
    x = np.ascontiguousarray(codes.transpose(0, 2, 3, 1))
    return cfg, attention_kernels.excite3x1_hw_params(p, cfg), x, profile


EXCITE3X1_ROLES = ("tile_sums", "pooled", "hidden", "excite", "gate", "output")


@pytest.mark.parametrize("engine_name, c, h, w, tile, hidden, lanes", EXCITE3X1_STREAM_CASES)
def test_excite3x1_kernels_and_streaming_are_the_hw_profile(engine_name, c, h, w, tile, hidden,
                                                            lanes):
    from tse.ref_model import excite3x1_streaming

    cfg, hp, x, profile = excite3x1_case(engine_name, c, h, w, tile, hidden, lanes)
    assert (x[0] == 255).all() and (x[1] == 0).all()        # the extreme frames
    kern = attention_kernels.excite3x1_frames(cfg, hp, x)
    latency = 3
    stream = excite3x1_streaming.run(cfg, hp, x, excite_latency=latency)
    for role in EXCITE3X1_ROLES:
        want = profile[role]
        assert kern[role].shape == want.shape, role
        assert np.array_equal(kern[role], want), role
        assert np.array_equal(stream[role], want), role
    assert len(np.unique(profile["gate"])) >= 3              # the gates are not all one code
    stats = stream["stats"]
    # the strip buffer holds a strip and the two it looks ahead to (or the whole frame), and
    # the beats that arrive during the excite latency; no input stall at that depth
    held = min(3 * cfg.strip_beats, cfg.beats_per_frame)
    assert stats["peak_strip_buffer_occupancy"] == held + latency == stats["depth"]
    assert stats["input_stall_cycles"] == 0 and stats["lookahead_strips"] == 2
    window = min(3, cfg.tiles_y)                             # rows of pooled / hidden values
    assert stats["pooled_window_rows"] == window and stats["hidden_window_rows"] == window
    stalled = excite3x1_streaming.run(cfg, hp, x[:3], excite_latency=latency,
                                      depth=held + latency - 1)
    assert stalled["stats"]["input_stall_cycles"] > 0        # one beat less stalls the input
    assert np.array_equal(stalled["output"], profile["output"][:3])


@pytest.mark.parametrize("h, tile, equal", [(12, (3, 4), True),     # four strips: buffers'
                                            (8, (3, 4), False),     # three, the last short
                                            (4, (4, 4), False)])    # one strip: the frame
def test_excite3x1_strip_buffer_against_the_buffer_planner(h, tile, equal):
    """At the plan's excite latency (a unit that keeps up), the streaming model's peak is
    buffers.plan_layer's tse_stream_beats when the frame holds three full strips; with fewer,
    smaller by 3 strips less the frame (the frame's end supplies the lookahead)."""
    from tse.ref_model import buffers, excite3x1_streaming, plan
    from tse.ref_model.networks import SELayer

    c, w, hidden, lanes = 8, 8, 2, 2
    q = plan.multipliers_for_full_throughput(tile[0], w, c, hidden, -(-w // tile[1]), lanes,
                                             taps=3)
    cfg, hp, x, profile = excite3x1_case("qnnpack", c, h, w, tile, hidden, lanes,
                                         excite_multipliers=q)
    x = x[:3]
    layer = buffers.plan_layer(SELayer("se", c, h, w, hidden),
                               buffers.parse_planner_tile(f"{tile[0]}x{tile[1]}"), lanes, q,
                               "3x1")
    assert layer.keeps_up
    stream = excite3x1_streaming.run(cfg, hp, x)             # the plan's latency by default
    stats = stream["stats"]
    assert stats["excite_latency"] == layer.excite_latency_cycles
    assert stats["input_stall_cycles"] == 0
    assert np.array_equal(stream["output"], profile["output"][:3])
    peak = stats["peak_strip_buffer_occupancy"]
    excess = 3 * cfg.strip_beats - cfg.beats_per_frame
    assert (peak == layer.tse_stream_beats) == equal
    assert peak == layer.tse_stream_beats - max(0, excess)


def test_excite3x1_kernels_and_streaming_refuse_what_they_do_not_compute():
    from tse.ref_model import excite3x1_streaming
    from tse.ref_model.errors import InputError

    cfg, hp, x, _ = excite3x1_case("qnnpack", 5, 4, 4, (4, 4), 5, 5)
    for other in (cfg.replace(excite_kernel="1x1"), cfg.replace(block="eca", excite_kernel="1x1")):
        with pytest.raises(ConfigError, match="allowed: block 'se' with excite_kernel '3x1'"):
            attention_kernels.excite3x1_frames(other, hp, x)
        with pytest.raises(ConfigError, match="allowed: block 'se' with excite_kernel '3x1'"):
            excite3x1_streaming.run(other, hp, x)
    with pytest.raises(ConfigError, match="allowed: \\[hidden, C, taps\\]"):
        attention_kernels.excite3x1_frames(cfg.replace(channels=10, lanes=5), hp,
                                           np.zeros((1, 4, 4, 10), np.uint8))
    with pytest.raises(InputError, match="depth: 15 beats is not allowed; allowed: 16 or more"):
        excite3x1_streaming.run(cfg, hp, x, depth=15, excite_latency=1)
    with pytest.raises(InputError, match="excite_latency: 0 is not allowed"):
        excite3x1_streaming.run(cfg, hp, x, excite_latency=0)
