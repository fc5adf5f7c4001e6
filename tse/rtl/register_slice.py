"""RegisterSlice: an AXI4-Stream register slice (a skid buffer) at the unit's input
(tse.ref_model.streaming.InputSlice is its model).

Owns the input port's timing: the input pad drives only the slice's registers and
s_axis_tready is a register, so no path runs from a port into the line accumulator's take
logic, its position counters and the enables of its stage register (the default unit's
critical path before the slice: 11.6 ns, 10.1 of it routing, the take logic placed between
the input pads and the counters).

Two registers, the output one and a skid slot; ready is "the skid slot is empty", a register.
A beat offered while ready goes to the output register when that is empty or being taken,
else to the skid slot; the output register takes the skid slot's beat first. So it is a
two-beat FIFO whose ready does not see the same cycle's pop (plan.INPUT_SLICE_BEATS, the
model's InputSlice): full throughput, one cycle of latency (plan.INPUT_SLICE_CYCLES),
AXI-correct under backpressure (nothing lost or duplicated, valid and data held).

SliceChain puts plan.INPUT_SLICE_STAGES of them in a row (the unit's input): every hop
between them is register to register, so the placer may put the first by the pads and the
last by the line accumulator, and the combinational ready from the strip buffer's level ends
at the last slice.
"""
from __future__ import annotations

from amaranth import Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


class RegisterSlice(wiring.Component):
    """i (from the port) -> o, one cycle later; i.ready is a register."""

    def __init__(self, shape):
        self.shape = shape
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        o_valid, s_valid = Signal(), Signal()
        o_data = Signal(self.o.payload.shape(), reset_less=True)
        s_data = Signal(self.o.payload.shape(), reset_less=True)
        m.d.comb += [self.i.ready.eq(~s_valid), self.o.valid.eq(o_valid),
                     self.o.payload.eq(o_data)]
        take = self.i.valid & ~s_valid
        with m.If(~o_valid | self.o.ready):
            with m.If(s_valid):
                m.d.sync += [o_valid.eq(1), o_data.eq(s_data), s_valid.eq(0)]
            with m.Else():
                m.d.sync += [o_valid.eq(take), o_data.eq(self.i.payload)]
        with m.Elif(take):
            m.d.sync += [s_valid.eq(1), s_data.eq(self.i.payload)]
        return m


class SliceChain(wiring.Component):
    """`stages` RegisterSlices in a row: i -> o, `stages` cycles later; i.ready is the first
    slice's register."""

    def __init__(self, shape, stages: int):
        assert stages >= 1, stages
        self.shape, self.stages = shape, stages
        super().__init__({"i": In(stream.Signature(shape)), "o": Out(stream.Signature(shape))})

    def elaborate(self, platform):
        m = Module()
        slices = [RegisterSlice(self.shape) for _ in range(self.stages)]
        for n, s in enumerate(slices):
            m.submodules[f"stage{n}"] = s
        for a, b in zip(slices, slices[1:]):
            wiring.connect(m, a.o, b.i)
        wiring.connect(m, wiring.flipped(self.i), slices[0].i)
        wiring.connect(m, slices[-1].o, wiring.flipped(self.o))
        return m
