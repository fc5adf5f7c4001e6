"""The ECA unit's RTL (issue 18): its excite stage alone in Amaranth's simulator against
attention_hw.eca_excite_tile (the vectors' and the streaming model's per-tile function) on
random tile sums and random integer parameters, with its plan's timing; and the whole unit
co-simulated on Icarus and Verilator against `tse vectors --block eca`'s output."""
from __future__ import annotations

import numpy as np
import pytest

from tse.ref_model import attention_hw as ah
from tse.ref_model.config import TSEConfig
from tse.ref_model.eca_unit_plan import EcaUnitPlan
from tse.ref_model.edge_tiles import kind_table
from tse.ref_model.hw_numerics import gate_table, quantize_multiplier
from tse.ref_model.rounding import ROUNDING_CODES
from tse.rtl.eca_excite import EcaExcite

from rtl_helpers import check_excite_run, drive_excite_stage


def random_eca(cfg: TSEConfig, seed: int) -> ah.EcaHw:
    """EcaHw with random taps (int8, the extremes included), zero points, multipliers and
    sigmoid table: no PyTorch run."""
    rng = np.random.default_rng(seed)
    hw = cfg.hw
    k = cfg.eca_taps
    taps = rng.integers(-128, 128, k)
    taps[rng.integers(0, k)] = rng.choice([-128, 127])
    # a multiplier that spreads the accumulator over more than the code range: the excite
    # saturates at 0 and 255 on some channels
    m, s = quantize_multiplier(float(10 ** rng.uniform(-3.5, -1.5)), hw.fc2_multiplier_bits)
    mm, ms = quantize_multiplier(float(10 ** rng.uniform(-3, -2)), hw.mul_multiplier_bits)
    lut = np.sort(rng.integers(0, 256, 256)).astype(np.uint8)
    return ah.EcaHw(zx=int(rng.choice([0, 255, rng.integers(1, 255)])), taps=taps.astype(np.int64),
                    mult=m, shift=s, ze=int(rng.integers(0, 256)),
                    rounding=ROUNDING_CODES[hw.fc2_rounding],
                    gate_lut=gate_table(lut, hw.gate_bits).astype(np.int64),
                    mul_mult=mm, mul_shift=ms, zo=int(rng.integers(0, 256)),
                    mul_rounding=ROUNDING_CODES[hw.mul_rounding], mean=ah.mean_tables(cfg))


def eca_cfg(c, k, lanes, h=5, w=7, tile="2x3", **hw):
    base = TSEConfig(channels=c, height=h, width=w, tile=tile, lanes=lanes, block="eca",
                     eca_kernel=k, hidden=1)      # hidden: SE's field, unused by ECA
    return base.replace(hw=base.hw.replace(**hw)) if hw else base


STAGE_CASES = {
    "C7_k3_odd": (eca_cfg(7, 3, 7), 1),
    "C5_k5_P1": (eca_cfg(5, 5, 1, tile="Hx2"), 2),
    "C6_k1": (eca_cfg(6, 1, 3, tile="3x3"), 3),
    "C2_k3_C_lt_k": (eca_cfg(2, 3, 2), 4),
    "C3_k5_C_lt_k_gate6": (eca_cfg(3, 5, 1, gate_bits=6, mean_rounding="half_up",
                                   fc2_rounding="half_up"), 5),
}


@pytest.mark.parametrize("case", list(STAGE_CASES))
def test_eca_excite_matches_the_model_and_its_latency(case):
    """Random tile sums in the line accumulator's order (every sum at the range's ends in
    some strips: pooled codes 0 and 255), strips arriving faster and slower than the excite
    latency, gate banks released late: every gate equals eca_excite_tile's, written once, to
    the strip's bank, and every strip commits exactly when the plan says (latency L after it
    could start, not before the strip two before is released)."""
    cfg, seed = STAGE_CASES[case]
    h = random_eca(cfg, seed)
    p = EcaUnitPlan(cfg, h)
    C, tx, ty = cfg.channels, cfg.tiles_x, cfg.tiles_y
    kinds = kind_table(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols)
    rng = np.random.default_rng(seed + 50)
    strips = 3 * ty
    sums = np.zeros((strips, tx, C), np.int64)
    want = np.zeros((strips, tx, C), np.int64)
    pooled_seen = set()
    for s in range(strips):
        for j in range(tx):
            kind = kinds[s % ty, j]
            n = int(h.mean.counts[kind])
            lo, hi = -h.zx * n, (255 - h.zx) * n
            if s % 3 == 1:                  # the range's ends: pooled codes 0 and 255
                sums[s, j] = rng.choice([lo, hi], C)
            else:
                sums[s, j] = rng.integers(lo, hi + 1, C)
            pooled, excite, gate = (np.zeros(C, np.uint8) for _ in range(3))
            ah.eca_excite_tile(sums[s, j], kind, *ah.eca_tile_args(h), pooled, excite, gate)
            want[s, j] = gate
            pooled_seen |= set(pooled.tolist())
    L = cfg.excite_latency_cycles
    assert L == p.lead_cycles + tx * C + p.drain_cycles
    gaps = [0, 5, 3 * L, 0, 40, 2]
    dut = EcaExcite(p)
    run = drive_excite_stage(dut, p, sums, lambda s, j: kinds[s, j], gaps, L, rng)
    check_excite_run(cfg, want, run, L)
    assert {0, 255} <= pooled_seen                  # the case reaches the code range's ends


