"""The first formal check of a surviving mutant (tse mutate): a proof that the mutation never
activates, that is, that in every state the original unit can reach, the value the mutation
would put on its wire equals the value the original puts there.

Yosys's `mutate -ctrl` applies a mutation as a multiplexer (`mutate_ctrl_mux`) choosing
between the original value (A) and the mutated one (B) when mutsel selects the mutant. The
proof model is the original unit (each such mux's select tied to A) with one assertion per
mux, A == B, every cycle. Its inputs are free (any stream, reset at any time), its ROMs hold
the configuration's own words, and RAMs larger than ACTIVATION_MEMORY_BITS are cut (their read
data free): every choice over-approximates what the unit can do, so a proof stays sound.
Proved, the mutant's every state and output equals the original's at every cycle (by
induction on time: the same state gives the same mux output), so no test can kill it: it is
"equivalent". Only the assertions' fan-in cone is kept (the outputs are not ports of the
model), which is what makes this cheaper than a miter of two whole units.

Before any engine, a structural check: the mutant with its multi-bit cells split into the
bit slices their users read (`splitcells`) and everything no output needs removed (`opt
-purge`, `opt_clean -purge`: transformations that keep every output). When nothing reads
mutsel any more, no output depends on the mutation at any time, whatever it does to its
wire: "equivalent" (dead: a bias field's bit of a register whose consumer reads only the
multiplier and shift fields, a ROM port bit nothing reads). The activation proof alone
called such mutants "activated": their wire does change.

The engines in turn: k-induction (SymbiYosys with yices), whose base case also finds a
reachable activation ("activated": a state where the mutation changes its wire; the mutant
may still be masked further on), then ABC's IC3/PDR, which finds the invariants k-induction
lacks (a sum that is never negative, a bit never set) within its time budget.
"""
from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

from tse.rtl.formal_flow import abc_tool, sby

from .netlist import (FLAT_RTLIL, MUTSEL, MutationError, memory_bits, read_script, stage,
                      yosys)

METHOD = ("not activated: the original unit with an assertion that the mutated wire's value "
          "equals the original's, proved by k-induction (yices) or IC3/PDR (ABC) over free "
          "inputs; large RAMs cut")
DEAD_METHOD = ("dead: after splitcells and opt -purge (output-preserving), nothing reads the "
               "mutant's select")
DEPTH = 4
ACTIVATION_MEMORY_BITS = 1 << 14
"""RAMs up to this many bits in all stay in the proof model; above it every RAM's read data is
cut free (a strip buffer of the default unit: 200 kbit, which IC3/PDR cannot map)."""
KIND_TIMEOUT_S = 120.0
PDR_TIMEOUT_S = 180.0

DEAD_COUNT = "mutsel_readers.txt"
DEAD_SCRIPT = (f"select -assert-count 1 w:{MUTSEL}\nsplitcells\nopt -purge\nopt_clean -purge\n"
               f"tee -q -o {DEAD_COUNT} select -count w:{MUTSEL} %co1 w:{MUTSEL} %d\n")
"""The structural check (module docstring), after the mutant's RTLIL is written: the cells
that still read mutsel, counted."""
_PDR_FAIL = "Status returned by engine: FAIL"
_MUX = re.compile(r"^  cell \$mux (\S*mutate_ctrl_mux\S*)\n(.*?)^  end\n", re.M | re.S)

SBY = """[options]
mode prove
depth {depth}

[engines]
{engine}

[script]
read_rtlil proof.il
delete -output o:*
prep -top {top}
{cut}opt_clean

[files]
proof.il
"""


def proof_model(netlist: str) -> tuple[str, int]:
    """The RTLIL `netlist` (one mutant applied with -ctrl) as the proof model: each
    mutate_ctrl_mux's select tied to 0 (the original) and an $assert that its A and B are
    equal; (model, number of muxes)."""
    checks = []

    def tie(m):
        body = m.group(2)
        width = int(re.search(r"parameter \\WIDTH (\d+)", body)[1])
        a = re.search(r"connect \\A (.+)", body)[1]
        b = re.search(r"connect \\B (.+)", body)[1]
        checks.append((width, a, b))
        body = re.sub(r"connect \\S .+", r"connect \\S 1'0", body)
        return f"  cell $mux {m.group(1)}\n{body}  end\n"

    model = _MUX.sub(tie, netlist)
    cells = ""
    for i, (width, a, b) in enumerate(checks):
        cells += (f"  wire $tse_activation_eq{i}\n"
                  f"  cell $eq $tse_activation_cmp{i}\n"
                  "    parameter \\A_SIGNED 0\n    parameter \\B_SIGNED 0\n"
                  f"    parameter \\A_WIDTH {width}\n    parameter \\B_WIDTH {width}\n"
                  "    parameter \\Y_WIDTH 1\n"
                  f"    connect \\A {a}\n    connect \\B {b}\n"
                  f"    connect \\Y $tse_activation_eq{i}\n  end\n"
                  f"  cell $assert $tse_activation_assert{i}\n"
                  f"    connect \\A $tse_activation_eq{i}\n    connect \\EN 1'1\n  end\n")
    end = model.rstrip().rfind("\nend")          # the (flat) top module's last line
    if end < 0:
        raise MutationError("the mutant's RTLIL has no module end")
    return model[:end + 1] + cells + model[end + 1:], len(checks)


