"""A surviving mutant of the excite MAC's requantizer, checked alone, and the parameter set
that shows it (tse mutate).

The requantizer (tse/rtl/pipeline.requantizer, a submodule) is a pure function of an
accumulator, the multiplier M and the shift of its layer's ROM word, and the layer: acc x M
in limbs, the rounding shift with its half and sticky bits, the zero point and the clamp,
over `depth` registers. With one parameter set the unit's requantizer sees a few words and
a few accumulators, so a mutant of a limb product, a bit of the shifter or a term of the
sticky decoder often changes nothing the testbench can see; with other ROM contents it may.
The check (tse.sim.unit_check's cut, miter and proof) asks it of every word the unit could
be given: a wrapper assumes an accumulator in its layer's register range, a shift no larger
than the unit's largest (the Verilog's shifter width; M may be any value of its field), the
layer it announces MUL_STAGES cycles later, and asserts the codes equal `depth` cycles on.
  - proved: no ROM contents the unit can hold make the mutant's code differ: "equivalent";
  - the codes differ: the trace gives (layer, acc, M, shift) and both codes
    ("distinguished"). tse.sim.targeted_params.requantizer then builds a parameter set
    that carries those operands into one neuron and its codes to a gate, and tse.sim.mutate
    runs the mutant on it (the same Verilator model: ROMs load at run time);
  - anything else: "not proven", and the campaign goes on to the activation proof.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

from tse.rtl.pipeline import MUL_STAGES, REQUANT_STAGES, REQUANTIZER

from . import unit_check
from .netlist import MutationError

_REGION = re.compile(rf"^\$flatten\\(?P<path>(?:[^.\\]+\.\\?)*?){REQUANTIZER}\.")
TOP = "tse_rq_check"
DEPTH = MUL_STAGES + REQUANT_STAGES
"""Registers from the requantizer's operands to its code."""
CODE_CHECK = "codes_equal"
WITNESS = {"tse_acc": True, "tse_mult": False, "tse_shift": False, "tse_layer": False,
           "tse_gold": False, "tse_gate": False}
"""The wrapper's wires a failing trace is read at ({name: signed})."""
PORTS = ("acc", "mult", "shift", "layer")


def region_of(mutation: dict) -> tuple[str, str] | None:
    """(cell-name prefix of the requantizer, its flat path, e.g. excite_mac.requantizer) when
    the mutation's cell lies in it, else None."""
    m = _REGION.match(mutation["cell"])
    if m is None:
        return None
    return m.group(0), (m.group("path").replace("\\", "") + REQUANTIZER)


def limits(p) -> dict:
    """What the requantizer can be handed in the unit of plan p (an SE unit plan): each
    layer's accumulator range, the largest shift."""
    return {"ranges": (p.acc_range(0), p.acc_range(1)), "max_shift": p.max_shift}


def _lit(v: int, width: int) -> str:
    return f"-{width}'sd{-v}" if v < 0 else f"{width}'sd{v}"