def test_eca_strip_buffer_depth_follows_the_plan():
    """block eca sizes the strip buffer from plan's ECA block (strip + ECA latency), not SE's
    excite MAC: a C=16 unit with k=5, 2 tiles a strip."""
    cfg = TSEConfig(channels=16, height=8, width=8, tile="4x4", lanes=4, block="eca",
                    eca_kernel=5)
    # lead-in 23 (MEAN_STAGES 20 + 3), 2 tiles x 16 channels, drain 1 + 3 levels + 8
    assert cfg.excite_latency_cycles == 23 + 32 + 12
    assert cfg.strip_buffer_depth == 4 * 8 * 16 // 4 + 67


# ---- the whole ECA unit, co-simulated (cocotb) ------------------------------------------------

COSIM_CFG = TSEConfig(channels=9, height=5, width=7, tile="2x3", lanes=3, block="eca",
                      eca_kernel=3, hidden=1)
"""Odd C, three lanes, partial edge tiles on both axes (5 = 2 + 2 + 1 rows, 7 = 3 + 3 + 1
columns)."""


@pytest.fixture(scope="module")
def eca_design():
    """The vectors of `tse vectors --block eca` for COSIM_CFG with the ECA unit's Verilog
    (cached by content, tse.sim.cosim.prepare)."""
    from tse.sim import cosim
    return cosim.prepare(COSIM_CFG, 2)


def check_unit_cosim(design, sim, cfg):
    """A unit's co-simulation (ECA's, SRM's) against its vectors: two frames back to back
    without pauses, then with pauses on both sides (checked to have happened), then an early
    TLAST on Verilator: every output beat and every probed gate equals the vectors', error
    only after the wrong TLAST."""
    from tse.sim import cosim
    kinds = ["stream", "tlast_early"] if sim == "verilator" else ["stream"]
    scs = (cosim.scenarios(["stream"], 2)
           + cosim.scenarios(kinds, 2, 0.3, 0.25, seed=5))
    r = cosim.cosimulate(design, sim, scs)
    assert r["ok"], f"{sim}: {r['problems']}"
    assert r["mismatches"] == 0
    bpf = cfg.beats_per_frame
    for s in r["scenarios"]:
        assert s["beats_out"] == s["beats"] > 0
        g = s["gates"]
        assert g["pulses"] > 0 and g["mismatches"] == g["missing"] == g["extra"] == 0, g
    free, paused = r["scenarios"][0], r["scenarios"][1]
    assert free["beats"] == 2 * bpf and free["input_pause_cycles"] == 0
    assert paused["input_pause_cycles"] > 0 and paused["output_pause_cycles"] > 0
    if sim == "verilator":
        assert r["scenarios"][2]["bad_frame_output_beats"] == bpf
    return r


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_eca_unit_cosim_bit_exact(eca_design, sim):
    """check_unit_cosim on the ECA unit of COSIM_CFG."""
    import json

    manifest = json.loads((eca_design / "manifest.json").read_text())
    assert manifest["block"] == "eca" and manifest["unit"]["schedule"]["eca_taps"] == 3
    check_unit_cosim(eca_design, sim, COSIM_CFG)


def test_tse_rtl_writes_the_eca_unit(tmp_path, capsys):
    """`tse rtl --block eca`: the unit's Verilog with the ECA excite stage (not SE's MAC), its
    sigmoid image, resources.json with the plan's schedule; --params is refused in one line
    (--synth: tests/test_attention_synth.py)."""
    import json

    from tse import cli
    out = tmp_path / "rtl"
    args = ["rtl", "--block", "eca", "--channels", "6", "--height", "4", "--width", "5",
            "--tile", "2x2", "--lanes", "2", "--eca-kernel", "5"]
    assert cli.main([*args, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    text = (out / "tse_unit.v").read_text()
    assert "eca_excite" in text and "excite_mac" not in text
    assert (out / "hex" / "rom_sigmoid.hex").is_file()
    cfg = TSEConfig(channels=6, height=4, width=5, tile="2x2", lanes=2, block="eca",
                    eca_kernel=5, hidden=1)
    assert report["schedule"]["strip_latency_cycles"] == cfg.excite_latency_cycles
    assert report["schedule"]["strip_buffer_depth"] == cfg.strip_buffer_depth
    assert cli.main([*args, "--params", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tse: error: --params: not supported with block = 'eca'")
    assert "\n" not in err and not (tmp_path / "x").exists()
