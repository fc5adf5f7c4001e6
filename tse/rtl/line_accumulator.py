"""line_accumulator: the input stage of the TSE unit (tse.ref_model.streaming.line_accumulator).

Owns the input stream's position counters and their TLAST check, the tile sums of one strip
(a sum_bits register per (tile column, channel): a memory of tiles_x * C/P words of P sums)
and the hand-over of finished sums to the excite MAC.

Every accepted beat goes through one stage register; when the stage fires it
  - pushes the beat into the strip buffer (o_beat),
  - adds (x - zx) of each lane to its sum (read-modify-write; the first beat of a tile in a
    strip writes instead of adding, so no clearing pass is needed between strips; the sums
    are read synchronously as the beat enters the stage register, transparently for the
    write of the beat leaving it),
  - and, on a beat that completes a tile (last row of the strip, last column of the tile),
    sends the P finished sums to the excite MAC (o_sums) instead of keeping them.
For SRM (a plan with square_bits, tse.ref_model.srm_unit_plan) a second memory beside the
sums holds the sums of squares (x - zx)^2, unsigned, square_bits wide: the square is
computed as the beat loads (a 9 x 9 product into the stage register), added in the same
read-modify-write, and handed over with the sums (o_sums.payload.squares).
The stage fires only when both takers are ready, so the input stalls when the strip buffer
is full or the excite MAC still holds the pooled bank this strip will use.

TLAST robustness: the position counters say where the frame's last beat is. TLAST on an
earlier beat sets the sticky `error` and pads the rest of the frame internally (lanes at the
zero point; the input is held not ready); a missing TLAST on the frame's last beat sets
`error`, ends the frame there and drops input beats up to and including the next TLAST.
Either way the stages downstream see whole frames and the next frame starts clean.
"""
from __future__ import annotations

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, enum, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from . import arith
from .params import RtlParams, advance_raster, beat_layout, field, sums_layout, whole


class Mode(enum.Enum, shape=2):
    NORMAL = 0     # beats come from the input
    PAD = 1        # an early TLAST: the frame is finished with padding beats
    DROP = 2       # a missing TLAST: input beats are dropped up to the next TLAST


