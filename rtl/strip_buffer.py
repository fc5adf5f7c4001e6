"""StripBuffer: the FIFO between the line accumulator and the tile broadcaster
(ref_model.streaming.StripBuffer).

It holds every input beat until the gates of its strip are ready: a whole strip plus the
beats that arrive during the excite latency at full throughput (cfg.strip_buffer_depth).
The FIFO is Amaranth's library SyncFIFOBuffered: block-RAM friendly (synchronous reads) with
an output register, `depth` beats in all. Only the P lanes are stored: TLAST is regenerated
by the broadcaster's position counters, so a beat costs 8P bits.
"""
from __future__ import annotations

from amaranth import Module
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from .params import RtlParams


class StripBuffer(wiring.Component):
    """A FIFO of `p.depth` beats of 8P bits; `level` is its occupancy in beats."""

    def __init__(self, p: RtlParams):
        self.p = p
        super().__init__({
            "i_beat": In(stream.Signature(p.beat_bits)),
            "o_beat": Out(stream.Signature(p.beat_bits)),
            "level": Out(range(p.depth + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        fifo = m.submodules.fifo = SyncFIFOBuffered(width=self.p.beat_bits, depth=self.p.depth)
        m.d.comb += [
            fifo.w_data.eq(self.i_beat.payload),
            fifo.w_en.eq(self.i_beat.valid),
            self.i_beat.ready.eq(fifo.w_rdy),
            self.o_beat.payload.eq(fifo.r_data),
            self.o_beat.valid.eq(fifo.r_rdy),
            fifo.r_en.eq(self.o_beat.ready),
            self.level.eq(fifo.level),
        ]
        return m
