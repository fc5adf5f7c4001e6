"""A surviving mutant of one mean unit, checked alone (tse mutate).

A mean unit (tse/rtl/pipeline.mean_unit, one submodule per lane) is a pure function of one
tile sum and the tile's kind: a feed-forward pipeline of `depth` registers, no feedback, no
stall. So whether a mutant of it can change its pooled code is decidable on the unit alone.
Its region of the flat netlist (the cells whose names carry the submodule's path, and the
cells optimization passes made of theirs) is cut out with Yosys `submod`, a copy gets the
mutation, `miter -equiv` pairs the two (tse.sim.unit_check, shared with the requantizer's
check), and a wrapper assumes what the line accumulator can
hand over (a sum of kind k lies in [-zx n_k, (255 - zx) n_k], n_k the kind's pixels, k a
kind the frame has) and asserts the two codes equal `depth` cycles after every such input.
Inputs of the region other than the sums' word, the kind and the clock (logic Yosys merged
with the rest of the unit's) stay free: an over-approximation, so a proof stays sound; its
other outputs must be equal in every cycle.

k-induction at depth `depth` + 2 decides it: after `depth` cycles the state is a function
of the last inputs, so the induction step is the combinational question itself.
  - proved: the mutant's code equals the original's for every sum the unit can see, so no
    output can differ: "equivalent";
  - the base case fails on the codes: its trace names a sum and a kind where they differ,
    and both pooled codes ("distinguished"); tse.sim.mutate then runs the mutant on frames
    that put that sum into that lane (targeted_frames), which kills it unless the excite
    MAC masks the code, and then on a parameter set that carries that pooled code alone to
    a gate (tse.sim.targeted_params.pooled);
  - anything else (another output differs, no verdict in time): "not proven", and the
    campaign goes on to the activation proof.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from tse.rtl.pipeline import MEAN_UNIT

from . import unit_check
from .netlist import MutationError

_REGION = re.compile(rf"^\$flatten\\(?P<path>(?:[^.\\]+\.\\?)*?){MEAN_UNIT}(?P<lane>\d+)\.")
TOP = "tse_mean_check"
SUM, KIND = "tse_sum", "tse_kind"
GOLD, GATE = "tse_gold", "tse_gate"
CODE_CHECK = "codes_equal"
"""Label of the wrapper's assertion on the codes (the one whose failure names a sum)."""


def lane_of(mutation: dict) -> tuple[str, int] | None:
    """(cell-name prefix of its mean unit, lane) when the mutation's cell lies in a mean
    unit, else None."""
    m = _REGION.match(mutation["cell"])
    if m is None:
        return None
    return m.group(0), int(m.group("lane"))


def _esc(name: str) -> str:
    return f"\\{name} "


