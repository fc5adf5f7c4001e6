"""squeeze: the part of an excite stage that SE's excite MAC and ECA's excite share (the
model's excite_mac: the tile means into two pooled banks, and a strip's hand-over).

Owns, built into the excite stage's module:
  - Squeeze: the input side. Finished tile sums are accepted into P mean units
    (tse/rtl/pipeline.mean), whose pooled codes land plan.MEAN_STAGES cycles later in the
    pooled bank of the strip's parity. A bank is busy from its strip's last sums to its
    commit; the sums' ready ("the bank the sums go to is not busy") is a register of its
    own, set from the next bank and busy flags, with its input on i_sums_ready_next (the
    line accumulator's take is set a cycle ahead from it). The stage accepts on the flags
    themselves: the ready register is for the far side.
  - ExciteStage: the component every excite stage is, with excite_ports, its ports.
  - StripControl: a strip's cycles, lead-in, the stage's own tile phase, drain, the commit
    in the last cycle once the broadcaster released the strip two before (gate bank
    (s + 1) mod 3 free; until then the stage holds in its last cycle), and the banks' rotation.
The stage's own part (the MAC's issue schedule, ECA's window) is the tile phase's body.
"""
from __future__ import annotations

from amaranth import Array, Cat, Mux, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from tse.ref_model import plan

from . import pipeline
from .params import field, sums_layout

LEAD, TILES, DRAIN = 0, 1, 2
"""A strip's phases."""


def excite_ports(p) -> dict:
    """The ports of every excite stage (SE's excite MAC, ECA's excite), so TSEUnit swaps one
    for the other."""
    return {
        "i_sums": In(stream.Signature(sums_layout(p))),
        "i_sums_ready_next": Out(1),   # i_sums.ready of the next cycle (the lookahead)
        # gate writes, one gate a cycle, and the strip's commit
        "w_en": Out(1), "w_bank": Out(2), "w_tile": Out(field(p.tx)),
        "w_group": Out(field(p.G)), "w_lane": Out(field(p.P)), "w_data": Out(p.gate_bits),
        "w_channel": Out(field(p.C)), "w_frame_tile": Out(field(p.tx * p.ty)),
        "commit": Out(1), "commit_bank": Out(2),
        "bank_free": In(3),         # gate memory banks not holding a strip (GateMemory)
    }


class ExciteStage(wiring.Component):
    """The interface every excite stage implements (excite_ports) for a plan p whose
    schedule it checks; the subclass builds the stage in elaborate."""

    def __init__(self, p):
        self.p = p
        p.check_schedule()
        super().__init__(excite_ports(p))


    def sigmoid_gate_write(self, m, code_reg, ctl, iss, prefix: str) -> None:
        """The sigmoid ROM (block RAM) read at code_reg and the gate write it feeds, with the
        issue's tile, channel, group and lane delayed to it (p.drain_cycles after the issue):
        the tail of a one-channel-a-cycle excite (ECA's, SRM's; iss: its ChannelIssue)."""
        p = self.p
        lut = m.submodules.sigmoid_rom = memory.Memory(shape=p.gate_bits, depth=256,
                                                      init=p.gate_rom)
        lr = lut.read_port()
        m.d.comb += lr.addr.eq(code_reg)
        tag_layout = data.StructLayout({"valid": 1, "tile": field(p.tx), "ch": field(p.C),
                                        "grp": field(p.G), "lane": field(p.P)})
        tag = pipeline.delay(m, Cat(ctl.in_tiles, ctl.tile, iss.ch, iss.grp, iss.lane),
                             p.drain_cycles, f"{prefix}_tag", reset=True)
        te = data.View(tag_layout, tag)
        m.d.comb += [
            self.w_en.eq(te.valid), self.w_bank.eq(ctl.gb), self.w_tile.eq(te.tile),
            self.w_group.eq(te.grp), self.w_lane.eq(te.lane), self.w_data.eq(lr.data),
            self.w_channel.eq(te.ch), self.w_frame_tile.eq(ctl.cur_strip * p.tx + te.tile),
        ]


