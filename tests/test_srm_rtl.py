"""The SRM unit's RTL (issue 18): its excite stage alone in Amaranth's simulator against
attention_hw.srm_excite_tile (the vectors' and the streaming model's per-tile function) on
random tile sums and sums of squares and random integer parameters, with its plan's timing;
and the whole unit co-simulated on Icarus and Verilator against the SRM vectors."""
from __future__ import annotations

import numpy as np
import pytest

from tse.ref_model import attention_hw as ah
from tse.ref_model.config import TSEConfig
from tse.ref_model.edge_tiles import kind_table
from tse.ref_model.hw_numerics import gate_table, quantize_multiplier
from tse.ref_model.hw_profile import reciprocal
from tse.ref_model.rounding import ROUNDING_CODES
from tse.ref_model.srm_unit_plan import SrmUnitPlan
from tse.ref_model.attention_widths import STD_FRAC_BITS
from tse.rtl.srm_excite import SrmExcite

from rtl_helpers import check_excite_run, drive_excite_stage


def random_srm(cfg: TSEConfig, seed: int) -> ah.SrmHw:
    """SrmHw with random zero points, requantizers, weights (int8, the extremes included),
    biases and sigmoid table: no PyTorch run. The variance's reciprocals are the real ones
    (srm_hw_params'), the ratios spread so that std, style and excite codes saturate at 0 and
    255 on some channels."""
    rng = np.random.default_rng(seed)
    hw, C = cfg.hw, cfg.channels
    mean = ah.mean_tables(cfg)
    vr = [reciprocal(int(n * (n - 1)), hw.reciprocal_bits) for n in mean.counts]
    b1, f = hw.fc1_multiplier_bits, hw.bias_frac_bits

    def mult(lo, hi, bits=b1):
        return quantize_multiplier(float(10 ** rng.uniform(lo, hi)), bits)

    std_m, std_s = mult(-1, 0.3)
    if seed % 2:
        mean_m, mean_s = mult(-0.5, 0.5)
        dev_m, dev_s = mult(-0.5, 0.5)
    else:       # ratios of few bits: the style requantizers meet ties often
        mean_m, mean_s = quantize_multiplier(float(rng.choice([0.5, 0.75, 1.25])), b1)
        dev_m, dev_s = quantize_multiplier(float(rng.choice([0.75, 1.25, 1.5])), b1)
    w = rng.integers(-128, 128, (C, 2))
    w[rng.integers(0, C), rng.integers(0, 2)] = rng.choice([-128, 127])
    fc = [quantize_multiplier(float(10 ** rng.uniform(-3, -1.3)) / 2 ** f,
                              hw.fc2_multiplier_bits) for _ in range(C)]
    lut = np.sort(rng.integers(0, 256, 256)).astype(np.uint8)
    mm, ms = quantize_multiplier(float(10 ** rng.uniform(-3, -2)), hw.mul_multiplier_bits)
    zp = lambda: int(rng.choice([0, 255, rng.integers(1, 255)]))    # noqa: E731
    return ah.SrmHw(
        zx=zp(), var_recip=np.array([r for r, _ in vr], np.int64),
        var_shift=np.array([s - 2 * STD_FRAC_BITS for _, s in vr], np.int64),
        std_mult=std_m, std_shift=std_s + STD_FRAC_BITS,
        zstd=int(rng.choice([0, rng.integers(1, 64)])),
        mean_mult=mean_m, mean_shift=mean_s, dev_mult=dev_m, dev_shift=dev_s,
        zs=int(rng.integers(32, 224)),
        style_rounding=ROUNDING_CODES[hw.fc1_rounding], weights=w.astype(np.int64),
        bias=rng.integers(-(1 << (f + 14)), 1 << (f + 14), C).astype(np.int64),
        mult=np.array([m for m, _ in fc], np.int64), shift=np.array([s for _, s in fc], np.int64),
        frac_bits=f, ze=int(rng.integers(0, 256)), rounding=ROUNDING_CODES[hw.fc2_rounding],
        gate_lut=gate_table(lut, hw.gate_bits).astype(np.int64), mul_mult=mm, mul_shift=ms,
        zo=int(rng.integers(0, 256)), mul_rounding=ROUNDING_CODES[hw.mul_rounding], mean=mean)


