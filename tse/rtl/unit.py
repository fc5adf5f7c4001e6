"""TSEUnit: the top level; wires the input slice, the stages, the strip buffer and gate memory.

    s_axis --> SliceChain --> line_accumulator --(finished sums)--> excite_mac --(gates)-->
                                      |                                              GateMemory
                                      |                                                   |
                                      +--> StripBuffer (FIFO) --------> tile_broadcaster --> m_axis

Ports are flat, plain names, so the exported Verilog drops into a standard streaming flow.
With axi=True (tse.rtl.export's top) the clock and reset are ports `aclk` and `aresetn` (active
low, synchronous) that drive the unit's own sync domain; otherwise they are Amaranth's default
domain's clk and rst (active high, synchronous), which the Amaranth simulator drives. Then
s_axis_tdata[8P-1:0], s_axis_tvalid, s_axis_tready, s_axis_tlast (lane 0 in the least
significant bits); m_axis_tdata, m_axis_tvalid, m_axis_tready, m_axis_tlast; error (sticky
until reset: a TLAST in the wrong place); and, with probes=True only, debug probes:
probe_gate_valid / _tile / _channel / _data (one pulse per gate written to the gate memory;
tile is the tile's index in its frame, raster order) and probe_strip_level (beats accepted
and not yet popped by the broadcaster: the strip buffer plus the line accumulator's stage
register, i.e. the streaming model's strip-buffer occupancy).
"""
from __future__ import annotations

from amaranth import ClockDomain, Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from tse.ref_model import plan
from tse.ref_model.config import TSEConfig

from .eca_excite import EcaExcite
from .excite3x1 import Excite3x1
from .excite_mac import ExciteMac
from .gate_memory import GateMemory
from .line_accumulator import LineAccumulator
from .params import RtlParams, beat_layout, field, rtl_params, whole
from .register_slice import SliceChain
from .srm_excite import SrmExcite
from .strip_buffer import StripBuffer
from .tile_broadcaster import TileBroadcaster


class TSEUnit(wiring.Component):
    """The TSE unit for one configuration and its integer parameters."""

    def __init__(self, cfg: TSEConfig, ip, *, probes: bool = True, axi: bool = False):
        p = self.p = ip if isinstance(ip, RtlParams) else rtl_params(cfg, ip)
        # the excite stage by cfg.block: SE's excite MAC, ECA's (p an EcaUnitPlan) or SRM's
        # (p an SrmUnitPlan)
        self.excite = {"eca": EcaExcite, "srm": SrmExcite}.get(cfg.block, ExciteMac)
        if cfg.block == "se" and cfg.excite_kernel == "3x1":   # p an Excite3x1UnitPlan
            self.excite = Excite3x1
        self.probes, self.axi = probes, axi
        clock = {"aclk": In(1), "aresetn": In(1)} if axi else {}
        probe_ports = {
            "probe_gate_valid": Out(1), "probe_gate_tile": Out(field(p.tx * p.ty)),
            "probe_gate_channel": Out(field(p.C)), "probe_gate_data": Out(8),
            "probe_strip_level": Out(range(p.depth + 2)),
        } if probes else {}
        super().__init__({
            **clock,
            "s_axis_tdata": In(p.beat_bits), "s_axis_tvalid": In(1),
            "s_axis_tready": Out(1), "s_axis_tlast": In(1),
            "m_axis_tdata": Out(p.beat_bits), "m_axis_tvalid": Out(1),
            "m_axis_tready": In(1), "m_axis_tlast": Out(1),
            "error": Out(1),
            **probe_ports,
        })

    def elaborate(self, platform):
        p = self.p
        m = Module()
        if self.axi:
            # a local sync domain: every stage's sync logic follows aclk, reset by ~aresetn
            m.domains.sync = cd = ClockDomain("sync", local=True)
            m.d.comb += [cd.clk.eq(self.aclk), cd.rst.eq(~self.aresetn)]
        # the input port reaches registers only, and the line accumulator's ready a slice
        # near it (tse/rtl/register_slice.py and plan.INPUT_SLICE_STAGES say why)
        inp = m.submodules.input_slice = SliceChain(beat_layout(p), plan.INPUT_SLICE_STAGES)
        acc = m.submodules.line_accumulator = LineAccumulator(p)
        buf = m.submodules.strip_buffer = StripBuffer(p)
        mac = m.submodules[{EcaExcite: "eca_excite", SrmExcite: "srm_excite",
                            Excite3x1: "excite3x1"}.get(
            self.excite, "excite_mac")] = self.excite(p)
        gates = m.submodules.gate_memory = GateMemory(p)
        bc = m.submodules.tile_broadcaster = TileBroadcaster(p)

        wiring.connect(m, inp.o, acc.i_beat)
        wiring.connect(m, acc.o_beat, buf.i_beat)
        wiring.connect(m, acc.o_sums, mac.i_sums)
        m.d.comb += [acc.o_beat_ready_next.eq(buf.ready_next),
                     acc.o_sums_ready_next.eq(mac.i_sums_ready_next)]
        wiring.connect(m, buf.o_beat, bc.i_beat)
        m.d.comb += [
            inp.i.payload.eq(whole(beat_layout(p), data=self.s_axis_tdata,
                                   last=self.s_axis_tlast)),
            inp.i.valid.eq(self.s_axis_tvalid),
            self.s_axis_tready.eq(inp.i.ready),
            self.m_axis_tdata.eq(bc.o_beat.payload.data),
            self.m_axis_tlast.eq(bc.o_beat.payload.last),
            self.m_axis_tvalid.eq(bc.o_beat.valid),
            bc.o_beat.ready.eq(self.m_axis_tready),
            self.error.eq(acc.error),
            # excite MAC -> gate memory
            gates.w_en.eq(mac.w_en), gates.w_bank.eq(mac.w_bank), gates.w_tile.eq(mac.w_tile),
            gates.w_group.eq(mac.w_group), gates.w_lane.eq(mac.w_lane),
            gates.w_data.eq(mac.w_data),
            gates.commit.eq(mac.commit), gates.commit_bank.eq(mac.commit_bank),
            mac.bank_free.eq(gates.free),
            # gate memory -> tile broadcaster
            gates.r_en.eq(bc.gate_en),
            gates.r_addr.eq(bc.gate_addr), bc.gate_data.eq(gates.r_data),
            bc.bank_full.eq(gates.full),
            gates.release.eq(bc.release), gates.release_bank.eq(bc.release_bank),
        ]
        if not self.probes:
            return m
        m.d.comb += [
            # probes: gates in 8-bit units (the table's codes), as the model's gate stage
            self.probe_gate_valid.eq(mac.w_en),
            self.probe_gate_tile.eq(mac.w_frame_tile),
            self.probe_gate_channel.eq(mac.w_channel),
            self.probe_gate_data.eq(mac.w_data << (8 - p.gate_bits)),
            self.probe_strip_level.eq(buf.level + acc.holding),
        ]
        return m
