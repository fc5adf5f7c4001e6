"""Mutation testing of the unit's checks (issue #20): how many seeded faults the
self-checking testbench (tse/sim/selfcheck_tb.py) kills.

The MCY method with one build. Yosys reads the unit's exported Verilog as it is now, `prep
-flatten`s it and lists N mutations (`mutate -list N -seed S`, an even sampling of cells,
ports and bits: stuck-at 0/1, inverted, a bit copied from a neighbour), then applies them
all to one netlist, each behind `mutsel == i` (`mutate -ctrl mutsel WIDTH i`; 0 is the
original). A wrapper with the unit's AXI ports drives mutsel from the plusarg +mutsel=I, so
Verilator compiles once and each mutant is one run of the testbench (+stop_on_mismatch).

The netlist's ROM contents load at run time from +tse_rom_dir (loadable_roms), so the same
model also runs other parameter sets (tse.sim.param_sets: weights at the int8 ends, spread
requantizer shifts, random), each with its own golden vectors from the model. A mutant is
killed when the testbench fails (a mismatch, a timeout, a wrong error flag) in one of RUNS
(no pauses, then pauses on both sides, on the sink, on the source) with any parameter set.
Each survivor gets a formal verdict (survivor_check): in a mean unit, first that unit
alone against the mutant over every tile sum it can see (tse.sim.mean_check: equivalent, or a
sum that tells them apart, which mutation_vectors.targeted_frames puts into that lane for a
run that kills the mutant unless the excite MAC masks the code, and then a parameter set
that carries that pooled code alone to a gate: mutant_runs.pooled_run); in the requantizer,
first the requantizer alone over every word the unit's ROM can hold (tse.sim.requant_check:
equivalent, or operands that tell them apart, which a parameter set of their own puts into
a neuron: mutant_runs.requant_run); then the activation proof, a dead-logic check first
(tse.sim.activation: in every state the original unit, with its own ROM words, can reach,
the mutation leaves its wire's value unchanged; seconds each, the unit's RAMs cut when
large), then, on request, a check of the original against that mutant alone: yosys
`equiv_make` pairs their signals by name, `equiv_simple` and `equiv_induct` prove pairs equal
(SAT over a few cycles' cone, then induction assuming every pair equal), memories mapped to
registers so the ROMs' words are known (minutes each; "unknown" over FORMAL_MEMORY_BITS).
"equivalent": proved by either, for all time (no output can ever differ); "activated": a
reachable state changes the mutated wire (the mutant may still be masked further on: not a
counterexample to equivalence); "not proven": no verdict in time. The mutants are drawn on
the netlist after `prep -flatten` and simulated from Yosys's netlist, not the exported
Verilog. Only "equivalent" leaves the score's denominator: score = killed / (mutants -
equivalent). Survivors no check proved equivalent then run the fine-words sets
(mutant_runs.fine_run: accumulators shown to their last bit, targeted_params.fine_words).

Long: the mutated netlist, its wrapper, the parameter sets' vectors, the runs and the
survivors' formal checks are one campaign sharing one build directory and its layout.
"""
from __future__ import annotations

import json
import re
import shlex
import sys
import time
from pathlib import Path

from . import mutation_vectors, runner, selfcheck
from .mutant_runs import RUNS, fine_run, pooled_run, requant_run, simulate, targeted_run
from .netlist import (MUTSEL, MutationError, flat_rtlil, memory_bits, read_script, stage,
                      yosys)

MUTANTS_TOP = "tse_mutants"
WRAPPER = "tse_mutant_dut"
KINDS = {
    "row_strip": dict(channels=8, height=5, width=7, tile="3xW", reduction=2, lanes=1,
                      excite_multipliers=8),
    "column_strip": dict(channels=8, height=5, width=7, tile="Hx3", reduction=2, lanes=1,
                         excite_multipliers=8),
    "patch": dict(channels=8, height=5, width=8, tile="3x3", reduction=2, lanes=1,
                  excite_multipliers=8),
    "se": dict(channels=8, height=4, width=4, tile="HxW", reduction=2, lanes=1,
               excite_multipliers=8),
}
"""A small configuration of each tiling kind for campaigns (C=8, hidden 4, 8 multipliers:
tse prove's C=2 units have one hidden neuron, where most of the excite MAC is constant);
the row strips' last strip and the patches' edge tiles are partial."""
FORMAL_MEMORY_BITS = 1 << 16
"""Largest total memory (bits) the formal check maps to registers; above it: "unknown"."""
FORMAL_SEQ = 2
FORMAL_TIMEOUT_S = 600.0
FORMAL_METHOD = (f"yosys equiv_make (original vs mutant, memories mapped to registers), "
                 f"equiv_simple -seq {FORMAL_SEQ}, equiv_induct -seq {FORMAL_SEQ}: a proof by "
                 "induction over matching registers, not bounded")


