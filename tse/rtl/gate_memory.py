"""GateMemory: the banks of gates between the excite MAC and the tile broadcaster
(tse.ref_model.streaming.GateMemory, and the strip of gates the model's excite_mac holds while
it waits to write them).

Strip s is written to bank s % 3. The model has two banks (strip s is written once the
broadcaster has released strip s - 2) and its excite MAC keeps a finished strip's gates until
then, so it can excite strip s while s - 1 waits and s - 2 is read; the third bank is that
held strip, which lets the RTL write gates as it computes them and still keep the model's
timing (a two-bank unit stalls after a short last strip of a frame).

Storage: 3 * tiles_x * C/P words of P gates (gate_bits each); word
(bank * tiles_x + tile) * C/P + group holds channel group `group` of tile column `tile`.
Written one gate per cycle (a lane-enabled write), read one word per cycle by its address
r_addr (the P gates of one beat; the broadcaster steps the address with its position, so no
arithmetic sits between its registers and the read): a synchronous
read (block RAM with its output register), enabled by r_en; the word of the address given in
cycle t is r_data from cycle t + 1 and held while r_en is low. The read is not transparent:
a write to the word in the same cycle is seen by the next read only. The broadcaster reads
a beat's gates in the cycle it pops the beat, so a strip's gates are all read by the end of
the cycle that releases its bank, before the excite MAC can write the bank again.

Bank state: `full[b]` is set when the MAC commits a strip to bank b (all its gates written)
and cleared when the broadcaster releases it (the strip's last beat popped). The broadcaster
reads only a full bank; the MAC commits strip s only when bank (s + 1) % 3 (strip s - 2) is
`free`: not full, or released in this cycle (the model's broadcaster releases a bank and its
excite MAC writes into it in the same cycle).
"""
from __future__ import annotations

from amaranth import Cat, Module, Signal
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from . import arith
from .params import RtlParams, field
from .strip_buffer import NO_RW_CHECK

BANKS = 3


class GateMemory(wiring.Component):
    """Three banks of tiles_x x C gates with full flags (see the module docstring)."""

    def __init__(self, p: RtlParams):
        self.p = p
        super().__init__({
            # write side: the excite MAC, one gate a cycle
            "w_en": In(1), "w_bank": In(2), "w_tile": In(field(p.tx)),
            "w_group": In(field(p.G)), "w_lane": In(field(p.P)), "w_data": In(p.gate_bits),
            "commit": In(1), "commit_bank": In(2),
            # read side: the tile broadcaster, one beat's P gates a cycle
            "r_en": In(1), "r_addr": In(range(BANKS * p.tx * p.G)),
            "r_data": Out(data.ArrayLayout(p.gate_bits, p.P)),
            "release": In(1), "release_bank": In(2),
            "full": Out(BANKS),
            "free": Out(BANKS),      # not full, or released in this very cycle
        })

    def elaborate(self, platform):
        p = self.p
        m = Module()
        mem = m.submodules.gates = memory.Memory(
            shape=data.ArrayLayout(p.gate_bits, p.P), depth=BANKS * p.tx * p.G, init=[],
            attrs=NO_RW_CHECK)     # the MAC writes a bank the broadcaster does not read
        wr = mem.write_port(granularity=1)
        # the first word of (bank, tile) from a table, not (bank * tx + tile) * G: Yosys
        # maps that product onto a MULT18X18D, the slowest cell on the write path
        tiles = 1 << len(self.w_tile)
        word0 = [(b * p.tx + t) * p.G if b < BANKS and t < p.tx else 0
                 for b in range(4) for t in range(tiles)]
        rd = mem.read_port(domain="sync")
        m.d.comb += [
            wr.addr.eq(arith.const_table(word0, Cat(self.w_tile, self.w_bank)) + self.w_group),
            wr.en.eq(Cat(self.w_en & (self.w_lane == lane) for lane in range(p.P))),
            rd.en.eq(self.r_en),
            rd.addr.eq(self.r_addr),
            self.r_data.eq(rd.data),
            # every lane gets the gate (the lane enable picks one); driven whole with one
            # Cat, not lane by lane (Icarus's .concat8 trees, see params.whole)
            wr.data.eq(Cat(*[self.w_data] * p.P)),
        ]

        full = Signal(BANKS)
        m.d.comb += self.full.eq(full)
        m.d.comb += self.free.eq(Cat(~full[b] | (self.release & (self.release_bank == b))
                                     for b in range(BANKS)))
        for b in range(BANKS):
            with m.If(self.commit & (self.commit_bank == b)):
                m.d.sync += full[b].eq(1)
            with m.If(self.release & (self.release_bank == b)):
                m.d.sync += full[b].eq(0)
        return m
