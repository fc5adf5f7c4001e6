"""The unit with the paper's 3x1 excite (tse/rtl/excite3x1.py, issue 18) co-simulated against
the 3x1 vectors (attention_kernels.excite3x1_frames, bit-exact with quantized PyTorch's
profile): every output beat and every probed gate, two frames back to back and with input and
output pauses, on frames of one, two, three and four strips (short last strips, short last
tile columns, C not a power of two, one lane and all lanes) on Icarus, one on Verilator; at an
excite that keeps up, the strip buffer's peak occupancy against the streaming model's
(excite3x1_streaming) and no input stall; `tse rtl --excite-kernel 3x1`'s report."""
from __future__ import annotations

import json

import pytest

from test_attention_rtl import check_unit_cosim
from tse.ref_model.config import TSEConfig


def cfg3x1(c, h, w, tile, lanes, hidden, q):
    return TSEConfig(channels=c, height=h, width=w, tile=tile, lanes=lanes, hidden=hidden,
                     excite_kernel="3x1", excite_multipliers=q)


CASES = {   # (config, simulator)
    # four strips, the last of one row; columns 2 + 2 + 1; C = 6 in 2 groups of 3 lanes
    "ty4_short_last": (cfg3x1(6, 7, 5, "2x2", 3, 3, 2), "icarus"),
    # one strip: top and bottom padding at once; all lanes
    "ty1_all_lanes": (cfg3x1(5, 4, 4, "4x4", 5, 5, 5), "icarus"),
    # two strips, the last short; one lane, C = 3
    "ty2_one_lane": (cfg3x1(3, 5, 5, "4x3", 1, 2, 1), "icarus"),
    # three strips, the last short; columns 3 + 3 + 1; all lanes (and an early TLAST)
    "ty3_verilator": (cfg3x1(5, 5, 7, "2x3", 5, 3, 2), "verilator"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_3x1_unit_cosim_bit_exact(case):
    from tse.sim import cosim
    cfg, sim = CASES[case]
    design = cosim.prepare(cfg, 2)
    manifest = json.loads((design / "manifest.json").read_text())
    assert manifest["config"]["excite_kernel"] == "3x1"
    assert manifest["unit"]["schedule"]["lookahead_strips"] == 2
    r = check_unit_cosim(design, sim, cfg)
    for s in r["scenarios"][:2]:    # the streams: every strip's gates, once
        assert s["gates"]["pulses"] == 2 * cfg.tiles_y * cfg.tiles_x * cfg.channels


def extreme_vectors(cfg, out):
    """Vectors of the seeded 3x1 block on frames every code 255, every code 0, then codes
    uniform over 0..255 (the synthetic frames stay far from the ends), with the unit: the
    stages from attention_kernels.excite3x1_frames (checked against the numpy profile and
    quantized PyTorch in tests/test_attention_hw.py), as tse.sim.cosim.write_attention_vectors
    writes them."""
    import numpy as np

    from tse.quant import attention_reference
    from tse.ref_model import attention_vectors
    from tse.rtl.export import rom_files, verilog_text
    from tse.sim.cosim import attention_unit_plan

    ref = attention_reference.build_excite3x1(cfg, 1)
    shape = (cfg.height, cfg.width, cfg.channels)
    rng = np.random.default_rng(3)
    x = np.stack([np.full(shape, 255), np.zeros(shape), rng.integers(0, 256, shape)])
    x = x.astype(np.uint8)
    stages = attention_vectors.build(cfg, ref.quant, x)
    plan = attention_unit_plan(cfg, ref.quant)
    files = {"tse_unit.v": ("unit_verilog", verilog_text(cfg, plan, "tse_unit", True).encode())}
    files.update({rel: (rel, data) for rel, data in rom_files(cfg, plan).items()})
    attention_vectors.write(out, cfg, x, stages, {"unit": plan.facts()}, extra_files=files)
    return stages


def test_3x1_unit_cosim_extreme_frames(tmp_path):
    """Frames of codes 255, 0 and uniform 0..255 through the unit of four strips (Icarus,
    pauses on both sides): every output beat and gate equals excite3x1_frames'; the pooled,
    hidden and gate codes reach both ends."""
    from tse.sim import cosim
    cfg = CASES["ty4_short_last"][0]
    stages = extreme_vectors(cfg, tmp_path / "v")
    for role in ("pooled", "hidden", "gate"):
        assert {0, 255} <= set(stages[role].ravel().tolist()), role
    r = cosim.cosimulate(tmp_path / "v", "icarus",
                         cosim.scenarios(["stream"], 3, 0.3, 0.25, seed=7))
    assert r["ok"] and r["mismatches"] == 0, r["problems"]
    s = r["scenarios"][0]
    assert s["beats_out"] == 3 * cfg.beats_per_frame and s["input_pause_cycles"] > 0
    g = s["gates"]
    assert g["pulses"] == 3 * cfg.tiles_y * cfg.tiles_x * cfg.channels
    assert g["mismatches"] == g["missing"] == g["extra"] == 0


def test_3x1_unit_strip_buffer_peak_is_the_streaming_model():
    """Four strips of 96 beats, an excite of Q = 8 that keeps up (L = 96 cycles): the
    simulated peak occupancy of the strip buffer is the streaming model's (3 strips + L =
    the plan's depth), the input never stalls, and the first output beat leaves 3 strips + L
    cycles after the first input beat plus the input slices and the broadcaster."""
    from tse.quant import attention_reference
    from tse.ref_model import excite3x1_streaming, plan
    from tse.ref_model.attention_kernels import excite3x1_hw_params
    from tse.sim import cosim

    cfg = cfg3x1(8, 12, 8, "3x4", 2, 2, 8)
    design = cosim.prepare(cfg, 2)
    sched = json.loads((design / "manifest.json").read_text())["unit"]["schedule"]
    L = sched["strip_latency_cycles"]
    assert L <= cfg.strip_beats                        # the excite keeps up
    ref = attention_reference.build_excite3x1(cfg, 2)
    x = ref.codes["input"].transpose(0, 2, 3, 1).copy()
    model = excite3x1_streaming.run(cfg, excite3x1_hw_params(ref.quant, cfg), x)["stats"]
    assert model["excite_latency"] == L and model["input_stall_cycles"] == 0
    r = cosim.cosimulate(design, "icarus", cosim.scenarios(["stream"], 2))
    assert r["ok"] and r["mismatches"] == 0, r["problems"]
    s = r["scenarios"][0]
    assert s["max_buffer_occupancy"] == model["peak_strip_buffer_occupancy"] \
        == sched["strip_buffer_depth"] == 3 * cfg.strip_beats + L
    assert s["input_stall_cycles"] == 0 and r["expected_full_throughput_depth"] == 384
    assert s["latency_cycles"] == 3 * cfg.strip_beats + L + plan.INPUT_SLICE_CYCLES \
        + plan.BROADCAST_LATENCY_CYCLES


def test_tse_rtl_writes_the_3x1_unit(tmp_path, capsys):
    """`tse rtl --excite-kernel 3x1`: the Verilog with the 3x1 excite stage, its ROM images
    (w1: hidden x ceil(3C/Q) words), resources.json with the plan's schedule and depth."""
    from tse import cli
    from tse.ref_model import plan
    out = tmp_path / "rtl"
    args = ["rtl", "--excite-kernel", "3x1", "--channels", "5", "--height", "5", "--width",
            "7", "--tile", "2x3", "--lanes", "5", "--hidden", "3", "--excite-multipliers", "2"]
    assert cli.main([*args, "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    text = (out / "tse_unit.v").read_text()
    assert "excite3x1" in text and "excite_mac" not in text
    assert len((out / "hex" / "rom_w1.hex").read_text().split()) == 3 * 8   # ceil(15 / 2)
    s = report["schedule"]
    assert report["excite_kernel"] == "3x1" and s["K1"] == 8 and s["K2"] == 5
    L = plan.excite_latency_cycles(5, 3, 3, 2, taps=3)
    assert s["strip_latency_cycles"] == report["excite_latency_cycles"] == L
    assert s["strip_buffer_depth"] == report["strip_buffer_depth"] == 3 * 2 * 7 + L  # 2-row strips
    assert json.loads((out / "resources.json").read_text())["schedule"] == s