def parse_mutation(line: str) -> dict:
    """One `mutate ...` line of `mutate -list` as a dict (mode, cell, port, portbit, ...,
    src: a list) with `command`, the line without its -ctrl option."""
    tokens = shlex.split(line.replace("\\", "\\\\"))
    out, keep, i = {"src": []}, ["mutate"], 1
    while i < len(tokens):
        opt = tokens[i].lstrip("-")
        if opt == "ctrl":
            i += 4
            continue
        value = tokens[i + 1]
        keep += [tokens[i], value]
        if opt == "src":
            out["src"].append(value)
        else:
            out[opt] = int(value) if opt.endswith("bit") else value
        i += 2
    out["command"] = " ".join(keep)
    return out


def mutation_list(verilog: Path, n: int, seed: int, filters: str = "") -> list[dict]:
    """N mutations of the unit (yosys `mutate -list`), numbered from 1; filters: mutate's
    own (-wire NAME, -mode MODE, ...)."""
    workdir = verilog.parent
    yosys(read_script(verilog) + f"mutate -list {n} -seed {seed} {filters} -o mutations.txt\n",
          workdir)
    lines = [ln for ln in (workdir / "mutations.txt").read_text().splitlines()
             if ln.startswith("mutate ")]
    return [dict(parse_mutation(ln), index=i) for i, ln in enumerate(lines, 1)]


def ctrl_width(n: int) -> int:
    return max(1, n.bit_length())


def wrapper(name: str, width: int, data_bits: int) -> str:
    """A module with the unit's AXI ports around the mutants' netlist, mutsel from
    +mutsel=I (0, the original, without it)."""
    return f"""// Generated by tse/sim/mutate.py: the unit's AXI ports around {MUTANTS_TOP}, the
// unit with every mutant behind {MUTSEL} == I; +{MUTSEL}=I picks one (0: the original {name}).
module {WRAPPER} #(parameter DW = {data_bits}) (
    input aclk, input aresetn,
    input [DW-1:0] s_axis_tdata, input s_axis_tvalid, output s_axis_tready,
    input s_axis_tlast,
    output [DW-1:0] m_axis_tdata, output m_axis_tvalid, input m_axis_tready,
    output m_axis_tlast, output error
);
    reg [{width - 1}:0] {MUTSEL} = 0;
    initial if (!$value$plusargs("{MUTSEL}=%d", {MUTSEL})) {MUTSEL} = 0;
    {MUTANTS_TOP} mutants (
        .aclk(aclk), .aresetn(aresetn),
        .s_axis_tdata(s_axis_tdata), .s_axis_tvalid(s_axis_tvalid),
        .s_axis_tready(s_axis_tready), .s_axis_tlast(s_axis_tlast),
        .m_axis_tdata(m_axis_tdata), .m_axis_tvalid(m_axis_tvalid),
        .m_axis_tready(m_axis_tready), .m_axis_tlast(m_axis_tlast), .error(error),
        .{MUTSEL}({MUTSEL})
    );
endmodule
"""



def mutants_netlist(verilog: Path, mutations: list[dict]) -> Path:
    """One netlist (MUTANTS_TOP) holding every mutation behind mutsel, beside the unit
    (mutations sharing an index form one mutant)."""
    width = ctrl_width(max(m["index"] for m in mutations))
    applied = "".join(f"{m['command']} -ctrl {MUTSEL} {width} {m['index']}\n"
                      for m in mutations)
    (verilog.parent / "mutants.ys").write_text(applied)
    yosys(read_script(verilog) + "script mutants.ys\n"
          + f"rename {verilog.stem} {MUTANTS_TOP}\n"
          + "write_verilog -noattr mutants.v\n", verilog.parent)
    out = verilog.parent / "mutants.v"
    out.write_text(loadable_roms(out.read_text()).replace(PARALLEL_CASE, ""))
    return out