def _sby(work: Path, task: str, engine: str, top: str, cut: bool, timeout: float) -> str:
    """Run one SymbiYosys task in work/; its log, "" on timeout."""
    cutting = "cutpoint t:$mem_v2 r:WR_PORTS>0 %i\n" if cut else ""
    (work / f"{task}.sby").write_text(SBY.format(depth=DEPTH, engine=engine, top=top,
                                                 cut=cutting))
    return sby(work, task, timeout, pdr=engine.startswith("abc")) or ""


def not_activated(verilog: Path, mutation: dict, workdir, *,
                  kind_timeout: float = KIND_TIMEOUT_S,
                  pdr_timeout: float = PDR_TIMEOUT_S, flat: Path | None = None) -> dict:
    """Prove that `mutation` (a mutation_list entry, or {"commands": [...]}: several
    mutations applied together) never activates in the unit of `verilog` (module docstring).
    {"result": "equivalent" | "activated" | "not proven", "method", "note", "seconds"}:
    activated is a reachable state where the mutated wire differs (k-induction's base
    case); not proven, neither engine decided in time. flat: the unit already loaded flat
    (netlist.flat_rtlil), read instead of its Verilog."""
    t0 = time.monotonic()
    workdir = Path(workdir)
    stage(verilog, workdir)
    commands = mutation.get("commands") or [mutation["command"]]
    if flat is not None:
        shutil.copyfile(flat, workdir / FLAT_RTLIL)
    load = f"read_rtlil {FLAT_RTLIL}\n" if flat is not None else read_script(verilog)
    yosys(load + "".join(f"{c} -ctrl {MUTSEL} 1 1\n" for c in commands)
          + "write_rtlil mutant.il\n" + DEAD_SCRIPT, workdir)
    model, muxes = proof_model((workdir / "mutant.il").read_text())
    base = {"method": METHOD}
    if muxes == 0:
        # mutate adds no mux (and reads no mutsel) when the mutated value is the original's
        # (a bit stuck at the constant it is)
        if re.search(rf"connect \\\S+ \\{MUTSEL}\b", model):
            raise MutationError("the mutant reads mutsel without a mutate_ctrl_mux: "
                                "this Yosys applies mutations another way")
        return dict(base, result="equivalent", note="the mutation leaves its wire unchanged",
                    seconds=round(time.monotonic() - t0, 1))
    readers = re.search(r"(\d+) objects", (workdir / DEAD_COUNT).read_text())
    if readers is None:
        raise MutationError(f"{workdir / DEAD_COUNT}: no count of mutsel's readers")
    if int(readers[1]) == 0:
        return dict(base, method=DEAD_METHOD, result="equivalent",
                    note="dead: no output depends on the mutation (nothing reads mutsel once "
                         "the unit is cut to the bits its outputs need)",
                    seconds=round(time.monotonic() - t0, 1))
    (workdir / "proof.il").write_text(model)
    cut = memory_bits(verilog) > ACTIVATION_MEMORY_BITS
    engines = [("kind", "smtbmc yices", kind_timeout)]
    if abc_tool() is not None and pdr_timeout > 0:
        engines.append(("pdr", "abc pdr", pdr_timeout))
    notes = []
    for task, engine, limit in engines:
        log = _sby(workdir, task, engine, verilog.stem, cut, limit)
        secs = round(time.monotonic() - t0, 1)
        if "DONE (PASS" in log:
            how = "k-induction" if task == "kind" else "IC3/PDR"
            return dict(base, result="equivalent", seconds=secs,
                        note=f"never activated: proved by {how}"
                             + (" (RAM read data free)" if cut else ""))
        if "DONE (FAIL" in log or _PDR_FAIL in log:
            # (Debian's ABC writes a witness this SymbiYosys cannot read: its run ends in
            # ERROR after the engine's FAIL)
            return dict(base, result="activated", seconds=secs,
                        note="a reachable state changes the mutated wire "
                             f"({'base case' if task == 'kind' else 'IC3/PDR'})")
        notes.append(f"{task}: {'no verdict in ' + format(limit, 'g') + ' s' if not log else 'open'}")
    return dict(base, result="not proven", note="; ".join(notes),
                seconds=round(time.monotonic() - t0, 1))
