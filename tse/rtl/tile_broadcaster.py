"""tile_broadcaster: the output stage of the TSE unit (tse.ref_model.streaming.tile_broadcaster).

Owns the output side's position counters (it regenerates TLAST from them), the reading of
the gate memory, the P lanes' scale pipelines and the output's skid buffer. It pops a beat
from the strip buffer once the gates of the beat's strip are in the gate memory (bank strip
number mod 3 is full), reads the P gates of the beat's tile and channel group in the same
cycle (the gate memory's synchronous read), and releases the bank with the strip's last
beat: every gate of the strip has been read by then.

Each lane computes numerics.scale in register stages of one multiply or one add, round or
clamp each (tse.rtl.arith's scale steps): the beat beside the gates read for it, (x - zx),
(x - zx) * g, its products with the chunks of M, their sum, the rounding shift, + zo; the
clamp feeds the output register. A popped beat is on m_axis plan.BROADCAST_LATENCY_CYCLES
cycles later.

The pipeline advances as a whole while the skid slot is empty: a registered condition, so
m_axis_tready reaches only the output register, the skid slot and their flags, not the pop
or the pipeline's enables. When the output register holds a beat that is not taken, the beat
leaving the pipeline goes to the skid slot and the pipeline stops the cycle after; the output
register takes the skid slot's beat first. So backpressure neither loses nor duplicates a
beat (AXI4-Stream: valid and data held until ready), and with m_axis_tready high the unit
moves one beat per clock and pops exactly when the model's broadcaster does.
"""
from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, Value
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from tse.ref_model.plan import BROADCAST_LATENCY_CYCLES

from . import arith
from .gate_memory import BANKS
from .params import RtlParams, advance_raster, beat_layout, field, whole


def stage(m, value, en, name: str) -> Signal:
    """A pipeline register of value, loaded when en (no reset: its valid flag has one)."""
    value = Value.cast(value)
    reg = Signal(value.shape(), name=name, reset_less=True)
    with m.If(en):
        m.d.sync += reg.eq(value)
    return reg


class TileBroadcaster(wiring.Component):
    """Strip-buffer beats x gates -> output beats (see the module docstring)."""

    def __init__(self, p: RtlParams):
        self.p = p
        super().__init__({
            "i_beat": In(stream.Signature(p.beat_bits)),
            "o_beat": Out(stream.Signature(beat_layout(p))),
            "gate_en": Out(1), "gate_addr": Out(range(BANKS * p.tx * p.G)),
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
        # the gate memory's word of the position, (bank * tiles_x + tile) * C/P + group,
        # stepped with it: +1 to the next group or tile, back to the tile's group 0 for its
        # next column, the bank's first word at a row's start
        words = p.tx * p.G
        gaddr, bank_base = Signal(range(BANKS * words)), Signal(range(BANKS * words))
        last_row = (rin == p.th - 1) | (row == p.H - 1)
        strip_end = last_row & (col == p.W - 1) & (grp == p.G - 1)
        frame_last = (row == p.H - 1) & (col == p.W - 1) & (grp == p.G - 1)

        o_valid, o_data, o_last = Signal(), Signal(p.beat_bits, reset_less=True), Signal()
        s_valid, s_data, s_last = Signal(), Signal(p.beat_bits, reset_less=True), Signal()
        advance = ~s_valid
        ready_gates = Array(self.bank_full[b] for b in range(3))[bank]
        can_pop = ready_gates & advance
        pop = can_pop & self.i_beat.valid
        m.d.comb += [
            self.i_beat.ready.eq(can_pop),
            # the gates of the beat popped now; held with the beat while the pipeline waits
            self.gate_en.eq(advance),
            self.gate_addr.eq(gaddr),
            self.o_beat.valid.eq(o_valid),
            self.o_beat.payload.eq(whole(beat_layout(p), data=o_data, last=o_last)),
            self.release.eq(pop & strip_end), self.release_bank.eq(bank),
        ]
        with m.If(pop):
            advance_raster(m, p, grp, col, tcol, tile, row, rin)
            with m.If(strip_end):
                next_base = Mux(bank == BANKS - 1, 0, bank_base + words)
                m.d.sync += [bank.eq(Mux(bank == BANKS - 1, 0, bank + 1)),
                             bank_base.eq(next_base), gaddr.eq(next_base)]
            with m.Elif((grp == p.G - 1) & (col == p.W - 1)):
                m.d.sync += gaddr.eq(bank_base)
            with m.Elif((grp == p.G - 1) & (tcol != p.tw - 1)):
                m.d.sync += gaddr.eq(gaddr - (p.G - 1))
            with m.Else():
                m.d.sync += gaddr.eq(gaddr + 1)

        # ---- the lanes' scale pipelines: one register stage per step ------------------
        valid, last = pop, frame_last
        steps = 0

        def step(values, name):
            nonlocal valid, last, steps
            steps += 1
            v, t = Signal(name=f"v{steps}"), Signal(name=f"last{steps}")
            with m.If(advance):
                m.d.sync += [v.eq(valid), t.eq(last)]
            valid, last = v, t
            return [stage(m, x, advance, f"{name}{i}") for i, x in enumerate(values)]

        # the beat beside its gates (the memory's output register): the strip buffer's block
        # RAM output is slow, so nothing is computed on it before a register
        x = step([self.i_beat.payload[8 * i:8 * i + 8] for i in range(p.P)], "x")
        xzg = step([arith.scale_offset(x[i], p) for i in range(p.P)]
                   + [self.gate_data[i] for i in range(p.P)], "xz")
        t = step([arith.scale_gate(xzg[i], xzg[p.P + i]) for i in range(p.P)], "t")
        n = len(arith.scale_chunks(t[0], p))
        chunks = step([c for i in range(p.P) for c in arith.scale_chunks(t[i], p)], "tm")
        tm = step([arith.scale_sum(chunks[n * i:n * i + n]) for i in range(p.P)], "tmsum")
        r = step([arith.scale_round(m, tm[i], p) for i in range(p.P)], "round")
        q = step([arith.scale_zero_point(r[i], p) for i in range(p.P)], "q")
        if steps + 1 != BROADCAST_LATENCY_CYCLES:
            raise AssertionError(f"tile_broadcaster: {steps} stages + the output register, "
                                 f"but plan.BROADCAST_LATENCY_CYCLES is "
                                 f"{BROADCAST_LATENCY_CYCLES}")
        lanes = arith.wire(m, Cat(*[arith.scale_clamp(m, q[i]) for i in range(p.P)]), "lanes")

        # ---- output register and skid slot -------------------------------------------
        arrive = valid & advance            # a beat leaves the pipeline
        with m.If(~o_valid | self.o_beat.ready):
            with m.If(s_valid):
                m.d.sync += [o_valid.eq(1), o_data.eq(s_data), o_last.eq(s_last),
                             s_valid.eq(0)]
            with m.Else():
                m.d.sync += [o_valid.eq(arrive), o_data.eq(lanes), o_last.eq(last)]
        with m.Elif(arrive):
            m.d.sync += [s_valid.eq(1), s_data.eq(lanes), s_last.eq(last)]
        return m