PARALLEL_CASE = " // synopsys parallel_case"
"""The hint write_verilog puts on a $pmux's case, which Verilator checks at run time: a
mutant that selects two arms at once would stop the simulation (a kill no check made, which
+blind exposes). Without it the case takes its first match, a behaviour the testbench judges."""


_ROM = re.compile(r"^(  reg (?:\[\d+:0\] )?(\\\S*?(\w+)_rom) +\[(\d+):0\];\n)"
                  r"  initial begin\n(.*?)^  end\n", re.M | re.S)


def loadable_roms(netlist: str) -> str:
    """The netlist with every ROM's constant contents replaced, when the simulation gets
    +tse_rom_dir=DIR, by DIR/rom_NAME.hex read at time zero: one compiled model then runs
    other parameter sets (tse.sim.param_sets) with the same mutants."""
    from tse.ref_model.roms import ROM_DIR_PLUSARG

    def load(m):
        decl, mem, name, last, body = m.groups()
        d, f = f"tse_mut_dir_{name}", f"tse_mut_file_{name}"
        return (f"{decl}  reg [8*1024-1:0] {d}, {f};\n  initial begin\n"
                f'    if ($value$plusargs("{ROM_DIR_PLUSARG}=%s", {d})) begin\n'
                f'      $sformat({f}, "%0s/rom_{name}.hex", {d});\n'
                f"      $readmemh({f}, {mem} , 0, {last});\n"
                f"    end else begin\n{body}    end\n  end\n")

    return _ROM.sub(load, netlist)


def build(vectors_dir, verilog: Path, mutations: list[dict], build_dir) -> Path:
    """The testbench compiled once with every mutant (Verilator); returns the program."""
    lanes = json.loads((Path(vectors_dir) / "manifest.json").read_text())["unit"]["geometry"][
        "lanes"]
    netlist = mutants_netlist(verilog, mutations)
    wrap = verilog.parent / f"{WRAPPER}.v"
    wrap.write_text(wrapper(verilog.stem, ctrl_width(max(m["index"] for m in mutations)),
                            8 * lanes))
    return selfcheck.build(vectors_dir, "verilator", build_dir, unit_sources=[wrap, netlist],
                           defines=[f"TSE_DUT={WRAPPER}"])


def equivalence(verilog: Path, mutation: dict, workdir, *,
                timeout: float = FORMAL_TIMEOUT_S) -> dict:
    """Formal check of one mutant against the original (module docstring): {"result":
    "equivalent" | "not proven" | "unknown", "method", "note"}. Every pair must be proven:
    equiv_make's $equiv cells drive both copies' downstream logic, so a pair left unproven
    (the mutated wire's) makes the pairs after it trivially equal; an outputs-only verdict
    called a mutant the testbench kills equivalent (docs/verification.md)."""
    base = {"method": FORMAL_METHOD}
    bits = memory_bits(verilog)
    if bits > FORMAL_MEMORY_BITS:
        return dict(base, result="unknown",
                    note=f"memories of {bits} bits (over {FORMAL_MEMORY_BITS}) not mapped")
    workdir = Path(workdir)
    stage(verilog, workdir)
    top = verilog.stem
    command = mutation["command"].replace(f"-module {top} ", "-module mutant ", 1)
    script = (read_script(verilog) + "memory_map\nopt_clean\n"
              + f"copy {top} mutant\n{command}\n"
              + f"equiv_make {top} mutant equiv\nhierarchy -top equiv\n"
              + f"equiv_simple -seq {FORMAL_SEQ}\nequiv_induct -seq {FORMAL_SEQ}\n"
              + "equiv_status\n")
    try:
        log = yosys(script, workdir, timeout=timeout)
    except MutationError as e:
        return dict(base, result="unknown", note=str(e).splitlines()[0])
    m = re.search(r"Of those cells (\d+) are proven and (\d+) are unproven", log)
    if m is None:
        return dict(base, result="unknown", note="no equiv_status summary in the log")
    if int(m.group(2)) == 0:
        return dict(base, result="equivalent", note=f"all {m.group(1)} $equiv cells proven")
    unproven = re.findall(r"Unproven \$equiv \S+: (\S+)", log)
    return dict(base, result="not proven",
                note=f"{m.group(2)} signals unproven: {', '.join(unproven[:4])}")