def wrapper(region, pmap: dict, lim: dict) -> tuple[str, list[str]]:
    """The check's top (module docstring): (Verilog, the region's free inputs)."""
    decl, conns, pairs, by_net = [], [], {}, {}
    clk, free = None, []
    for direction, name, width in region:
        if direction == "input":
            local = f"i{len(decl)}"
            decl.append(f"  input wire [{width - 1}:0] {local};")
            conns.append(f"    .\\{name} ({local})")
            bare = name[3:]
            by_net[bare] = local
            if bare in ("clk", "aclk") or bare.endswith(".clk"):
                clk = local
        elif name != "trigger":
            local = f"o{sum(map(len, pairs.values()))}"
            decl.append(f"  wire [{width - 1}:0] {local};")
            conns.append(f"    .\\{name} ({local})")
            side, bare = name.split("_", 1)
            pairs.setdefault(bare, {})[side] = local
    code = next((k for k in pairs if k.endswith("code")), None)
    if clk is None or code is None or any(p not in pmap or pmap[p][0] not in by_net
                                          for p in PORTS):
        raise MutationError(f"requantizer: ports {[n for _, n, _ in region]} are not its "
                            f"operands ({', '.join(PORTS)}), a clock and a code")
    expr, used = {}, set()
    for port in PORTS:
        net, msb, lsb = pmap[port]
        used.add(net)
        expr[port] = by_net[net] + ("" if msb is None else f"[{msb}:{lsb}]")
    free = [n for n, local in by_net.items() if n not in used and local != clk]
    acc_w = next(w for d, n, w in region if n == f"in_{pmap['acc'][0]}") \
        if pmap["acc"][1] is None else pmap["acc"][1] - pmap["acc"][2] + 1
    (lo1, hi1), (lo2, hi2) = lim["ranges"]

    def within(lo, hi):
        return f"tse_acc >= {_lit(lo, acc_w)} && tse_acc <= {_lit(hi, acc_w)}"

    ins = [d.split()[-1].rstrip(";") for d in decl if "input" in d]
    return "\n".join([
        f"module {TOP}(v, l, {', '.join(ins)});",
        "  input wire v, l;",
        *decl,
        f"  wire signed [{acc_w - 1}:0] tse_acc = {expr['acc']};",
        f"  wire [63:0] tse_mult = {expr['mult']};",
        f"  wire [15:0] tse_shift = {expr['shift']};",
        "  wire tse_layer = l;",
        f"  wire [7:0] tse_gold = {pairs[code]['gold']}, tse_gate = {pairs[code]['gate']};",
        f"  reg [{DEPTH - 1}:0] vv = 0;",
        f"  reg [{MUL_STAGES - 1}:0] ll = 0;",
        f"  always @(posedge {clk}) begin",
        f"    vv <= {{vv[{DEPTH - 2}:0], v}};",
        f"    ll <= {{ll[{MUL_STAGES - 2}:0], l}};" if MUL_STAGES > 1 else "    ll <= l;",
        "  end",
        f"  {unit_check.MITER} miter (\n" + ",\n".join(conns) + "\n  );",
        "  always @* begin",
        f"    if (v) assume(tse_shift <= {lim['max_shift']} && "
        f"(l ? ({within(lo2, hi2)}) : ({within(lo1, hi1)})));",
        f"    if (vv[{MUL_STAGES - 1}]) assume({expr['layer']} == ll[{MUL_STAGES - 1}]);",
        f"    if (vv[{DEPTH - 1}]) {CODE_CHECK}: assert(tse_gold == tse_gate);",
        *[f"    assert({v['gold']} == {v['gate']});" for k, v in pairs.items() if k != code],
        "  end",
        "endmodule", ""]), free


def check(flat: Path, mutation: dict, p, workdir, *,
          timeout: float = unit_check.TIMEOUT_S) -> dict:
    """The requantizer check of `mutation` (module docstring) on the flat unit `flat`
    (netlist.flat_rtlil); p: the unit's plan. {"result": "equivalent" | "distinguished" |
    "not proven", "note", "seconds", "free_inputs"}, and with "distinguished" "layer"
    (0: fc1, 1: fc2), "acc", "mult", "shift", "gold" and "gate" (the two codes)."""
    t0 = time.monotonic()
    where = region_of(mutation)
    if where is None:
        raise MutationError(f"{mutation['cell']}: not a requantizer's cell")
    prefix, path = where
    workdir = Path(workdir)
    region = unit_check.cut(flat, mutation, prefix, workdir)
    try:
        text, free = wrapper(region, unit_check.port_map(flat, path), limits(p))
    except MutationError as e:
        return {"result": "not proven", "note": str(e), "free_inputs": [],
                "seconds": round(time.monotonic() - t0, 1)}
    status, label, step = unit_check.prove(workdir, text, TOP, DEPTH + 2, timeout)
    base = {"seconds": round(time.monotonic() - t0, 1), "free_inputs": free}
    if status == "pass":
        return dict(base, result="equivalent",
                    note="the requantizer alone: the same code for every accumulator, "
                         f"multiplier and shift it can be given (k-induction, depth {DEPTH + 2})")
    if status == "fail" and CODE_CHECK in label:
        trace = unit_check.trace(workdir)
        seen = unit_check.values_at(trace, step - DEPTH, WITNESS)
        codes = unit_check.values_at(trace, step, WITNESS)
        if any(k not in seen for k in ("tse_acc", "tse_mult", "tse_shift")):
            raise MutationError(f"{trace}: no operands in the trace")
        hit = {"layer": seen.get("tse_layer", 0), "acc": seen["tse_acc"],
               "mult": seen["tse_mult"], "shift": seen["tse_shift"],
               "gold": codes["tse_gold"], "gate": codes["tse_gate"]}
        return dict(base, result="distinguished", **hit,
                    note=f"requantizer: fc{hit['layer'] + 1}'s acc {hit['acc']} x M "
                         f"{hit['mult']} >> {hit['shift']} gives code {hit['gate']}, not "
                         f"{hit['gold']}")
    why = unit_check.why_open(status, timeout)
    return dict(base, result="not proven", note=f"requantizer: {why}")