class Squeeze:
    """The tile sums of `i_sums` (a stream's In side) into the pooled banks; `pooled[b][t]` is
    the word of 8 C bits holding bank b's tile column t, channel c at bits 8c..8c+7."""

    def __init__(self, m, p, i_sums, ready_next):
        P = p.P
        self.m, self.p = m, p
        self.wbank = wbank = Signal()            # bank of the strip whose sums arrive
        self.pbusy = pbusy = Signal(2)           # bank holds a finished strip not yet committed
        self.bank_strip = Array(Signal(field(p.ty), name=f"bank_strip{b}") for b in range(2))
        self.s_in = s_in = i_sums.payload
        # (the register: the multiplexer on the flags was the default unit's critical path
        # on the pins, 10.6 ns, 8.9 of it routing)
        sums_ready = Signal(init=1)
        self.ready_next = ready_next
        m.d.comb += i_sums.ready.eq(sums_ready)
        self._sums_ready = sums_ready
        accept = i_sums.valid & ~Mux(wbank, pbusy[1], pbusy[0])
        self.strip_done = strip_done = accept & s_in.strip_end

        a_valid = Signal()
        # registers that hold many fields are one Signal each, sliced: Icarus runs one
        # process per register on every clock edge, and 381 of them were most of its work
        a_word = Signal(P * p.sum_bits)
        a_kind = Signal(2)
        a_where = Signal(data.StructLayout({"tile": field(p.tx), "group": field(p.G),
                                            "bank": 1}))
        m.d.sync += a_valid.eq(accept)
        with m.If(accept):
            m.d.sync += [a_kind.eq(s_in.kind), a_word.eq(s_in.sums),
                         a_where.eq(Cat(s_in.tile, s_in.group, wbank))]
        with m.If(strip_done):
            m.d.sync += [wbank.eq(~wbank), self.bank_strip[wbank].eq(s_in.strip)]
        # what a stage that squeezes more (SRM's deviation units) takes beside the means
        self.accept, self.a_valid, self.a_word, self.a_kind, self.a_where = \
            accept, a_valid, a_word, a_kind, a_where
        means, depth = [], 0
        for lane in range(P):
            s = a_word[lane * p.sum_bits:(lane + 1) * p.sum_bits].as_signed()
            code, depth = pipeline.mean_unit(m, s[:p.sum_value_bits].as_signed(), a_kind, p,
                                              lane)
            means.append(code)
        assert depth <= plan.MEAN_STAGES, (depth, plan.MEAN_STAGES)
        # every form of the mean leaves at the same cycle: the schedule is one
        means_word = pipeline.delay(m, Cat(*means), plan.MEAN_STAGES - depth, "means")
        m_valid = pipeline.delay(m, a_valid, plan.MEAN_STAGES, "mean_valid", reset=True)
        m_where = data.View(a_where.shape(), pipeline.delay(m, a_where.as_value(),
                                                            plan.MEAN_STAGES, "mean_where"))
        self.pooled = [[Signal(8 * p.C, name=f"pooled_b{b}_t{t}") for t in range(p.tx)]
                       for b in range(2)]
        for b in range(2):
            for t in range(p.tx):
                for g in range(p.G):
                    with m.If(m_valid & (m_where.bank == b) & (m_where.tile == t)
                              & (m_where.group == g)):
                        m.d.sync += self.pooled[b][t][8 * P * g:8 * P * (g + 1)].eq(
                            means_word)

    def arrived(self, b):
        """Bank b holds a finished strip, or its last sums arrive this cycle."""
        return Mux(b, self.pbusy[1], self.pbusy[0]) | (self.strip_done & (self.wbank == b))

    def strip_of(self, b):
        """The strip (within the frame) of bank b's tile sums, as `arrived` sees it."""
        return Mux(self.strip_done & (self.wbank == b), self.s_in.strip, self.bank_strip[b])

    def release(self, commit, b):
        """Bank b is free from the cycle after `commit`."""
        pbusy, strip_done, wbank = self.pbusy, self.strip_done, self.wbank
        busy_next = Cat(*[(pbusy[k] | (strip_done & (wbank == k))) & ~(commit & (b == k))
                          for k in range(2)])
        self.m.d.comb += self.ready_next.eq(~Mux(wbank ^ strip_done, busy_next[1],
                                                 busy_next[0]))
        self.m.d.sync += [pbusy.eq(busy_next), self._sums_ready.eq(self.ready_next)]


