"""The cocotb toplevel around the unit: its ports packed into two vectors, and a peak meter.

Each signal a cocotb coroutine reads or writes costs a VPI call of a few microseconds, more
than the simulator spends on a small design's clock cycle, so the testbench touches as few
handles per cycle as it can. `tse_cosim_top` instantiates the unit and packs

    drv  (input)   {s_axis_tdata, s_axis_tlast, s_axis_tvalid, m_axis_tready}
    mon  (output)  {probe_gate_tile, probe_gate_channel, probe_gate_data, m_axis_tdata,
                    probe_gate_valid, error, m_axis_tlast, m_axis_tvalid, s_axis_tready}

(listed most significant first; the toplevel's clk and active-high rst drive the unit's aclk
and aresetn), so one cycle is one read of `mon` and, when the drivers
change something, one write of `drv`. `peak_level` holds the largest probe_strip_level since
the last `peak_clear` pulse (the strip buffer's peak occupancy without a per-cycle read).
Only these ports are public to Verilator (metacomments), so tse/sim/runner.py builds without
--public-flat-rw and Verilator optimizes the unit as it would without cocotb.

The probe widths are the unit plan's (manifest["unit"]["ports"], tse.ref_model.unit_plan), so the
harness follows the RTL without reading its Verilog. A unit exported without probes (the
default, tse.rtl.export) gets constant zeros in their place (Layout.probes false): no gate pulse,
no level; the scoreboard then locates a mismatch from the model's stages instead. For
Icarus the harness also starts yosys's combinational blocks at time zero (time_zero_kick).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

TOP = "tse_cosim_top"

# bit positions in `mon` below the data
S_TREADY, M_TVALID, M_TLAST, ERROR, GATE_VALID = 0, 1, 2, 3, 4
DATA_SHIFT = 5
# bit positions in `drv`
M_TREADY, S_TVALID, S_TLAST = 0, 1, 2
DRV_DATA_SHIFT = 3


@dataclass(frozen=True)
class Layout:
    """Bit layout of `mon` for P lanes and the unit's probe widths."""
    lanes: int
    tile_bits: int
    channel_bits: int
    level_bits: int
    probes: bool = True

    @property
    def data_bits(self) -> int:
        return 8 * self.lanes

    @property
    def gate_shift(self) -> int:
        """Where probe_gate_data starts; channel and tile follow it."""
        return DATA_SHIFT + self.data_bits

    def decode_gate(self, mon: int) -> tuple[int, int, int]:
        """(tile, channel, gate code) of a `mon` word sampled with probe_gate_valid set."""
        v = mon >> self.gate_shift
        return (v >> (8 + self.channel_bits),
                (v >> 8) & ((1 << self.channel_bits) - 1),
                v & 0xFF)

    @classmethod
    def from_ports(cls, ports: dict, probes: bool = True) -> "Layout":
        """From the unit's port widths (the plan's, manifest["unit"]["ports"]); probes:
        whether the unit has the probe_* ports."""
        return cls(lanes=ports["m_axis_tdata"] // 8, tile_bits=ports["probe_gate_tile"],
                   channel_bits=ports["probe_gate_channel"],
                   level_bits=ports["probe_strip_level"], probes=probes)

    def to_dict(self) -> dict:
        return {"lanes": self.lanes, "tile_bits": self.tile_bits,
                "channel_bits": self.channel_bits, "level_bits": self.level_bits,
                "probes": self.probes}


def port_width(verilog_text: str, name: str) -> int:
    """Width of a port declared `input|output [wire|reg] [[hi:lo]] name`; a Verilog file
    without the port is an error (ValueError), never a guessed width."""
    m = re.search(r"\b(?:input|output)\s+(?:wire\s+|reg\s+|logic\s+)?(?:signed\s+)?"
                  r"(?:\[\s*(\d+)\s*:\s*(\d+)\s*\]\s*)?" + re.escape(name) + r"\b", verilog_text)
    if not m:
        raise ValueError(f"port {name}: not declared in the unit's Verilog; a tse_unit has "
                         "it (tse/rtl/unit.py)")
    if m.group(1) is None:
        return 1
    return abs(int(m.group(1)) - int(m.group(2))) + 1


def has_port(verilog_text: str, name: str) -> bool:
    """Whether the Verilog declares a port `name`."""
    try:
        port_width(verilog_text, name)
    except ValueError:
        return False
    return True


def module_name(verilog_path) -> str:
    """The unit's module name: its file's stem (tse.rtl.export writes NAME.v)."""
    return Path(verilog_path).stem


def layout_of(unit_verilog: str, lanes: int) -> Layout:
    """The layout of a unit known only by its Verilog (every probe port must be there)."""
    return Layout(lanes=lanes,
                  tile_bits=port_width(unit_verilog, "probe_gate_tile"),
                  channel_bits=port_width(unit_verilog, "probe_gate_channel"),
                  level_bits=port_width(unit_verilog, "probe_strip_level"))


_MODULE = re.compile(r"^module\s+(\\\S+|\w+)\s*\((.*?)^endmodule", re.M | re.S)
_INSTANCE = re.compile(r"^\s*(\\\S+|\w+)\s+(\\\S+|\w+)\s*\(", re.M)
_TIME_ZERO_REG = re.compile(r"\breg\s+(\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+)\s*=")


