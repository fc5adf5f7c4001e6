"""Co-simulation: cocotb on Icarus and Verilator, the self-checking Verilog testbench.

Three layers, cheapest first:
  - the scoreboard and pause generators, in plain Python;
  - the stream drivers on tse/sim/stub.py's pass-through (a development aid with the unit's
    ports; it never stands in for the unit in a bit-exact test);
  - the TSE unit from tse.rtl.export against golden vectors: a matrix of small configurations
    (SE, row strips with a shorter last strip, column strips and patches with partial edge
    tiles, P=1, C=64 row strips; four of them the shapes where tlast_early once failed under
    input pauses) on both simulators, with pauses on both sides (and the pauses checked to
    have happened), reset mid-frame and wrong TLASTs, throughput with no pauses; and the
    self-checking testbench on both simulators, passing as written and failing when one
    expected value is altered.

Builds are cached (~/.cache/tse/cosim/, tse.sim.runner.cache_root) by the Verilog's contents, so each design is compiled once per
simulator; every scenario of a configuration runs in one simulation.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tse.ref_model.config import TSEConfig
from tse.sim import cosim, harness, scoreboard, selfcheck, stub
from tse.sim.axis import PauseGenerator, pack_beats, unpack_beats

SIMS = ("icarus", "verilator")
PAUSE = 0.3
FRAMES = 3


# ---- scoreboard and drivers, no simulator --------------------------------------------------

SHAPE = scoreboard.Shape.from_config(TSEConfig(channels=8, height=5, width=7, tile="2x3",
                                                reduction=4, lanes=4).to_dict())


def _frames(n=2, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 5, 7, 8), dtype=np.uint8)


def _received(expected, frames):
    data = expected[frames].reshape(-1, SHAPE.lanes).copy()
    last = np.zeros(len(data), bool)
    last[SHAPE.beats_per_frame - 1::SHAPE.beats_per_frame] = True
    return data, last


def _gate_pulses(gates, frames):
    return [(ty * SHAPE.tiles_x + tx, c, int(gates[f, ty, tx, c]))
            for f in frames for ty in range(SHAPE.tiles_y) for tx in range(SHAPE.tiles_x)
            for c in range(SHAPE.channels)]


def test_scoreboard_accepts_exact_stream():
    exp = _frames()
    data, last = _received(exp, [0, 1])
    r = scoreboard.compare(SHAPE, exp, [0, 1], data, last)
    assert r["mismatches"] == 0 and r["first"] is None and r["stage"] is None


def test_scoreboard_names_first_mismatch_by_coordinates():
    exp = _frames()
    gates = np.random.default_rng(1).integers(0, 256, (2, SHAPE.tiles_y, SHAPE.tiles_x, 8))
    data, last = _received(exp, [0, 1])
    # frame 1, row 3, column 4, channels 4..7 (second beat of the pixel), lane 2
    beat = SHAPE.beats_per_frame + (3 * 7 + 4) * 2 + 1
    data[beat, 2] ^= 0x10
    data[beat + 5, 0] ^= 1
    r = scoreboard.compare(SHAPE, exp, [0, 1], data, last, inputs=exp,
                           gate_pulses=_gate_pulses(gates, [0, 1]), expected_gates=gates)
    f = r["first"]
    assert r["mismatches"] == 2
    assert (f["frame"], f["row"], f["column"], f["channel"], f["lane"]) == (1, 3, 4, 4, 2)
    assert f["channel_first_wrong"] == 6 and f["tile"] == [1, 1]
    assert r["stage"] == "tile_broadcaster"          # every gate was right
    assert "frame 1, row 3, column 4, channels 4..7" in r["message"]


def test_scoreboard_blames_excite_mac_on_a_wrong_gate():
    exp = _frames()
    gates = np.random.default_rng(1).integers(0, 256, (2, SHAPE.tiles_y, SHAPE.tiles_x, 8))
    pulses = _gate_pulses(gates, [0, 1])
    t, c, g = pulses[len(pulses) // 2 + 9]           # frame 1, tile 1, channel 1
    pulses[len(pulses) // 2 + 9] = (t, c, g ^ 4)
    data, last = _received(exp, [0, 1])
    data[SHAPE.beats_per_frame + 3, 0] ^= 1         # frame 1, strip 0: under the wrong gate
    r = scoreboard.compare(SHAPE, exp, [0, 1], data, last, gate_pulses=pulses,
                           expected_gates=gates)
    assert r["stage"] == "excite_mac"
    g0 = r["gates"]["first"]
    assert (g0["frame"], g0["tile_row"], g0["tile_column"], g0["channel"]) == (1, 0, 1, 1)
    # a wrong beat in frame 0, whose gates are all right, went wrong before that gate did
    data, last = _received(exp, [0, 1])
    data[3, 0] ^= 1
    r = scoreboard.compare(SHAPE, exp, [0, 1], data, last, gate_pulses=pulses,
                           expected_gates=gates)
    assert r["stage"] == "tile_broadcaster" and r["gates"]["mismatches"] == 1
    # gates of a later frame (a previous frame's late pulses charged to this one) are extra
    r = scoreboard.compare(SHAPE, exp, [0], data[:70], last[:70], gate_pulses=pulses,
                           expected_gates=gates)
    assert r["gates"]["extra"] > 0 and r["stage"] == "tile_broadcaster"


def _product_table():
    """A stand-in for the broadcaster's table (tse.ref_model.fastpath.broadcast_table): output
    code for gate g and input x, distinct enough that one gate rarely fits another's."""
    g, x = np.meshgrid(np.arange(256), np.arange(256), indexing="ij")
    return ((g * x + 128) >> 8).astype(np.uint8)