class StripControl:
    """A strip's phases for the excite stage of module m. Exposes running, phase (lead-in,
    tiles, drain) and cnt (the cycle within the lead-in or drain; both read by the formal
    harness's invariants), in_tiles, tile, rb (the pooled bank being excited), gb (the gate
    bank, strip number mod 3), cur_strip and commit; build(lead_end, tile_phase) then adds
    the phases' logic: `lead_end()` adds the statements of the lead-in's last cycle (the tile
    phase's start, tile 0), `tile_phase(next_tile)` builds the tile phase's body and calls
    next_tile(on_next) in a tile's last cycle (on_next() adds the statements of the next
    tile's start)."""

    def __init__(self, m, p, sq: Squeeze, bank_free):
        self.m, self.p, self.sq = m, p, sq
        lead, drain = p.lead_cycles, p.drain_cycles
        self.running = running = Signal()
        phase = Signal(2)
        cnt = Signal(range(max(lead, drain) + 1))
        self.rb = rb = Signal()
        self.gb = gb = Signal(2)
        self.tile = Signal(field(p.tx))
        self.cur_strip = Signal(field(p.ty))
        self.phase, self.cnt = phase, cnt
        self.in_tiles = running & (phase == TILES)
        last_cycle = running & (phase == DRAIN) & (cnt == drain - 1)
        # like the model, a strip's gates become visible only once the broadcaster is done
        # with the strip two before (its bank, gb + 1 mod 3, is free)
        older = Mux(gb == 2, 0, gb + 1)
        self._can_commit = Array(bank_free[b] for b in range(3))[older]
        self.commit = last_cycle & self._can_commit

    def build(self, lead_end, tile_phase):
        """The phases' logic (see the class docstring for the two callbacks)."""
        m, p, sq = self.m, self.p, self.sq
        lead, drain, tx = p.lead_cycles, p.drain_cycles, p.tx
        running, phase, cnt, rb, gb = self.running, self.phase, self.cnt, self.rb, self.gb
        tile, can_commit = self.tile, self._can_commit
        start = ~running & sq.arrived(rb)

        def next_tile(on_next):
            with m.If(tile != tx - 1):
                m.d.sync += tile.eq(tile + 1)
                on_next()
            with m.Else():
                m.d.sync += [phase.eq(DRAIN), cnt.eq(0)]

        with m.If(start):    # the start cycle is the lead-in's cycle 0
            m.d.sync += [running.eq(1), phase.eq(LEAD), cnt.eq(1),
                         self.cur_strip.eq(sq.strip_of(rb))]
        with m.Elif(running):
            with m.Switch(phase):
                with m.Case(LEAD):
                    with m.If(cnt == lead - 1):
                        m.d.sync += [phase.eq(TILES), tile.eq(0)]
                        lead_end()
                    with m.Else():
                        m.d.sync += cnt.eq(cnt + 1)
                with m.Case(TILES):
                    tile_phase(next_tile)
                with m.Default():
                    with m.If(cnt != drain - 1):
                        m.d.sync += cnt.eq(cnt + 1)
                    with m.Elif(can_commit):     # else: hold in the last cycle
                        m.d.sync += [running.eq(0), rb.eq(~rb),
                                     gb.eq(Mux(gb == 2, 0, gb + 1))]
        sq.release(self.commit, rb)


class ChannelIssue:
    """One channel a cycle, tile after tile (ECA's and SRM's excite): builds ctl's phases
    (StripControl.build) and exposes ch (the channel issued this cycle), grp and lane (its
    channel group and lane), and load / load_tile (a window register takes the codes of
    tile `load_tile` this cycle: in the lead-in's last cycle, and in a tile's last cycle
    for the next)."""

    def __init__(self, m, p, ctl: StripControl):
        C, P = p.C, p.P
        self.ch = ch = Signal(field(C))      # output channel issued this cycle
        grp, lane = Signal(field(p.G)), Signal(field(P))
        self.grp, self.lane = grp, lane
        self.load = load = Signal()          # a window takes tile `load_tile` this cycle
        self.load_tile = load_tile = Signal(field(p.tx))

        def lead_end():
            m.d.sync += [ch.eq(0), grp.eq(0), lane.eq(0)]
            m.d.comb += [load.eq(1), load_tile.eq(0)]

        def load_next():
            m.d.comb += [load.eq(1), load_tile.eq(ctl.tile + 1)]

        def tile_phase(next_tile):
            m.d.sync += [ch.eq(ch + 1), lane.eq(lane + 1)]
            with m.If(lane == P - 1):
                m.d.sync += [lane.eq(0), grp.eq(grp + 1)]
            with m.If(ch == C - 1):
                m.d.sync += [ch.eq(0), grp.eq(0), lane.eq(0)]
                next_tile(load_next)

        ctl.build(lead_end, tile_phase)