def time_zero_kick(unit_verilog: str, instance: str = "dut", top: str = "tse_unit") -> str:
    """Icarus-only Verilog that makes every `always @*` block of yosys output run once.

    yosys's Verilog back end (Amaranth's export) gives each module a dummy
    `reg \\$auto$verilog_backend.cc:N:dump_module$M = 0;` read by every combinational
    `always @*` block, so that a time-zero event evaluates them. Icarus 11 applies
    declaration initializers before any process waits, so no event happens: a block whose
    inputs never change (s_axis_tready of an idle unit) stays X until something moves. Setting
    each dummy reg at time #0 (after every process waits) runs them all once. Verilator
    evaluates everything at start and needs nothing. Returns '' when there is no such reg."""
    modules = {m.group(1): m.group(2) for m in _MODULE.finditer(unit_verilog)}
    paths = []

    def walk(name, path, depth=0):
        body = modules.get(name)
        if body is None or depth > 32:
            return
        paths.extend(f"{path}.{r} " for r in _TIME_ZERO_REG.findall(body))
        for mod, inst in _INSTANCE.findall(body):
            if mod in modules:
                walk(mod, f"{path}.{inst}{' ' if inst.startswith(chr(92)) else ''}",
                     depth + 1)

    walk(top, instance)
    if not paths:
        return ""
    lines = "\n".join(f"        {p}= 1'b1;" for p in paths)
    return ("`ifndef VERILATOR\n"
            "    // Icarus: run every always @* block of the unit once (tse/sim/harness.py)\n"
            f"    initial begin\n        #0;\n{lines}\n    end\n"
            "`endif\n")


def verilog(layout: Layout, kick: str = "", unit: str = "tse_unit") -> str:
    """Verilog text of tse_cosim_top around module `unit` for the layout."""
    p, tb, cb, lb = layout.data_bits, layout.tile_bits, layout.channel_bits, layout.level_bits
    monw = DATA_SHIFT + p + 8 + cb + tb
    if layout.probes:
        probes = (""",
        .probe_gate_valid(gate_valid), .probe_gate_tile(gate_tile),
        .probe_gate_channel(gate_channel), .probe_gate_data(gate_data),
        .probe_strip_level(level)""")
        zeros = ""
    else:
        probes = ""
        zeros = ("    assign gate_valid = 1'b0;\n    assign gate_tile = 0;\n"
                 "    assign gate_channel = 0;\n    assign gate_data = 0;\n"
                 "    assign level = 0;\n")
    return f"""// Generated by tse/sim/harness.py: {unit} with packed ports for cocotb.
module {TOP} (
    input clk /*verilator public_flat_rw*/,
    input rst /*verilator public_flat_rw*/,
    input [{p + DRV_DATA_SHIFT - 1}:0] drv /*verilator public_flat_rw*/,
    input peak_clear /*verilator public_flat_rw*/,
    output [{monw - 1}:0] mon /*verilator public_flat_rw*/,
    output reg [{lb - 1}:0] peak_level /*verilator public_flat_rw*/
);
    wire s_tready, m_tvalid, m_tlast, err, gate_valid;
    wire [{p - 1}:0] m_tdata;
    wire [{tb - 1}:0] gate_tile;
    wire [{cb - 1}:0] gate_channel;
    wire [7:0] gate_data;
    wire [{lb - 1}:0] level;
    initial peak_level = 0;
{zeros}    {unit} dut (
        .aclk(clk), .aresetn(!rst),
        .s_axis_tdata(drv[{p + DRV_DATA_SHIFT - 1}:{DRV_DATA_SHIFT}]),
        .s_axis_tvalid(drv[{S_TVALID}]), .s_axis_tready(s_tready),
        .s_axis_tlast(drv[{S_TLAST}]),
        .m_axis_tdata(m_tdata), .m_axis_tvalid(m_tvalid), .m_axis_tready(drv[{M_TREADY}]),
        .m_axis_tlast(m_tlast),
        .error(err){probes}
    );
    assign mon = {{gate_tile, gate_channel, gate_data, m_tdata,
                  gate_valid, err, m_tlast, m_tvalid, s_tready}};
    always @(posedge clk) begin
        if (peak_clear) peak_level <= 0;
        else if (level > peak_level) peak_level <= level;
    end
{kick}endmodule
"""


def write(out_dir, unit_verilog_path, layout: Layout) -> tuple[Path, Layout]:
    """Write out_dir/tse_cosim_top.v for the unit's Verilog (module: its file's stem) and its
    port layout (the plan's, Layout.from_ports; probes off when the unit has none); return
    its path and layout."""
    from dataclasses import replace

    unit_text = Path(unit_verilog_path).read_text()
    unit = module_name(unit_verilog_path)
    layout = replace(layout, probes=layout.probes and has_port(unit_text, "probe_gate_valid"))
    path = Path(out_dir) / f"{TOP}.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = verilog(layout, time_zero_kick(unit_text, top=unit), unit)
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)        # readers never see half a file
    return path, layout