def survivor_check(verilog: Path, mutation: dict, workdir: Path, equiv_check: bool,
                   flat: Path | None = None, plan=None) -> dict:
    """The formal verdict on a surviving mutant: for a mean unit's cell (with the unit's
    plan), the mean-unit check (tse.sim.mean_check: "equivalent", or "distinguished" with
    the tile sum that tells the mutant's code apart); for the requantizer's, the requantizer
    check (tse.sim.requant_check: "equivalent", or "distinguished" with the operands);
    otherwise, or where that leaves it open, the activation proof (tse.sim.activation; from
    `flat`, netlist.flat_rtlil, when given), then, with equiv_check and where that leaves it open, the whole-unit equiv_make
    check (equivalence; minutes each)."""
    from . import mean_check, requant_check
    from .activation import not_activated

    if plan is not None and flat is not None and mean_check.lane_of(mutation) is not None:
        from tse.rtl.pipeline import mean_depth
        verdict = mean_check.check(flat, mutation, plan, mean_depth(plan), workdir / "mean")
        if verdict["result"] != "not proven":
            return verdict
    if plan is not None and flat is not None and requant_check.region_of(mutation) is not None:
        verdict = requant_check.check(flat, mutation, plan, workdir / "requant")
        if verdict["result"] != "not proven":
            return verdict
    verdict = not_activated(verilog, mutation, workdir / "activation", flat=flat)
    if verdict["result"] == "equivalent" or not equiv_check:
        return verdict
    deeper = equivalence(verilog, mutation, workdir / "equiv")
    if deeper["result"] == "equivalent":
        return deeper
    return dict(verdict, equiv=deeper)