class LineAccumulator(wiring.Component):
    """Input beats -> strip buffer beats + finished tile sums (see the module docstring)."""

    def __init__(self, p: RtlParams):
        self.p = p
        super().__init__({
            "i_beat": In(stream.Signature(beat_layout(p))),
            "o_beat": Out(stream.Signature(p.beat_bits)),
            "o_sums": Out(stream.Signature(sums_layout(p))),
            # o_beat.ready and o_sums.ready of the next cycle (the takers' ready registers'
            # inputs: the strip buffer's ready_next, the excite MAC's i_sums_ready_next)
            "o_beat_ready_next": In(1),
            "o_sums_ready_next": In(1),
            "holding": Out(1),     # the stage register holds a beat (strip-buffer occupancy)
            "error": Out(1),       # sticky: a TLAST in the wrong place since reset
        })

    def elaborate(self, platform):
        p = self.p
        m = Module()
        P, G, W, H, th, tw, tx, ty = p.P, p.G, p.W, p.H, p.th, p.tw, p.tx, p.ty

        # ---- position of the next beat to enter -------------------------------------
        grp = Signal(field(G))
        col = Signal(field(W))
        tcol = Signal(field(tw))            # column within its tile
        tile = Signal(field(tx))
        row = Signal(field(H))
        rin = Signal(field(th))             # row within its strip
        strip = Signal(field(ty))
        last_row = (rin == th - 1) | (row == H - 1)
        last_col = (tcol == tw - 1) | (col == W - 1)
        at_first = (rin == 0) & (tcol == 0)
        at_complete = last_row & last_col
        at_strip_end = last_row & (col == W - 1) & (grp == G - 1)
        at_frame_last = (row == H - 1) & (col == W - 1) & (grp == G - 1)
        # the edge-tile kind (tse.ref_model.edge_tiles) as two comparisons, not a table of
        # tiles_y x tiles_x entries; test_unit_plan checks it against the plan's table
        at_kind = Cat(Const(int(p.partial_cols), 1) & (tile == tx - 1),
                      Const(int(p.partial_rows), 1) & (strip == ty - 1))

        # ---- the stage register ------------------------------------------------------
        st_valid = Signal()
        st_data = Signal(p.beat_bits)
        # x - zx of each lane, computed as the beat loads: the add into the sum is then the
        # stage's only carry chain
        st_xz = [Signal(signed(9), name=f"st_xz{lane}") for lane in range(P)]
        sq_bits = getattr(p, "square_bits", 0)      # SRM: sums of squares too
        st_sq = [Signal(17, name=f"st_sq{lane}") for lane in range(P)] if sq_bits else []
        st_first = Signal()
        st_complete = Signal()
        st_strip_end = Signal()
        st_tile = Signal.like(tile)
        st_grp = Signal.like(grp)
        st_kind = Signal(2)
        st_strip = Signal.like(strip)

        # At least two words: a one-word memory has a zero-width address, which Amaranth
        # writes as `wire [-1:0]` (Verilator's lint rejects it: C = P with one tile column)
        sums = m.submodules.sums = memory.Memory(
            shape=data.ArrayLayout(signed(p.sum_bits), P), depth=max(2, tx * G), init=[])
        wr = sums.write_port()
        # synchronous read, issued as a beat loads into the stage register with the beat's
        # address (so it adds no latency) and held while the beat waits; transparent, so a
        # beat loaded as the one before it writes the same word (same tile column and
        # channel group) reads the new sum
        rd = sums.read_port(domain="sync", transparent_for=(wr,))
        st_addr = Signal(range(max(2, tx * G)), name="st_addr")
        m.d.comb += wr.addr.eq(st_addr)
        lo, hi = -(1 << (p.sum_bits - 1)), (1 << (p.sum_bits - 1)) - 1
        new = []
        for lane in range(P):
            base = Mux(st_first, 0, rd.data[lane])
            x = st_xz[lane]
            total = arith.sat_add(m, base, x, lo, hi) if p.saturate else base + x
            new.append(arith.wire(m, total[:p.sum_bits], f"sum{lane}"))
        # Wide payloads are driven whole, with one Cat, never field by field: Amaranth
        # exports per-field drives as part-select assigns to one net, which Icarus builds as
        # .concat8 trees that re-send the whole vector on every change (most of its run
        # time before; tests/test_rtl_speed.py guards it).
        sums_word = arith.wire(m, Cat(*new), "sums_word")
        m.d.comb += wr.data.eq(sums_word)
        squares = {}
        if sq_bits:
            sqm = m.submodules.squares = memory.Memory(
                shape=data.ArrayLayout(sq_bits, P), depth=max(2, tx * G), init=[])
            sq_wr = sqm.write_port()
            sq_rd = sqm.read_port(domain="sync", transparent_for=(sq_wr,))
            sq_new = [arith.wire(m, (Mux(st_first, 0, sq_rd.data[lane]) + st_sq[lane])[:sq_bits],
                                 f"sq{lane}") for lane in range(P)]
            squares_word = arith.wire(m, Cat(*sq_new), "squares_word")
            m.d.comb += [sq_wr.addr.eq(st_addr), sq_wr.data.eq(squares_word)]

        sums_ok = ~st_complete | self.o_sums.ready
        fire = st_valid & self.o_beat.ready & sums_ok
        sums_valid = st_valid & st_complete & self.o_beat.ready
        # the payload is zero unless valid (AXI leaves it undefined then): the sums change
        # on every beat, and the excite MAC's logic need not follow them
        if sq_bits:
            squares = {"squares": squares_word}
            m.d.comb += sq_wr.en.eq(fire)
        m.d.comb += [
            self.o_beat.valid.eq(st_valid & sums_ok),
            self.o_beat.payload.eq(st_data),
            self.o_sums.valid.eq(sums_valid),
            self.o_sums.payload.eq(Mux(sums_valid, whole(
                sums_layout(p), sums=sums_word, tile=st_tile, group=st_grp, kind=st_kind,
                strip=st_strip, strip_end=st_strip_end, **squares), 0)),
            wr.en.eq(fire),
            self.holding.eq(st_valid),
        ]

        # ---- input: normal, padding or dropping ---------------------------------------
        mode = Signal(Mode)
        error = Signal()
        m.d.comb += self.error.eq(error)
        # can_load = ~st_valid | fire, as registers set a cycle ahead from the stage's next
        # state and the takers' next readies. The take enables the whole stage (beat, x - zx
        # of every lane, the sums' address, the position counters) and the input slice's
        # registers; computed from the strip buffer's and the excite MAC's readies in the
        # same cycle its route crossed the die (the default unit's critical path on the pins,
        # 11.96 ns, 9.83 of it routing). Two copies, one per side: `slice_hold` (stored
        # inverted, so Yosys does not merge the two) is the input slice's ready.
        can_load = Signal(init=1)
        slice_hold = Signal(init=0)
        take = Signal()
        beat = Signal(p.beat_bits)
        pad = Cat(*[Const(p.zx, 8)] * P)
        with m.Switch(mode):
            with m.Case(Mode.NORMAL):
                m.d.comb += [self.i_beat.ready.eq(~slice_hold),
                             take.eq(self.i_beat.valid & can_load),
                             beat.eq(self.i_beat.payload.data)]
                with m.If(take):
                    last = self.i_beat.payload.last
                    with m.If(last & ~at_frame_last):
                        m.d.sync += [error.eq(1), mode.eq(Mode.PAD)]
                    with m.Elif(~last & at_frame_last):
                        m.d.sync += [error.eq(1), mode.eq(Mode.DROP)]
            with m.Case(Mode.PAD):
                m.d.comb += [take.eq(can_load), beat.eq(pad)]
                with m.If(take & at_frame_last):
                    m.d.sync += mode.eq(Mode.NORMAL)
            with m.Default():                      # Mode.DROP
                m.d.comb += self.i_beat.ready.eq(1)
                with m.If(self.i_beat.valid & self.i_beat.payload.last):
                    m.d.sync += mode.eq(Mode.NORMAL)

        # the lookahead: the stage's valid and completing flag after this cycle, and the
        # takers' readies then
        st_valid_next = Mux(take, 1, st_valid & ~fire)
        st_complete_next = Mux(take, at_complete, st_complete)
        can_load_next = ~st_valid_next | (self.o_beat_ready_next
                                          & (~st_complete_next | self.o_sums_ready_next))
        m.d.sync += [can_load.eq(can_load_next), slice_hold.eq(~can_load_next)]

        m.d.comb += [rd.en.eq(take), rd.addr.eq(tile * G + grp)]
        if sq_bits:
            m.d.comb += [sq_rd.en.eq(take), sq_rd.addr.eq(tile * G + grp)]
            with m.If(take):
                for lane in range(P):
                    d = arith.minus_zp(beat[8 * lane:8 * lane + 8], p.zx)[:9].as_signed()
                    m.d.sync += st_sq[lane].eq((d * d)[:17])
        with m.If(take):
            m.d.sync += [st_valid.eq(1), st_data.eq(beat), st_first.eq(at_first),
                         *[st_xz[lane].eq(arith.minus_zp(beat[8 * lane:8 * lane + 8], p.zx))
                           for lane in range(P)],
                         st_addr.eq(tile * G + grp),
                         st_complete.eq(at_complete), st_strip_end.eq(at_strip_end),
                         st_tile.eq(tile), st_grp.eq(grp), st_kind.eq(at_kind),
                         st_strip.eq(strip)]
            advance_raster(m, self.p, grp, col, tcol, tile, row, rin, strip)
        with m.Elif(fire):
            m.d.sync += st_valid.eq(0)
        return m