def _gated_frames(seed=2):
    """(inputs, gates, outputs) with outputs = table[gate of the tile and channel, input]."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (2, 5, 7, 8), dtype=np.uint8)
    gates = rng.integers(1, 256, (2, SHAPE.tiles_y, SHAPE.tiles_x, 8)).astype(np.uint8)
    rows = np.arange(5) // SHAPE.tile_rows
    cols = np.arange(7) // SHAPE.tile_cols
    per_pixel = gates[:, rows][:, :, cols]                 # [N, H, W, C]
    return x, gates, _product_table()[per_pixel, x]


def test_scoreboard_without_probes_locates_the_stage_from_the_model():
    """No gate probes: a tile-channel whose every output is the product with another gate is
    the excite MAC's (a wrong gate); one wrong product is the broadcaster's."""
    x, gates, out = _gated_frames()
    table = _product_table()
    # frame 1, tile (1, 2) (rows 2-3, columns 6), channel 5: the unit used another gate
    wrong = out.copy()
    wrong[1, 2:4, 6, 5] = table[gates[1, 1, 2, 5] ^ 0x55, x[1, 2:4, 6, 5]]
    assert not np.array_equal(wrong, out)
    data, last = _received(wrong, [0, 1])
    r = scoreboard.compare(SHAPE, out, [0, 1], data, last, inputs=x, expected_gates=gates,
                           product_table=table)
    assert r["first"]["tile"] == [1, 2] and r["first"]["channel_first_wrong"] == 5
    assert r["stage"] == "excite_mac" and r["stage_basis"] == "model", r["message"]
    assert "from the model's stages" in r["message"]
    # one product wrong, every other output of that tile-channel right
    data, last = _received(out, [0, 1])
    beat = SHAPE.beats_per_frame + (2 * 7 + 6) * 2 + 1            # frame 1, (2, 6), ch 4..7
    data[beat, 1] ^= 0x20
    r = scoreboard.compare(SHAPE, out, [0, 1], data, last, inputs=x, expected_gates=gates,
                           product_table=table)
    assert r["first"]["channel_first_wrong"] == 5
    assert r["stage"] == "tile_broadcaster" and r["stage_basis"] == "model", r["message"]
    # without the model's table nothing rules the excite MAC out, and the report says so
    r = scoreboard.compare(SHAPE, out, [0, 1], data, last, inputs=x, expected_gates=gates)
    assert r["stage"].startswith("tile_broadcaster (no gate probe") and not r["stage_basis"]


def test_scoreboard_tlast_missing_and_stalled_input():
    exp = _frames()
    data, last = _received(exp, [0, 1])
    last[SHAPE.beats_per_frame - 1] = False
    r = scoreboard.compare(SHAPE, exp, [0, 1], data, last)
    assert r["first"]["kind"] == "tlast" and r["first"]["frame"] == 0
    data, last = _received(exp, [0, 1])
    r = scoreboard.compare(SHAPE, exp, [0, 1], data[:100], last[:100], beats_accepted=110)
    assert r["first"]["kind"] == "missing beat" and r["mismatches"] == 40
    assert r["stage"] == "line_accumulator"          # the input stopped being accepted
    r = scoreboard.compare(SHAPE, exp, [0], data[:80], last[:80])
    assert r["first"]["kind"] == "extra beat" and r["mismatches"] == 10


def test_tiles_complete_within_a_cut_frame():
    # 2x3 tiles on 5x7, 2 beats a pixel: tile (0, 0) ends at pixel (1, 2), beat 2*(7+2)+1
    done = SHAPE.tiles_complete_within(2 * (7 + 2) + 2)
    assert done.tolist() == [[True, False, False], [False] * 3, [False] * 3]
    assert not SHAPE.tiles_complete_within(2 * (7 + 2) + 1).any()
    assert SHAPE.tiles_complete_within(SHAPE.beats_per_frame).all()
    beats = SHAPE.beats_of_tiles(done)
    assert beats.sum() == 2 * 3 * 2 and beats[:6].all() and not beats[6:14].any()


def test_scoreboard_checks_a_broken_frame_where_the_input_defines_it():
    exp = _frames()
    gates = np.random.default_rng(1).integers(0, 256, (2, SHAPE.tiles_y, SHAPE.tiles_x, 8))
    defined = SHAPE.tiles_complete_within(2 * (7 + 2) + 2)     # tile (0, 0) only
    data, last = _received(exp, [0])
    pulses = _gate_pulses(gates, [0])
    data[20, 1] ^= 1                                   # pixel (1, 3): tile (0, 1), open
    pulses[10] = (pulses[10][0], pulses[10][1], pulses[10][2] ^ 1)   # tile 1: open
    r = scoreboard.compare(SHAPE, exp, [0], data, last, gate_pulses=pulses,
                           expected_gates=gates, defined_tiles=defined)
    assert r["mismatches"] == 0 and r["stage"] is None, r["message"]
    data[15, 0] ^= 1                                   # pixel (1, 0): tile (0, 0), defined
    r = scoreboard.compare(SHAPE, exp, [0], data, last, gate_pulses=pulses,
                           expected_gates=gates, defined_tiles=defined)
    assert r["mismatches"] == 1 and r["first"]["beat"] == 15
    data, last = _received(exp, [0])
    last[-1] = False                                   # TLAST is checked everywhere
    r = scoreboard.compare(SHAPE, exp, [0], data, last, gate_pulses=pulses[:-1],
                           expected_gates=gates, defined_tiles=defined)
    assert r["mismatches"] == 1 and r["gates"]["missing"] == 1   # every gate still written


def test_pause_generator_is_seeded_and_fair():
    a, b = PauseGenerator(0.3, 7).block(), PauseGenerator(0.3, 7).block()
    assert a == b and a != PauseGenerator(0.3, 8).block()
    assert abs(sum(a) / len(a) - 0.3) < 0.03
    assert not any(PauseGenerator(0.0, 1).block())
    with pytest.raises(ValueError):
        PauseGenerator(1.0)


def test_beats_pack_lane0_in_low_byte():
    data = np.array([[1, 2, 3, 4], [255, 0, 0, 128]], np.uint8)
    words = pack_beats(data)
    assert words == [0x04030201, 0x800000FF]
    assert np.array_equal(unpack_beats(words, 4), data)


def test_verilator_build_key_names_cocotbs_libraries(monkeypatch, tmp_path):
    """A Verilator model links cocotb's VPI library by its directory (the executable's run
    path): another environment's cocotb, even of the same version, gets another build, so
    a model from an environment since deleted is never reused (it would not load)."""
    import cocotb_tools.config

    src = tmp_path / "top.v"
    src.write_text("module top; endmodule\n")
    key = cosim.runner.build_key("verilator", "top", [src])
    icarus = cosim.runner.build_key("icarus", "top", [src])
    assert key == cosim.runner.build_key("verilator", "top", [src])
    monkeypatch.setattr(cocotb_tools.config, "libs_dir", tmp_path / "other-venv" / "libs")
    cosim.runner.tool_version.cache_clear()
    try:
        assert cosim.runner.build_key("verilator", "top", [src]) != key
        # Icarus's compiled design names no library: vvp loads cocotb's at run time
        assert cosim.runner.build_key("icarus", "top", [src]) == icarus
    finally:
        monkeypatch.undo()
        cosim.runner.tool_version.cache_clear()


def test_design_cache_key_covers_the_testbench(tmp_path):
    """Changing a source under sim/ (the harness, the cocotb test, the self-checking
    testbench's generator) changes the design key; a file outside the packages does not."""
    root = cosim.runner.ROOT
    for pkg in cosim.SOURCE_PACKAGES:
        for path in (root / pkg).rglob("*.py"):
            dst = tmp_path / path.relative_to(root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(path.read_bytes())
    assert set(cosim.SOURCE_PACKAGES) >= {"tse/ref_model", "tse/quant", "tse/rtl", "tse/sim"}
    base = cosim.source_digest(tmp_path)
    assert base == cosim.source_digest(root)
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("# not a source of the design\n")
    assert cosim.source_digest(tmp_path) == base
    keys = {base}
    for name in ("tse/sim/tb_tse.py", "tse/sim/axis.py", "tse/sim/selfcheck.py", "tse/sim/selfcheck_tb.py",
                 "tse/rtl/unit.py"):
        path = tmp_path / name
        text = path.read_text()
        path.write_text(text + "\n# changed\n")
        keys.add(cosim.source_digest(tmp_path))
        path.write_text(text)
    assert len(keys) == 6 and cosim.source_digest(tmp_path) == base


def test_harness_reads_probe_widths_from_the_unit():
    text = stub.verilog(4, 70)
    lay = harness.layout_of(text, 4)
    assert (lay.tile_bits, lay.channel_bits, lay.level_bits) == (4, 4, 2)
    amaranth_style = "  output [11:0] probe_gate_tile;\n  wire [11:0] probe_gate_tile;\n"
    assert harness.port_width(amaranth_style, "probe_gate_tile") == 12
    with pytest.raises(ValueError, match="probe_gate_tile"):
        harness.port_width("input clk;", "probe_gate_tile")
    assert harness.Layout.from_ports(stub.ports(4)) == lay
    word = ((5 << (8 + 4)) | (3 << 8) | 200) << lay.gate_shift
    assert lay.decode_gate(word) == (5, 3, 200)


# ---- stream drivers on the stub --------------------------------------------------------

STUB_CFG = TSEConfig(channels=8, height=5, width=7, tile="2xW", reduction=2, lanes=4,
                     excite_multipliers=4)


@pytest.fixture(scope="module")
def stub_dir(tmp_path_factory):
    return stub.prepare(STUB_CFG, FRAMES, tmp_path_factory.mktemp("stub"), seed=5)


@pytest.mark.parametrize("sim", SIMS)
def test_drivers_on_stub_with_pauses_and_every_scenario(stub_dir, sim):
    scs = (cosim.scenarios(["stream"], FRAMES) +
           cosim.scenarios(list(cosim.KINDS), FRAMES, PAUSE, PAUSE, seed=3))
    r = cosim.cosimulate(stub_dir, sim, scs, expect="input")
    assert r["ok"], r["problems"]
    nopause, paused = r["scenarios"][0], r["scenarios"][1]
    assert nopause["throughput"] == 1.0 and nopause["input_stall_cycles"] == 0
    assert nopause["latency_cycles"] == 1 and nopause["max_buffer_occupancy"] == 1
    assert nopause["input_pause_cycles"] == 0 and nopause["output_pause_cycles"] == 0
    assert paused["throughput"] < 0.8 and paused["input_stall_cycles"] > 0
    assert paused["max_buffer_occupancy"] == 2
    assert_pauses_applied(r["scenarios"][1:])
    for s in r["scenarios"][3:]:
        assert s["error_seen"] and s["error_final"]
        assert s["bad_frame_output_beats"] == s["bad_frame_beats_sent"]   # echoed
    assert r["cycles_per_s"] > 1000


def test_drivers_catch_and_locate_a_corrupted_beat(stub_dir):
    scs = cosim.scenarios(["stream"], FRAMES, PAUSE, PAUSE, seed=4)
    beat = STUB_CFG.beats_per_frame + 37                 # frame 1: pixel 18, channels 4..7
    r = cosim.cosimulate(stub_dir, "icarus", scs, expect="input",
                         plusargs=[f"+stub_fault_beat={beat}"])
    assert not r["ok"] and r["mismatches"] == 1
    f = r["first_mismatch"]
    assert (f["frame"], f["row"], f["column"], f["channel"], f["lane"]) == (1, 2, 4, 4, 0)
    assert f["got"][0] == f["expected"][0] ^ 1


# ---- the TSE unit ------------------------------------------------------------------------

TINY = dict(height=5, width=7, reduction=2)
ISSUE14 = dict(reduction=6, lanes=1, excite_multipliers=2, seed=6799)
MATRIX = {
    # row strips of 3 rows: the frame's last strip has 2 rows (112 beats), still longer than
    # the excite latency (64 cycles), so the MAC keeps up at one beat per clock
    "row_strip_short_last": dict(TINY, channels=8, tile="3xW", lanes=1, excite_multipliers=8),
    # 3x3 patches on 5x8: partial edge tiles in both directions (rows 3+2, columns 3+3+2)
    "patch_partial": dict(TINY, width=8, channels=8, tile="3x3", lanes=1, excite_multipliers=8),
    # The four shapes where tlast_early failed under input pauses (issue 14: the harness
    # called the unit quiet while it still padded the cut frame). Column strips 2 wide on
    # W=9, a 1-column edge strip, one channel per beat:
    "column_strip_p1": dict(ISSUE14, channels=7, height=10, width=9, tile="Hx2"),
    # SE, one channel per beat
    "se_p1": dict(ISSUE14, channels=16, height=12, width=2, tile="HxW"),
    # column strips 11 wide on W=16 (a 5-column edge strip), qnnpack's quantization
    "column_strip_qnnpack": dict(ISSUE14, channels=9, height=4, width=16, tile="Hx11",
                                 engine="qnnpack"),
    # C=64 row strips, 8 lanes
    "c64_row_strips": dict(channels=64, height=14, width=14, tile="7xW", lanes=8,
                           excite_multipliers=8),
    # SE dialects (issue 17): SiLU after fc1 (its ROM, fc2 two cycles later) with PyTorch's
    # hard sigmoid (slope 1/6) as the gate
    "silu_hardsigmoid": dict(TINY, channels=8, tile="3xW", lanes=1, excite_multipliers=8,
                             hidden_activation="silu", gate="hardsigmoid"),
    # a free hidden width (C=12, hidden 5: no C // r) and ONNX's hard sigmoid (slope 0.2)
    "hidden5_hardsigmoid_onnx": dict(channels=12, hidden=5, height=5, width=7, tile="3xW",
                                     lanes=2, excite_multipliers=12, gate="hardsigmoid",
                                     gate_slope=0.2, engine="qnnpack"),
}


def matrix_config(name: str) -> TSEConfig:
    return TSEConfig(**MATRIX[name])


def assert_pauses_applied(scenarios) -> None:
    """Every scenario that asked for pauses got them on both sides, a broken frame too."""
    for s in scenarios:
        where = f"{s['kind']} (pauses in/out {s['pause_in']}/{s['pause_out']})"
        if s["pause_in"]:
            assert s["input_pause_cycles"] > 0, f"{where}: the source never paused"
        if s["pause_out"]:
            assert s["output_pause_cycles"] > 0, f"{where}: the sink never refused a beat"
        if s["kind"].startswith("tlast"):
            assert s["bad_frame_input_pause_cycles"] > 0 or not s["pause_in"], where
            assert s["bad_frame_output_pause_cycles"] > 0 or not s["pause_out"], where


@pytest.fixture(scope="module")
def designs():
    """name -> vectors directory with tse_unit.v (cached across runs by content)."""
    return {name: cosim.prepare(matrix_config(name), FRAMES) for name in MATRIX}


_RESULTS: dict = {}


def matrix_run(designs, name: str, sim: str) -> dict:
    """One simulation per (configuration, simulator): 3 frames with no pauses, then pauses of
    PAUSE on both sides for stream, reset mid-frame, early and late TLAST (memoized, so the
    bit-exactness and throughput tests share it)."""
    if (name, sim) not in _RESULTS:
        scs = (cosim.scenarios(["stream"], FRAMES) +
               cosim.scenarios(list(cosim.KINDS), FRAMES, PAUSE, PAUSE, seed=len(name)))
        r = cosim.cosimulate(designs[name], sim, scs)
        print(json.dumps({k: r[k] for k in ("sim", "throughput", "latency_cycles",
                                            "max_buffer_occupancy", "cycles_per_s", "wall_s")}))
        _RESULTS[(name, sim)] = r
    return _RESULTS[(name, sim)]


@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize("name", list(MATRIX))
def test_unit_matrix_bit_exact(designs, name, sim):
    """Every scenario, with and without pauses (both sides, checked to have happened): zero
    mismatches, error only on a bad TLAST, a broken frame emitted as one whole frame."""
    r = matrix_run(designs, name, sim)
    assert r["ok"], f"{name} on {sim}: {r['problems']}"
    assert r["mismatches"] == 0 and r["beats"] > 0
    kinds = [s["kind"] for s in r["scenarios"]]
    assert kinds == ["stream", *cosim.KINDS]
    assert all(s["beats_out"] == s["beats"] for s in r["scenarios"])
    nopause = r["scenarios"][0]
    assert nopause["input_pause_cycles"] == 0 and nopause["output_pause_cycles"] == 0
    assert_pauses_applied(r["scenarios"][1:])
    bpf = matrix_config(name).beats_per_frame
    for s in r["scenarios"][3:]:
        assert s["bad_frame_output_beats"] == bpf and not s["bad_frame_problems"], s


@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize("name", list(MATRIX))
def test_unit_throughput_without_pauses(designs, name, sim):
    """3 back-to-back frames, no pauses, default buffer depth: >= 0.99 beats per cycle from
    the first to the last output beat, no input stall, occupancy within the planned depth
    (tse.ref_model.plan: strip + excite latency)."""
    cfg = matrix_config(name)
    assert cfg.excite_keeps_up    # every strip, the short last one too, outlasts the latency
    s = matrix_run(designs, name, sim)["scenarios"][0]
    assert s["frames"] == list(range(FRAMES)) and s["mismatches"] == 0
    summary = {k: s[k] for k in ("throughput", "latency_cycles", "input_stall_cycles",
                                 "max_buffer_occupancy")}
    summary["full_throughput_depth"] = cfg.full_throughput_depth
    assert s["throughput"] >= 0.99, f"{name} on {sim}: {summary}"
    assert s["input_stall_cycles"] == 0, f"{name} on {sim}: {summary}"
    # probe_strip_level also counts the beat in the line accumulator's stage register
    assert s["max_buffer_occupancy"] <= cfg.full_throughput_depth + 1, f"{name} on {sim}: {summary}"


def test_shallow_buffer_stalls_input_like_the_model():
    """A one-strip buffer (the least that works) stalls the input; the output stays exact,
    and the stalls and peak occupancy agree with the streaming model's (ref_model)."""
    from tse.quant import reference
    from tse.ref_model import kernels, streaming

    base = matrix_config("row_strip_short_last")
    cfg = base.replace(buffer_depth=base.strip_beats)
    d = cosim.prepare(cfg, FRAMES)
    r = cosim.cosimulate(d, "icarus", cosim.scenarios(["stream"], FRAMES))
    assert r["ok"], r["problems"]
    ref = reference.build(cfg, FRAMES)
    model = streaming.run(cfg, ref.params, kernels.nhwc(ref.codes["input"]),
                          depth=cfg.strip_buffer_depth)["stats"]
    assert np.array_equal(np.load(d / "input.npy"), kernels.nhwc(ref.codes["input"]))
    got = {"stalls": r["input_stall_cycles"], "peak": r["max_buffer_occupancy"]}
    want = {"stalls": model["input_stall_cycles"], "peak": model["peak_strip_buffer_occupancy"]}
    assert got["stalls"] > 0 and got["stalls"] == want["stalls"], (got, want)
    # probe_strip_level also counts the beat in the line accumulator's stage register
    assert want["peak"] <= got["peak"] <= want["peak"] + 1, (got, want)


def test_tse_cosim_cli_json(designs):
    cmd = [sys.executable, "-m", "tse", "cosim", "--channels", "8", "--height", "5",
           "--width", "7", "--tile", "2xW", "--lanes", "4", "--reduction", "2",
           "--excite-multipliers", "4", "--sim", "icarus", "--frames", "3", "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    for key in ("sim", "frames", "beats", "mismatches", "cycles", "throughput",
                "latency_cycles", "max_buffer_occupancy", "wall_s"):
        assert key in out
    assert out["sim"] == "icarus" and out["frames"] == 3 and out["beats"] == 3 * 70
    assert out["mismatches"] == 0 and out["ok"] and out["cycles"] > out["beats"]


def test_tse_cosim_cli_fails_on_one_wrong_expected_value(designs, tmp_path):
    """The same unit against vectors with one output code changed: exit status 1, and the
    report names that beat and the tile_broadcaster (every gate still matches)."""
    src = designs["row_strip_short_last"]
    dst = tmp_path / "vectors"
    shutil.copytree(src, dst)
    out = np.load(dst / "output.npy")
    out[1, 3, 5, 5] ^= 0x40                      # frame 1, row 3, column 5, channel 5
    np.save(dst / "output.npy", out)
    cmd = [sys.executable, "-m", "tse", "cosim", "--vectors", str(dst), "--sim", "icarus",
           "--json"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 1, p.stderr[-2000:]
    r = json.loads(p.stdout)
    assert r["mismatches"] == 1 and not r["ok"]
    f = r["first_mismatch"]
    assert (f["frame"], f["row"], f["column"], f["channel"], f["lane"]) == (1, 3, 5, 5, 0)
    assert r["stage"] == "tile_broadcaster"


def test_unit_without_probes_is_located_by_the_models_stages(tmp_path):
    """The default export (no probe ports) under cocotb: bit-exact as written; with every
    gate of the sigmoid ROM's image changed (the excite MAC's output wrong) the first
    mismatch is charged to excite_mac, with one expected product changed to the
    tile_broadcaster, both from the model's stages (no gate was seen)."""
    src = cosim.prepare(matrix_config("row_strip_short_last"), FRAMES, probes=False)
    assert not harness.has_port((src / selfcheck.UNIT_FILE).read_text(), "probe_gate_valid")
    scs = cosim.scenarios(["stream"], FRAMES)
    r = cosim.cosimulate(src, "icarus", scs)
    assert r["ok"] and r["mismatches"] == 0, r["problems"]
    assert r["max_buffer_occupancy"] is None           # no strip level without probes

    gate_dir = tmp_path / "gate"
    shutil.copytree(src, gate_dir)
    rom = gate_dir / "hex" / "rom_sigmoid.hex"
    lines = rom.read_text().split()
    rom.write_text("".join(format(int(w, 16) ^ 1, f"0{len(w)}x") + "\n" for w in lines))
    r = cosim.cosimulate(gate_dir, "icarus", scs)
    assert not r["ok"] and r["mismatches"] > 0
    assert r["stage"] == "excite_mac", r["problems"]
    assert "from the model's stages" in r["scenarios"][0]["report"]

    out_dir = tmp_path / "output"
    shutil.copytree(src, out_dir)
    out = np.load(out_dir / "output.npy")
    out[1, 3, 5, 5] ^= 0x40                      # frame 1, row 3, column 5, channel 5
    np.save(out_dir / "output.npy", out)
    r = cosim.cosimulate(out_dir, "icarus", scs)
    assert not r["ok"] and r["mismatches"] == 1
    f = r["first_mismatch"]
    assert (f["frame"], f["row"], f["column"], f["channel"]) == (1, 3, 5, 5)
    assert r["stage"] == "tile_broadcaster", r["problems"]
    assert "from the model's stages" in r["scenarios"][0]["report"]


# ---- the self-checking Verilog testbench ----------------------------------------------------

@pytest.fixture(scope="module")
def altered(designs, tmp_path_factory):
    """A copy of a vectors directory with one expected output value changed."""
    src = designs["patch_partial"]
    dst = tmp_path_factory.mktemp("altered") / "vectors"
    shutil.copytree(src / "hex", dst / "hex")
    path = dst / "hex" / "output.hex"
    lines = path.read_text().splitlines()
    k = len(lines) // 2 + 3
    word = int(lines[k], 16) ^ 0x1             # lane 0's low bit of one beat
    lines[k] = format(word, f"0{len(lines[k])}x")
    path.write_text("\n".join(lines) + "\n")
    return dst, k


@pytest.mark.parametrize("sim", SIMS)
def test_selfcheck_testbench_passes_then_fails_on_one_altered_value(designs, altered, sim,
                                                                   tmp_path_factory):
    vec = designs["patch_partial"]
    build = cosim.runner.cache_root() / "selfcheck"
    assert (vec / selfcheck.TB_FILE).is_file() and (vec / selfcheck.UNIT_FILE).is_file()
    ok = selfcheck.run(vec, sim, build, pause=25, seed=9)
    assert ok["passed"] and ok["returncode"] == 0, ok
    cfg = matrix_config("patch_partial")
    bpf, groups = cfg.beats_per_frame, cfg.channels // cfg.lanes
    assert int(ok["mismatches"]) == 0 and int(ok["beats"]) == FRAMES * bpf
    fast = selfcheck.run(vec, sim, build, pause=0)      # throughput: see the matrix tests
    assert fast["passed"] and int(fast["cycles"]) < int(ok["cycles"]), fast
    bad_dir, k = altered
    bad = selfcheck.run(vec, sim, build, pause=25, seed=9, hex_dir=bad_dir)   # same build
    assert not bad["passed"] and bad["returncode"] != 0, bad
    assert int(bad["mismatches"]) == 1
    frame, beat = divmod(k, bpf)
    pixel = beat // groups
    first = (beat % groups) * cfg.lanes
    assert (f"frame {frame} row {pixel // cfg.width} column {pixel % cfg.width} channels "
            f"{first}..{first + cfg.lanes - 1}") in bad["first_mismatch"]