def wrapper(ports, lane: int, p, depth: int) -> tuple[str, list[str]]:
    """The check's top: the miter's inputs, assumptions on the sum (and kind) of a valid
    input, the codes compared `depth` cycles later; (Verilog, the region's free inputs:
    neither the sums' word, the kind nor the clock)."""
    sb, svb = p.sum_bits, p.sum_value_bits
    decl, conns, pairs = [], [], {}     # pairs: output -> {"gold": local, "gate": local}
    kinds = sorted({int(k) for k in p.tile_kinds.flat})
    counts = p.ip.tile_counts
    word = kind = clk = code = None
    free = []
    for direction, name, width in ports:
        if direction == "input":
            local = f"i{len(decl)}"
            decl.append(f"  input wire [{width - 1}:0] {local};")
            conns.append(f"    .{_esc(name)}({local})")
            bare = name[3:]          # in_<region port>
            if bare.endswith(".a_word"):
                word = (local, width)
            elif bare.endswith("kind") and width == 2:
                kind = local
            elif bare in ("clk", "aclk") or bare.endswith(".clk"):
                clk = local
            else:
                free.append(bare)
        elif name != "trigger":
            local = f"o{sum(map(len, pairs.values()))}"
            decl.append(f"  wire [{width - 1}:0] {local};")
            conns.append(f"    .{_esc(name)}({local})")
            side, bare = name.split("_", 1)
            pairs.setdefault(bare, {})[side] = local
            if "code" in bare and width == 8:
                code = bare
    if word is None or clk is None or code is None or \
            any(set(v) != {"gold", "gate"} for v in pairs.values()):
        raise MutationError(f"mean unit {lane}: ports {[n for _, n, _ in ports]} are not a "
                            "sums word, a clock and the codes")
    if word[1] < (lane + 1) * sb and not (word[1] >= svb and lane == 0):
        raise MutationError(f"mean unit {lane}: the sums word has {word[1]} bits")
    lo_hi = []
    for k in kinds:
        n = int(counts[k])
        lo, hi = -p.zx * n, (255 - p.zx) * n
        cond = f"s >= {lo} && s <= {hi}"
        lo_hi.append(f"({kind} == 2'd{k} && {cond})" if kind is not None else f"({cond})")
    ins = [d.split()[-1].rstrip(";") for d in decl if "input" in d]
    base = lane * sb if word[1] >= (lane + 1) * sb else 0
    return "\n".join([
        f"module {TOP}(v, {', '.join(ins)});",
        "  input wire v;",
        *decl,
        f"  wire signed [{svb - 1}:0] s = {word[0]}[{base + svb - 1}:{base}];",
        f"  wire signed [{svb - 1}:0] {SUM} = s;",
        f"  wire [1:0] {KIND} = {kind if kind is not None else str(kinds[0])};",
        f"  reg [{depth - 1}:0] vv = 0;",
        f"  always @(posedge {clk}) vv <= {{vv[{depth - 2 if depth > 1 else 0}:0], v}};"
        if depth > 1 else f"  always @(posedge {clk}) vv <= v;",
        f"  {unit_check.MITER} miter (\n" + ",\n".join(conns) + "\n  );",
        f"  wire [7:0] {GOLD} = {pairs[code]['gold']};",
        f"  wire [7:0] {GATE} = {pairs[code]['gate']};",
        "  always @* begin",
        f"    if (v) assume({' || '.join(lo_hi)});",
        f"    if (vv[{depth - 1}]) {CODE_CHECK}: assert({pairs[code]['gold']} == "
        f"{pairs[code]['gate']});",
        # the region's other outputs (logic merged with what the rest of the unit uses):
        # equal in every cycle, or the mutant reaches beyond the mean unit
        *[f"    assert({v['gold']} == {v['gate']});" for k, v in pairs.items() if k != code],
        "  end",
        "endmodule", ""]), free


def check(flat: Path, mutation: dict, p, depth: int, workdir, *,
          timeout: float = unit_check.TIMEOUT_S) -> dict:
    """The mean-unit check of `mutation` (module docstring) on the flat unit `flat`
    (netlist.flat_rtlil); p: the unit's plan. {"result": "equivalent" | "distinguished" |
    "not proven", "lane", "sum", "kind", "gold", "gate" (the two pooled codes), "note",
    "seconds"}."""
    t0 = time.monotonic()
    where = lane_of(mutation)
    if where is None:
        raise MutationError(f"{mutation['cell']}: not a mean unit's cell")
    prefix, lane = where
    workdir = Path(workdir)
    region = unit_check.cut(flat, mutation, prefix, workdir)
    text, free = wrapper(region, lane, p, depth)
    # (the base case's first input, at step 0, reaches no assertion within depth + 1)
    status, label, step = unit_check.prove(workdir, text, TOP, depth + 2, timeout)
    secs = round(time.monotonic() - t0, 1)
    base = {"lane": lane, "seconds": secs, "free_inputs": free}
    if status == "pass":
        return dict(base, result="equivalent",
                    note=f"mean unit {lane} alone: the same code for every sum it can see "
                         f"(k-induction, depth {depth + 2})")
    if status == "fail" and CODE_CHECK in label:
        seen = unit_check.values_at(unit_check.trace(workdir), step - depth,
                                    {SUM: True, KIND: False})
        if SUM not in seen:
            raise MutationError(f"{unit_check.trace(workdir)}: no {SUM} in the trace")
        s, k = seen[SUM], seen.get(KIND, 0)
        codes = unit_check.values_at(unit_check.trace(workdir), step, {GOLD: False, GATE: False})
        return dict(base, result="distinguished", sum=s, kind=k,
                    gold=codes.get(GOLD), gate=codes.get(GATE),
                    note=f"mean unit {lane}: the tile sum {s} (kind {k}) gives pooled code "
                         f"{codes.get(GATE)}, not {codes.get(GOLD)}")
    why = unit_check.why_open(status, timeout)
    return dict(base, result="not proven", note=f"mean unit {lane}: {why}")
