"""One pure-function unit of the flat netlist, cut out with a mutant beside it (tse mutate).

The machinery the unit checks share (tse.sim.mean_check: a lane's mean unit;
tse.sim.requant_check: the excite MAC's requantizer): each is a submodule whose code is a
function of its last inputs, so whether a mutant of it can change that code is decidable on
the unit alone, given what its inputs can be.
  - cut(): the submodule's cells in the flat netlist (their names carry its path), with the
    cells optimization passes made of theirs between two of them ($auto$..., or their
    inputs would be free), go into a module of their own (Yosys `submod`); a copy gets the
    mutation and `miter -equiv` pairs the two;
  - prove(): a wrapper (the caller's Verilog: assumptions on the inputs, assertions on the
    outputs) under SymbiYosys k-induction; the verdict and, on a failed assertion, its step;
  - values_at(): what the wrapper's named wires held at a step of the failing trace.
The region's inputs are the flat netlist's nets; port_map() names them by the submodule's
ports (the flat netlist keeps each port as an alias of the net it was wired to).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from tse.rtl.formal_flow import sby

from .netlist import FLAT_RTLIL, MutationError, yosys

REGION_STEPS = 4
"""Rounds of adding optimizer-made cells between the unit's own (module docstring)."""
GOLD, GATE, MITER = "tse_unit_gold", "tse_unit_gate", "tse_unit_miter"
TIMEOUT_S = 120.0
_FAIL_STEP = re.compile(r"summary:\s+failed assertion (\S+) at \S+ step (\d+)")

SBY = """[options]
mode prove
depth {depth}

[engines]
smtbmc yices

[script]
read_rtlil miter.il
read_verilog -formal check.sv
prep -top {top}

[files]
miter.il
check.sv
"""


def module_of(mutation: dict) -> str:
    m = re.search(r"-module (\S+)", mutation["command"])
    if m is None:
        raise MutationError(f"{mutation['command']}: no -module")
    return m.group(1)


def cut(flat: Path, mutation: dict, prefix: str, workdir: Path) -> list[tuple[str, str, int]]:
    """The cells whose names start with `prefix` (and the optimizer's between them) as GOLD,
    a mutated copy GATE, their miter MITER written to workdir/miter.il; returns the miter's
    ports, (direction, name, width): in_<net> inputs, gold_<net> / gate_<net> outputs."""
    workdir.mkdir(parents=True, exist_ok=True)
    command = mutation["command"].replace(f"-module {module_of(mutation)}", f"-module {GATE}")
    grow = "select -set r @r @r %co2 @a %i @r %ci2 %i %u\n" * REGION_STEPS
    select = "c:" + prefix.replace("\\", "\\\\") + "*"
    shutil.copyfile(flat, workdir / FLAT_RTLIL)
    yosys(f"read_rtlil {FLAT_RTLIL}\n"
          f"select -set r {select}\nselect -set a c:$auto$*\n{grow}"
          f"submod -name {GOLD} @r\n"
          f"copy {GOLD} {GATE}\n"
          f"{command}\n"
          f"miter -equiv -flatten -make_outputs -ignore_gold_x {GOLD} {GATE} {MITER}\n"
          f"hierarchy -top {MITER}\n"
          f"write_rtlil miter.il\n", workdir)
    return ports((workdir / "miter.il").read_text(), MITER)


def ports(il: str, module: str) -> list[tuple[str, str, int]]:
    """(direction, name, width) of `module`'s ports in RTLIL text."""
    body = il[il.index(f"module \\{module}\n"):]
    body = body[:body.index("\nend\n")]
    out = []
    for m in re.finditer(r"^  wire (?:width (\d+) )?(input|output) \d+ \\(\S+)$", body, re.M):
        out.append((m.group(2), m.group(3), int(m.group(1) or 1)))
    return out


_CONNECT = re.compile(r"^  connect \\(\S+) \\(\S+)(?: \[(\d+)(?::(\d+))?\])?$", re.M)


def port_map(flat: Path, path: str) -> dict[str, tuple[str, int | None, int | None]]:
    """The submodule `path`'s ports (its flat name, e.g. excite_mac.requantizer) as the nets
    they were wired to: {port: (net, msb, lsb)}, (net, None, None) for the whole net; from
    the flat netlist's aliases (a port wired to a constant or a concatenation is left out)."""
    out = {}
    for m in _CONNECT.finditer(Path(flat).read_text()):
        alias, net, hi, lo = m.groups()
        if alias.startswith(path + ".") and "." not in alias[len(path) + 1:]:
            msb = None if hi is None else int(hi)
            out[alias[len(path) + 1:]] = (net, msb, msb if lo is None else int(lo))
    return out


def prove(workdir: Path, text: str, top: str, depth: int, timeout: float = TIMEOUT_S
          ) -> tuple[str, str | None, int | None]:
    """Run the wrapper `text` (module `top`, around MITER) at k-induction depth `depth`:
    ("pass" | "fail" | "timeout" | "open", the failed assertion's label, its step)."""
    (workdir / "check.sv").write_text(text)
    (workdir / "check.sby").write_text(SBY.format(depth=depth, top=top))
    log = sby(workdir, "check", timeout)
    if log is None:
        return "timeout", None, None
    if "DONE (PASS" in log:
        return "pass", None, None
    failed = _FAIL_STEP.search(log)
    if "DONE (FAIL" in log and failed:
        return "fail", failed[1], int(failed[2])
    return "open", None, None


def why_open(status: str, timeout: float) -> str:
    """Why prove()'s `status` decides nothing about the code (a "not proven" verdict)."""
    return {"fail": "an output of the region other than the code differs",
            "timeout": f"no verdict in {timeout:g} s"}.get(status, "induction does not close")


def trace(workdir: Path) -> Path:
    return workdir / "check" / "engine_0" / "trace.vcd"


def values_at(vcd: Path, step: int, names: dict[str, bool]) -> dict[str, int]:
    """The values of the wrapper's wires `names` ({name: signed}) at `step` of a SymbiYosys
    VCD trace (10 time units a step; x read as 0)."""
    text = vcd.read_text()
    ids = {}
    for m in re.finditer(r"\$var \S+ (\d+) (\S+) (\S+)(?: \[[^\]]*\])? \$end", text):
        if m.group(3) in names and m.group(3) not in [v[0] for v in ids.values()]:
            ids[m.group(2)] = (m.group(3), int(m.group(1)))
    values, t = {}, 0
    for line in text.splitlines():
        if line.startswith("#"):
            t = int(line[1:])
            if t > 10 * step:
                break
        elif line.startswith("b"):
            bits, ident = line[1:].split()
            if ident in ids:
                name, width = ids[ident]
                v = int(bits.replace("x", "0"), 2)
                values[name] = v - (1 << width) if names[name] and v >> (width - 1) else v
        elif line[:1] in "01" and line[1:] in ids:
            values[ids[line[1:]][0]] = int(line[0])
    return values