def test_pipelined_root_is_isqrt_nearest():
    """tse.rtl.srm_excite.isqrt_nearest, one value a clock, against the model's
    isqrt_nearest on the ends of the 40-bit range, perfect squares, the values either side
    of every rounding boundary (Q^2 + Q, Q^2 + Q + 1) and random values of every length."""
    from amaranth import unsigned

    from rtl_helpers import eval_pipe
    from tse.rtl.srm_excite import isqrt_nearest
    rb = 20
    rng = np.random.default_rng(7)
    q = np.concatenate([rng.integers(0, 1 << rb, 300), [0, 1, 2, (1 << rb) - 1]])
    values = {0, 1, 2, 3, (1 << 2 * rb) - 1, (1 << 2 * rb) - 2}
    for v in q.tolist():
        values |= {v * v, v * v + v, v * v + v + 1, max(0, v * v - 1)}
    values |= {int(rng.integers(0, 1 << rng.integers(1, 2 * rb + 1))) for _ in range(300)}
    values = sorted(v for v in values if v < 1 << 2 * rb)
    got = eval_pipe({"v": unsigned(2 * rb)}, lambda m, v: isqrt_nearest(m, v, rb),
                    [{"v": v} for v in values])
    assert got == [int(ah.isqrt_nearest(v)) for v in values]


def srm_cfg(c, lanes, h=5, w=7, tile="3x2", **hw):
    base = TSEConfig(channels=c, height=h, width=w, tile=tile, lanes=lanes, block="srm",
                     hidden=1)      # hidden: SE's field, unused by SRM
    return base.replace(hw=base.hw.replace(**hw)) if hw else base


STAGE_CASES = {
    "C5_P1_partial": (srm_cfg(5, 1), 1),                     # tiles of 6, 3, 4 and 2
    "C7_P7_partial": (srm_cfg(7, 7, h=7, w=5, tile="2x3"), 2),   # 6, 4, 2, ... elements
    "C3_P3_whole_tiles": (srm_cfg(3, 3, h=6, w=6, tile="3x3"), 3),
    "C9_P3_half_up_gate6": (srm_cfg(9, 3, h=4, w=9, tile="2x4", gate_bits=6,
                                    fc1_rounding="half_up", fc2_rounding="half_up",
                                    mean_rounding="half_up"), 4),
}


def tile_values(rng, n, zx, mode):
    """d = x - zx of one tile's n elements: random, constant (variance 0), the largest
    variance (half 0, half 255) or all at one end of the code range."""
    if mode == "random":
        x = rng.integers(0, 256, n)
    elif mode == "constant":
        x = np.full(n, rng.integers(0, 256))
    elif mode == "spread":
        x = np.where(np.arange(n) % 2 == 0, 0, 255)
    else:
        x = np.full(n, rng.choice([0, 255]))
    return x.astype(np.int64) - zx


MODES = ("random", "constant", "spread", "ends")


@pytest.mark.parametrize("case", list(STAGE_CASES))
def test_srm_excite_matches_the_model_and_its_latency(case):
    """Random tile sums and sums of squares of real tiles (constant tiles: variance 0; tiles
    of codes 0 and 255 alternating: the largest variance; tiles all 0 or all 255: pooled 0
    and 255) with every edge-tile size, strips arriving faster and slower than the excite
    latency, gate banks released late: every gate equals srm_excite_tile's, written once, to
    the strip's bank, and every strip commits exactly when the plan says."""
    cfg, seed = STAGE_CASES[case]
    h = random_srm(cfg, seed)      # even seeds: style ties
    p = SrmUnitPlan(cfg, h)
    C, tx, ty = cfg.channels, cfg.tiles_x, cfg.tiles_y
    kinds = kind_table(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols)
    rng = np.random.default_rng(seed + 50)
    strips = 3 * ty
    sums, squares, want = (np.zeros((strips, tx, C), np.int64) for _ in range(3))
    seen = {"pooled": set(), "std": set(), "excite": set()}
    for s in range(strips):
        for j in range(tx):
            kind = kinds[s % ty, j]
            n = int(h.mean.counts[kind])
            for c in range(C):
                d = tile_values(rng, n, h.zx, MODES[(s * tx * C + j * C + c) % len(MODES)])
                sums[s, j, c], squares[s, j, c] = d.sum(), (d * d).sum()
            out = [np.zeros(C, np.uint8) for _ in range(4)]
            ah.srm_excite_tile(sums[s, j], squares[s, j], kind, *ah.srm_tile_args(h), *out)
            want[s, j] = out[3]
            for name, v in zip(("pooled", "std", "excite"), out):
                seen[name] |= set(v.tolist())
    L = cfg.excite_latency_cycles
    assert L == p.lead_cycles + tx * C + p.drain_cycles
    gaps = [0, 5, 3 * L, 0, 40, 2]
    run = drive_excite_stage(SrmExcite(p), p, sums, lambda s, j: kinds[s, j], gaps, L, rng,
                             squares=squares)
    check_excite_run(cfg, want, run, L)
    assert {0, 255} <= seen["pooled"]
    assert h.zstd in seen["std"] or 0 in seen["std"]        # a variance of 0 was excited
    assert len(seen["std"]) > 3 and len(seen["excite"]) > 3