def campaign(vector_sets, n: int, seed: int, workdir, *, build_dir=None, blind: bool = False,
             formal: bool = True, formal_budget_s: float | None = None,
             equiv_check: bool = False, cfg=None, frames: int = 3,
             only: list[int] | None = None, progress=sys.stderr) -> dict:
    """Seed n mutants into the unit of the vectors directories (campaign_vectors: one, or
    the block's own then other parameter sets), run the testbench on each, check survivors
    formally; returns the report (mutants, killed, equivalent, survived, score...). With
    cfg (the vectors' configuration, campaign_vectors(cfg, frames)): survivors in a mean unit
    get the mean-unit check, and those it tells apart run again on targeted vectors
    (targeted_vectors: the sums it found), which kill them unless the excite MAC masks the
    code. With `only` (indices), the sample is drawn as for n but only those mutants run."""
    t0 = time.perf_counter()
    runner.prepare_environment("verilator")
    if isinstance(vector_sets, (str, Path)):
        vector_sets = [vector_sets]
    vector_sets, workdir = [Path(v).resolve() for v in vector_sets], Path(workdir)
    vectors_dir = vector_sets[0]
    verilog = stage(selfcheck.unit_verilog_of(vectors_dir), workdir / "design")
    mutations = mutation_list(verilog, n, seed)
    if only:
        missing = sorted(set(only) - {m["index"] for m in mutations})
        if missing:
            raise MutationError(f"only: mutants {missing} are not allowed; allowed: "
                                f"1..{len(mutations)} (the mutants drawn)")
        mutations = [m for m in mutations if m["index"] in set(only)]
    _say(progress, f"mutate: {len(mutations)} mutants of {verilog.name}; building them into "
                   "one Verilator model ...")
    program = build(vectors_dir, verilog, mutations, build_dir or runner.cache_root() / "mutants")
    runs = [(f"{name}, parameter set {k}" if k else name, vdir, extra)
            for k, vdir in enumerate(vector_sets) for name, extra in RUNS]
    original_s = 0.0
    for name, vdir, extra in runs:
        original = simulate(program, vdir, 0, blind=blind, extra=extra)
        if not original.get("passed"):
            raise MutationError(f"the original unit fails its own testbench ({name}): "
                                f"{original['reason']}")
        original_s = max(original_s, original["wall_s"])
    limit = max(30.0, 20 * original_s)
    results = []
    for k, m in enumerate(mutations, 1):
        for name, vdir, extra in runs:
            r = simulate(program, vdir, m["index"], blind=blind, timeout=limit, extra=extra)
            if not r["passed"]:
                break
        results.append(dict(m, killed=not r["passed"], reason=r["reason"],
                            killed_by=None if r["passed"] else name))
        _say(progress, f"\rmutate: {k}/{len(mutations)} run, "
                       f"{sum(x['killed'] for x in results)} killed", end="")
    _say(progress, "")
    survivors = [r for r in results if not r["killed"]]
    formal_t0 = time.perf_counter()
    flat = flat_rtlil(verilog, workdir / "flat") if formal and survivors else None
    plan = mutation_vectors.unit_plan(cfg, frames) if cfg is not None and survivors else None
    for k, r in enumerate(survivors, 1):
        spent = time.perf_counter() - formal_t0
        if formal and formal_budget_s is not None and spent > formal_budget_s:
            r["formal"] = {"result": "unknown",
                           "note": f"not checked (formal budget of {formal_budget_s:.0f} s spent)"}
        elif formal:
            _say(progress, f"\rmutate: formal check of survivor {k}/{len(survivors)}", end="")
            r["formal"] = survivor_check(verilog, r, workdir / f"formal{r['index']}",
                                         equiv_check, flat, plan)
        else:
            r["formal"] = {"result": "unknown", "note": "not checked (--no-formal)"}
    if survivors and formal:
        _say(progress, "")
    told = [r for r in survivors if r["formal"]["result"] == "distinguished"]
    if told and cfg is not None:
        sums = [r for r in told if "sum" in r["formal"]]
        words = [r for r in told if "acc" in r["formal"]]
        _say(progress, f"mutate: {len(told)} survivors told apart by a unit check; running "
                       "them on targeted vectors ...")
        if sums:
            targeted_run(program, sums, cfg, len(vector_sets) - 1, workdir / "targeted",
                         frames, blind, limit)
            pooled_run(program, [r for r in sums if not r["killed"]], cfg, plan, verilog,
                       workdir / "targeted-pooled", frames, blind, limit)
        if words:
            requant_run(program, words, cfg, plan, verilog, workdir / "targeted-words", frames,
                        blind, limit)
        survivors = [r for r in survivors if not r["killed"]]
    rest = [r for r in survivors if r["formal"]["result"] != "equivalent"]
    if rest and plan is not None:
        _say(progress, f"mutate: {len(rest)} survivors left; running them on the fine-words "
                       "sets ...")
        fine_run(program, rest, cfg, plan, verilog, workdir / "fine-words", frames, blind,
                 limit)
        survivors = [r for r in survivors if not r["killed"]]
    killed = sum(r["killed"] for r in results)
    equivalent = sum(1 for r in survivors if r["formal"]["result"] == "equivalent")

    def by(label):      # mutants killed by a run whose name starts with label
        return sum(1 for r in results if (r["killed_by"] or "").startswith(label))

    survived = [_brief(r) for r in survivors if r["formal"]["result"] != "equivalent"]
    scored = len(results) - equivalent
    return {"mutants": len(results), "killed": killed, "equivalent": equivalent,
            "survived": survived, "killed_by_targeted_sums": by("targeted sums"),
            "killed_by_targeted_words": by("targeted words"),
            "killed_by_targeted_pooled": by("targeted pooled codes"),
            "killed_by_fine_words": by("fine words"),
            "score": round(killed / scored, 4) if scored else None,
            "seed": seed, "only": only, "unit": verilog.name, "original_wall_s": original_s,
            "runs": [name for name, _, _ in runs], "parameter_sets": len(vector_sets),
            "wall_s": round(time.perf_counter() - t0, 1),
            "detail": [_brief(r) for r in results]}


def _brief(r: dict) -> dict:
    keep = ("index", "mode", "cell", "port", "portbit", "ctrlbit", "wire", "wirebit", "src",
            "killed", "killed_by", "reason", "formal")
    return {k: r[k] for k in keep if k in r}


def _say(stream, text: str, end: str = "\n") -> None:
    if stream is not None:
        print(text, end=end, file=stream, flush=True)
