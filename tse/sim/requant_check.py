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
    ("distinguished"). targeted_params() then builds a parameter set where one neuron of
    that layer has all-zero weights, so its accumulator is its bias, set to acc, with M and
    the shift as found; for an fc1 neuron, an fc2 neuron reads it alone with words the model
    shows make the two hidden codes give two excite codes; where the gate table gives
    those (or an fc2 neuron's two codes) one gate, the set's gate table is a step between
    them (its ROM loads at run time like the others). The golden values of that set come from the model;
    tse.sim.mutate runs the mutant on them (the same Verilator model: ROMs load at run time);
  - anything else: "not proven", and the campaign goes on to the activation proof.
"""
from __future__ import annotations

import dataclasses
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


# ---- the parameter set that shows a distinguished mutant -------------------------------------

def _words(ip, layer: int) -> tuple[str, str, str]:
    n = f"hw_fc{layer + 1}_"
    return n + "bias", n + "mult", n + "shift"


def _set_neuron(ip, layer: int, j: int, acc: int, mult: int, shift: int, weights=None):
    """ip with neuron j of `layer` computing acc (its weights zero, or `weights`, and its
    bias acc), M and the shift."""
    import numpy as np

    w = (ip.w1 if layer == 0 else ip.w2).copy()
    w[j] = 0 if weights is None else weights
    fields = {("w1" if layer == 0 else "w2"): w}
    for name, v in zip(_words(ip, layer), (acc, mult, shift)):
        a = np.array(getattr(ip, name), copy=True)
        a[j] = v
        fields[name] = a
    return dataclasses.replace(ip, **fields)


def _spare(ip, layer: int) -> list[int]:
    """Neurons of `layer` whose words can change without changing the unit's widths: none
    holds the largest multiplier's bit length or the largest shift alone."""
    import numpy as np

    from tse.ref_model import roms

    mults = np.concatenate([ip.hw_fc1_mult, ip.hw_fc2_mult])
    shifts = np.concatenate([ip.hw_fc1_shift, ip.hw_fc2_shift])
    off = 0 if layer == 0 else len(ip.hw_fc1_mult)
    out = []
    for j in range(len(getattr(ip, _words(ip, layer)[1]))):
        rest = np.delete(np.arange(len(mults)), off + j)
        if not len(rest):
            continue
        if roms.bits_for(int(mults[rest].max())) == roms.bits_for(int(mults.max())) and \
                shifts[rest].max() == shifts.max():
            out.append(j)
    return out


def _excite(ip, hidden):
    """The model's excite codes [C] of one tile whose hidden codes are `hidden` (after
    fc1's activation)."""
    import numpy as np

    from tse.ref_model import numerics

    excite = np.zeros(ip.w2.shape[0], np.int64)
    numerics.fc2(np.asarray(hidden, np.int64), ip.tables(), numerics.HW, excite)
    return excite


def _gate_apart(ip, e1: int, e2: int):
    """ip when its gate table gives excite codes e1 and e2 two gates; else a copy whose
    table is a step between them (0 up to the smaller, the largest gate above: the gate
    ROM loads at run time like the rest), or None when even that does not."""
    import numpy as np

    def apart(u):
        lut = u.tables().h_lut
        return lut[e1] != lut[e2]

    if e1 == e2:
        return None
    if apart(ip):
        return ip
    step = np.where(np.arange(256) > min(e1, e2), 255, 0).astype(ip.sigmoid_lut.dtype)
    u = dataclasses.replace(ip, sigmoid_lut=step)
    return u if apart(u) else None


def targeted_params(ip, hit: dict):
    """IntParams that show `hit` (a "distinguished" verdict of check()) at the unit's
    outputs (module docstring), or None when the model says no such set of this form does."""
    import numpy as np

    from tse.ref_model import roms

    layer = hit["layer"]
    spare = _spare(ip, layer)
    if not spare:
        return None
    j = spare[0]
    t = _set_neuron(ip, layer, j, hit["acc"], hit["mult"], hit["shift"])
    T = t.tables()
    if layer == 1:
        return _gate_apart(t, hit["gold"], hit["gate"])
    act = (lambda c: int(T.hlut[c])) if T.hact else (lambda c: int(c))
    h, h2 = act(hit["gold"]), act(hit["gate"])
    if h == h2:
        return None
    # an fc2 neuron c reads neuron j alone (weight w): its accumulator is bias + w (h - zh)
    # << frac; M at its field's top, the shift and bias chosen so h lands mid-range
    mb = roms.mult_bits(ip)
    frac = ip.hw.bias_frac_bits
    lo, hi = roms.acc_range(ip.hw, 1)
    zh, ze = int(T.zh), int(T.ze)
    top = (1 << mb) - 1
    max_shift = roms.max_shift(ip)
    hid = np.full(ip.w1.shape[0], zh, np.int64)
    a, b = hid.copy(), hid.copy()
    a[j], b[j] = h, h2
    for c in _spare(ip, 1):
        for w in (127, -128, 64, -64, 1, -1):
            row = np.zeros(ip.w2.shape[1], np.int64)
            row[j] = w
            for s in range(max_shift + 1):
                mid = ((128 - ze) << s) // top - ((w * (h - zh)) << frac)
                u = _set_neuron(t, 1, c, int(np.clip(mid, lo, hi)), top, s, row)
                shown = _gate_apart(u, int(_excite(u, a)[c]), int(_excite(u, b)[c]))
                if shown is not None:
                    return shown
    return None