def test_srm_strip_buffer_depth_follows_the_plan():
    """block srm sizes the strip buffer from plan's SRM block (strip + SRM latency): a C=16
    unit with 2 tiles a strip."""
    cfg = TSEConfig(channels=16, height=8, width=8, tile="4x4", lanes=4, block="srm",
                    hidden=1)
    # lead-in 43 (SRM_DEV_STAGES 40 + 3), 2 tiles x 16 channels, drain 18
    assert cfg.excite_latency_cycles == 43 + 32 + 18
    assert cfg.strip_buffer_depth == 4 * 8 * 16 // 4 + 93


# ---- the whole SRM unit, co-simulated (cocotb) ------------------------------------------------

COSIM_CFG = TSEConfig(channels=5, height=5, width=7, tile="3x2", lanes=5, block="srm",
                      hidden=1)
"""Odd C, partial edge tiles on both axes (5 = 3 + 2 rows, 7 = 2 + 2 + 2 + 1 columns: tiles
of 6, 3, 4 and 2 elements)."""


@pytest.fixture(scope="module")
def srm_design():
    """The SRM vectors for COSIM_CFG with the SRM unit's Verilog (cached by content,
    tse.sim.cosim.prepare)."""
    from tse.sim import cosim
    return cosim.prepare(COSIM_CFG, 2)


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_srm_unit_cosim_bit_exact(srm_design, sim):
    """As the ECA unit's (tests/test_attention_rtl.py): two frames back to back, then with
    pauses on both sides, then an early TLAST on Verilator; every output beat and gate
    equals the SRM vectors'."""
    import json

    from test_attention_rtl import check_unit_cosim
    manifest = json.loads((srm_design / "manifest.json").read_text())
    assert manifest["block"] == "srm"
    assert manifest["unit"]["schedule"]["deviation_stages"] == 40
    check_unit_cosim(srm_design, sim, COSIM_CFG)


def test_tse_rtl_writes_the_srm_unit(tmp_path, capsys):
    """`tse rtl --block srm`: the unit's Verilog with the SRM excite stage, its ROM images,
    resources.json with the plan's schedule."""
    import json

    from tse import cli
    out = tmp_path / "rtl"
    args = ["rtl", "--block", "srm", "--channels", "3", "--height", "4", "--width", "5",
            "--tile", "2x2", "--lanes", "3", "--hidden", "1"]
    assert cli.main([*args, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    text = (out / "tse_unit.v").read_text()
    assert "srm_excite" in text and "excite_mac" not in text
    assert (out / "hex" / "rom_sigmoid.hex").is_file()
    assert len((out / "hex" / "rom_srm_fc.hex").read_text().split()) == 3
    cfg = TSEConfig(channels=3, height=4, width=5, tile="2x2", lanes=3, block="srm", hidden=1)
    assert report["block"] == "srm"
    assert report["schedule"]["strip_latency_cycles"] == cfg.excite_latency_cycles
    assert report["schedule"]["strip_buffer_depth"] == cfg.strip_buffer_depth
