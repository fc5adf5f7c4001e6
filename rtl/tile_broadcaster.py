"""tile_broadcaster: the output stage of the TSE unit (ref_model.streaming.tile_broadcaster).

Owns the output side's position counters (it regenerates TLAST from them), the reading of
the gate memory and the P lane multipliers. It pops a beat from the strip buffer once the
gates of the beat's strip are in the gate memory (bank strip number mod 3 is full),
reads the P gates of the beat's tile and channel group, multiplies and requantizes each lane
(numerics.scale) into the output register, and releases the bank after the strip's last
beat. The output register follows AXI4-Stream: it holds its beat until m_axis_tready, and a
new beat is popped in the same cycle the old one leaves, so backpressure neither loses nor
duplicates a beat and an unstalled output moves one beat per clock.
"""
from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from . import arith
from .params import RtlParams, advance_raster, beat_layout, field, whole


class TileBroadcaster(wiring.Component):
    """Strip-buffer beats x gates -> output beats (see the module docstring)."""

    def __init__(self, p: RtlParams):
        self.p = p
        super().__init__({
            "i_beat": In(stream.Signature(p.beat_bits)),
            "o_beat": Out(stream.Signature(beat_layout(p))),
            "gate_bank": Out(2), "gate_tile": Out(field(p.tx)), "gate_group": Out(field(p.G)),
            "gate_data": In(data.ArrayLayout(p.gate_bits, p.P)),
            "bank_full": In(3),
            "release": Out(1), "release_bank": Out(2),
        })

    def elaborate(self, platform):
        p = self.p
        m = Module()
        grp, col, tcol, tile = (Signal(field(p.G)), Signal(field(p.W)), Signal(field(p.tw)),
                                Signal(field(p.tx)))
        row, rin = Signal(field(p.H)), Signal(field(p.th))
        bank = Signal(2)                    # gate bank of the current strip: strip mod 3
        last_row = (rin == p.th - 1) | (row == p.H - 1)
        strip_end = last_row & (col == p.W - 1) & (grp == p.G - 1)
        frame_last = (row == p.H - 1) & (col == p.W - 1) & (grp == p.G - 1)

        o_valid, o_data, o_last = Signal(), Signal(p.beat_bits), Signal()
        ready_gates = Array(self.bank_full[b] for b in range(3))[bank]
        can_pop = ready_gates & (~o_valid | self.o_beat.ready)
        pop = can_pop & self.i_beat.valid
        m.d.comb += [
            self.i_beat.ready.eq(can_pop),
            self.gate_bank.eq(bank), self.gate_tile.eq(tile), self.gate_group.eq(grp),
            self.o_beat.valid.eq(o_valid),
            self.o_beat.payload.eq(whole(beat_layout(p), data=o_data, last=o_last)),
            self.release.eq(pop & strip_end), self.release_bank.eq(bank),
        ]
        lanes = Cat(*[arith.scale(m, self.i_beat.payload[8 * i:8 * i + 8], self.gate_data[i], p)
                      for i in range(p.P)])
        with m.If(pop):
            m.d.sync += [o_valid.eq(1), o_data.eq(lanes), o_last.eq(frame_last)]
            advance_raster(m, p, grp, col, tcol, tile, row, rin)
            with m.If(strip_end):
                m.d.sync += bank.eq(Mux(bank == 2, 0, bank + 1))
        with m.Elif(self.o_beat.ready):
            m.d.sync += o_valid.eq(0)
        return m
