"""The 3x1 excite's unit plan (tse.ref_model.excite3x1_unit_plan, issue 18): its operation
order against a specification written here (every hidden and excite row once, each when its
lookahead has arrived), its schedule against tse.ref_model.plan, its strip-buffer depth against
the streaming model's measured peak, its ROM layout against the convolution weights, and its
refusals."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from test_attention_hw import excite3x1_case
from tse.ref_model import excite3x1_streaming, plan
from tse.ref_model.errors import ConfigError
from tse.ref_model.excite3x1_unit_plan import Excite3x1UnitPlan, strip_ops


@pytest.mark.parametrize("ty", [1, 2, 3, 4, 7])
def test_ops_are_every_row_once_when_its_lookahead_arrived(ty):
    seen = []
    for s in range(ty):
        for op in strip_ops(s, ty):
            seen.append((s, *op))
    hidden = [(s, r) for s, kind, r in seen if kind == "hidden"]
    excite = [(s, e) for s, kind, e in seen if kind == "excite"]
    # hidden row r needs pooled row r + 1 (or the frame's end); excite row e hidden row e + 1
    assert hidden == [(min(r + 1, ty - 1), r) for r in range(ty)]
    assert excite == [(min(e + 2, ty - 1), e) for e in range(ty)]
    order = [(kind, r) for _, kind, r in seen]
    for e in range(ty):      # every excite row after the hidden rows it reads
        assert order.index(("excite", e)) > order.index(("hidden", min(e + 1, ty - 1)))
    with pytest.raises(ConfigError, match="strip: .* allowed"):
        strip_ops(ty, ty)


@pytest.mark.parametrize("c, h, w, tile, hidden, lanes, q", [
    (6, 7, 5, (2, 2), 3, 3, 2),        # four strips, the last short; C not a power of two
    (5, 4, 4, (4, 4), 5, 5, 5),        # one strip
    (7, 5, 9, (4, 4), 3, 7, 1),        # two strips, one multiplier
    (8, 12, 8, (3, 4), 2, 2, 8),       # four strips, an excite that keeps up
])
def test_plan_facts_against_plan_and_streaming_model(c, h, w, tile, hidden, lanes, q):
    cfg, hp, x, _ = excite3x1_case("qnnpack", c, h, w, tile, hidden, lanes,
                                   excite_multipliers=q)
    p = Excite3x1UnitPlan(cfg, hp)
    p.check_schedule()
    L = plan.excite_latency_cycles(c, hidden, cfg.tiles_x, q, taps=3)
    assert p.strip_latency == L
    assert p.depth == 3 * cfg.strip_beats + L == plan.full_throughput_depth(
        tile[0], w, c, hidden, cfg.tiles_x, lanes, q, taps=3)
    assert (p.K1, p.K2) == (-(-3 * c // q), -(-3 * hidden // q))
    stats = excite3x1_streaming.run(cfg, hp, x[:2], depth=p.depth)["stats"]
    assert stats["excite_latency"] == L and p.no_stall_depth <= p.depth
    keeps_up = L <= cfg.strip_beats
    assert keeps_up == (q == 8)
    if keeps_up:        # the model's peak is the plan's figure, and no stall
        assert stats["peak_strip_buffer_occupancy"] == p.no_stall_depth
        assert stats["input_stall_cycles"] == 0
    else:               # a slow excite: the buffer holds what the input got in
        assert stats["peak_strip_buffer_occupancy"] <= p.depth
    assert max(stats["pooled_window_rows"], stats["hidden_window_rows"]) <= p.window_rows
    facts = p.facts()["schedule"]
    assert facts["strip_buffer_depth"] == p.depth and facts["lookahead_strips"] == 2
    # w1's words: output o, input t*C + ch, Q a word, zero padded
    rom = p.rom_images["w1"]
    fields = [(word >> (8 * i)) & 255 for word in rom.words for i in range(q)]
    words = np.array([v - 256 if v > 127 else v for v in fields]).reshape(hidden, p.K1 * q)
    w = hp.fc1.weights
    assert np.array_equal(words[:, :3 * c], w.transpose(0, 2, 1).reshape(hidden, 3 * c))
    assert not words[:, 3 * c:].any()


def test_multipliers_built_and_refusals():
    cfg, hp, _, _ = excite3x1_case("qnnpack", 5, 4, 4, (4, 4), 5, 5)
    many = Excite3x1UnitPlan(dataclasses.replace(cfg, excite_multipliers=32), hp)
    assert many.Q == 5 and many.K1 == 3         # built: max(C, hidden), as SE's unit
    many.check_schedule()
    with pytest.raises(ConfigError, match="allowed: block 'se', excite_kernel '3x1'"):
        Excite3x1UnitPlan(dataclasses.replace(cfg, excite_kernel="1x1"), hp)


def test_config_and_planner_give_the_3x1_units_figures():
    """cfg.excite_latency_cycles / full_throughput_depth and the buffer planner give the 3x1
    unit's figures (taps 3, the multipliers it builds), not SE's 1x1 ones. Known answer
    (docs/rtl.md, measured in co-simulation): C=8 12x8 tile 3x4 P=2 hidden 2 Q=8 has L = 96
    and a strip buffer of 3 strips + L = 384 beats."""
    from tse.ref_model.buffers import parse_planner_tile, plan_layer
    from tse.ref_model.config import TSEConfig
    from tse.ref_model.networks import SELayer

    cfg = TSEConfig(channels=8, height=12, width=8, tile="3x4", lanes=2, hidden=2,
                    excite_multipliers=8, excite_kernel="3x1")
    assert (cfg.excite_latency_cycles, cfg.full_throughput_depth) == (96, 384)
    assert cfg.replace(excite_kernel="1x1").excite_latency_cycles != 96
    # more multipliers than max(C, hidden): the unit builds 8, so the figures stay
    wide = cfg.replace(excite_multipliers=64)
    assert (wide.excite_latency_cycles, wide.full_throughput_depth) == (96, 384)
    layer = SELayer("l", 8, 12, 8, 2)
    for q in (8, 64):
        row = plan_layer(layer, parse_planner_tile("3x4"), lanes=2, multipliers=q,
                         excite_kernel="3x1")
        assert row.excite_latency_cycles == 96, (q, row)
