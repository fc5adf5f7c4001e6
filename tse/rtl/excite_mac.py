"""excite_mac: squeeze, fc1 + ReLU, fc2 and sigmoid of every tile
(tse.ref_model.streaming.excite_mac).

Owns the P mean units, the pooled codes of two strips, the Q-multiplier MAC with its shared
requantizer, the sigmoid ROM, and the timing of a strip: exactly the plan's excite latency
(tse.ref_model.plan: lead-in, tiles_x * excite_cycles_per_tile, drain), the strip's gates
committed to the gate memory in its last cycle.

Squeeze. The line accumulator hands over the P finished sums of a tile on each beat that
completes it; P mean units (tse/rtl/pipeline.mean, numerics.mean_hw_f32 / mean_hw) turn them into
pooled codes plan.MEAN_STAGES cycles later, into the pooled bank of the strip's parity. So
the means are taken while the strip's last pixels stream in, and the MAC only waits for the
last beat's (the lead-in).

MAC. Both 1x1 convolutions run one output at a time with Q inputs in parallel: Q products
(9-bit x int8), an adder tree with a register on every level, and one accumulator loaded
with the fixed-point bias. With hw.saturate the tree adds clamp-shift maps instead of
numbers (tse/rtl/pipeline.compose_clamped), which gives the chain of saturating adds in channel
order exactly. fc1 takes hidden * ceil(C/Q) issues, fc2 C * ceil(hidden/Q). One output per
chunk loop means one requantizer (acc x M, then the rounding shift) serves both layers, and
fc2's gates leave one at a time, which is what the gate memory and its probe take.

Pipeline of an issue (cycles after it; L = tree levels, A = 4 + L, X = A + 8 the plan's
issue_to_code):
    +1        operands: the pooled or hidden chunk, the weight ROM words (block RAM)
    +2        the layer's weights picked
    +3        Q products
    +4..+3+L  adder tree, a level a cycle
    A         accumulator (bias from the fc ROMs, block RAM read three cycles ahead, the
              layer's word picked onto a register a cycle ahead)
    A+1       the multiplier's word: both fc ROMs' words on registers (read at A - 1), the
              layer's picked onto a register that feeds the multiply
    A+2..A+5  acc x M: limb products, their adder tree (pipeline.mul, padded to 4 stages)
    A+6, A+7  rounding shift; increment and zero point
    X         clamp: the code's register loaded
    X+1       ReLU: the hidden code is written from it (fc2 starts plan.HIDDEN_CODE_CYCLES
              later); the gate ROM read (sigmoid or hard sigmoid; SiLU's ROM too, on fc1's
              codes)
    X+2       the gate is written to the gate memory (with SiLU: the hidden code, and fc2
              starts plan.HIDDEN_TABLE_CYCLES later)
The pipeline never stalls: a strip is a fixed sequence of cycles, so its latency is the
plan's, and the test that compares it with the model is exact.

Strip hand-over, as the model's excite_mac: a strip is excited as soon as its last sums
arrived and the previous strip committed; its gates go to gate bank (strip number mod 3),
which is free by then, and it commits only once the broadcaster released the strip two
before (until then the MAC holds in its last cycle; the model likewise computes a strip and
waits to write it). A pooled bank stays busy until its strip commits, so the line
accumulator waits (its sums stream is not ready) only while two strips are pending.
"""
from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory

from tse.ref_model import numerics as nm
from tse.ref_model import plan

from . import arith, pipeline
from .params import field
from .squeeze import ExciteStage, Squeeze, StripControl


class ExciteMac(ExciteStage):
    """Finished tile sums in, gates out to the gate memory (see the module docstring)."""

    def elaborate(self, platform):
        p = self.p
        m = Module()
        P, C, hid, Q, tx = p.P, p.C, p.hidden, p.Q, p.tx

        # ================= squeeze: P mean units into two pooled banks =================
        sq = Squeeze(m, p, self.i_sums, self.i_sums_ready_next)
        ctl = StripControl(m, p, sq, self.bank_free)
        pooled = [[[word[8 * c:8 * c + 8] for c in range(C)] for word in bank]
                  for bank in sq.pooled]

        # ============ strip control: lead-in, tiles of B cycles, drain ==================
        B = p.tile_cycles
        sc = Signal(range(B))                # cycle within the tile
        # sc < hid K1 (fc1 issues) and sc >= fc2's start as registers kept with sc: the
        # magnitude compares were carry chains in front of the issue counters' enables (the
        # default unit's out-of-context critical path, 10.8 ns); sc only steps by one or
        # restarts at 0, so each flag needs an equality only
        sc_fc1, sc_fc2 = Signal(init=1), Signal()

        def tile_start():
            m.d.sync += [sc.eq(0), sc_fc1.eq(1), sc_fc2.eq(0)]

        def tile_phase(next_tile):
            with m.If(sc != B - 1):
                m.d.sync += [sc.eq(sc + 1),
                             sc_fc1.eq(sc_fc1 & (sc != hid * p.K1 - 1)),
                             sc_fc2.eq(sc_fc2 | (sc == p.fc2_start - 1))]
            with m.Else():
                next_tile(tile_start)

        ctl.build(tile_start, tile_phase)
        in_tiles, tile, rb, gb, cur_strip = ctl.in_tiles, ctl.tile, ctl.rb, ctl.gb, ctl.cur_strip
        m.d.comb += [self.commit.eq(ctl.commit), self.commit_bank.eq(gb)]

        # ================= issue: (layer, output, chunk) per cycle ======================
        F2 = p.fc2_start
        in_fc1 = in_tiles & sc_fc1           # sc < hid * K1
        in_fc2 = in_tiles & sc_fc2           # sc >= F2
        o = Signal(field(max(C, hid)))       # output neuron
        k = Signal(field(max(p.K1, p.K2)))   # input chunk
        c_grp, c_lane = Signal(field(p.G)), Signal(field(P))   # fc2's output as group, lane
        a1, a2 = Signal(range(hid * p.K1)), Signal(range(C * p.K2))  # weight ROM addresses
        kmax = Mux(in_fc2, p.K2 - 1, p.K1 - 1)
        with m.If(in_fc1 | in_fc2):
            m.d.sync += k.eq(k + 1)
            with m.If(k == kmax):
                m.d.sync += [k.eq(0), o.eq(o + 1), c_lane.eq(c_lane + 1)]
                with m.If(c_lane == P - 1):
                    m.d.sync += [c_lane.eq(0), c_grp.eq(c_grp + 1)]
        # the counters restart before each layer (after the increments: these win when
        # fc2 follows fc1's last issue directly)
        restart = ~in_tiles | (sc == B - 1)
        with m.If(restart | (sc == F2 - 1)):
            m.d.sync += [o.eq(0), k.eq(0), c_grp.eq(0), c_lane.eq(0)]
        with m.If(restart):
            m.d.sync += [a1.eq(0), a2.eq(0)]
        with m.Else():
            with m.If(in_fc1):
                m.d.sync += a1.eq(a1 + 1)
            with m.If(in_fc2):
                m.d.sync += a2.eq(a2 + 1)

        # what travels with an issue down the pipeline
        tag_layout = data.StructLayout({
            "valid": 1, "fc2": 1, "first": 1, "last": 1, "k": field(max(p.K1, p.K2)),
            "o": field(max(C, hid)), "tile": field(tx), "grp": field(p.G), "lane": field(P)})
        A = plan.ISSUE_TO_TREE + p.tree_levels          # the accumulator's cycle
        tags = [Signal(tag_layout, name="tag0")]
        m.d.comb += tags[0].eq(Cat(in_fc1 | in_fc2, in_fc2, k == 0, k == kmax, k, o, tile,
                                   c_grp, c_lane))
        last_tag = p.issue_to_code + max(plan.CODE_TO_GATE, plan.HIDDEN_TABLE_CYCLES,
                                         plan.HIDDEN_CODE_CYCLES)
        for i in range(1, last_tag + 1):
            tags.append(Signal(tag_layout, name=f"tag{i}"))
            m.d.sync += tags[i].eq(tags[i - 1])

        # +1: operands. Weight ROMs (block RAM) read at the issue, pooled / hidden chunk
        # picked by an index registered at the issue
        w1 = m.submodules.w1_rom = memory.Memory(shape=8 * Q, depth=len(p.w1_rom), init=p.w1_rom)
        w2 = m.submodules.w2_rom = memory.Memory(shape=8 * Q, depth=len(p.w2_rom), init=p.w2_rom)
        w1r, w2r = w1.read_port(), w2.read_port()
        m.d.comb += [w1r.addr.eq(a1), w2r.addr.eq(a2)]
        sel = pipeline.cut(m, (rb * tx + tile) * p.K1 + k, "pooled_sel")
        hidden_word = Signal(8 * hid)
        hidden = [hidden_word[8 * i:8 * i + 8] for i in range(hid)]
        pooled_chunks = Array(
            Cat(*[pooled[b][t][kk * Q + q] if kk * Q + q < C else Const(0, 8)
                  for q in range(Q)])
            for b in range(2) for t in range(tx) for kk in range(p.K1))
        hidden_chunks = Array(
            Cat(*[hidden[kk * Q + q] if kk * Q + q < hid else Const(0, 8) for q in range(Q)])
            for kk in range(p.K2))
        t1 = tags[1]
        pw = arith.wire(m, pooled_chunks[sel], "pooled_chunk")
        hw_ = arith.wire(m, hidden_chunks[t1.k], "hidden_chunk")
        acts = [Mux(t1.fc2, arith.minus_zp(hw_[8 * q:8 * q + 8], p.zh),
                    arith.minus_zp(pw[8 * q:8 * q + 8], p.zx))[:9] for q in range(Q)]
        act_word = pipeline.cut(m, Cat(*acts), "act_word")
        # both ROM words on registers of their own: nothing between a block RAM's slow data
        # out (5.8 ns) and a flip-flop
        w1_word = pipeline.cut(m, w1r.data, "w1_word")
        w2_word = pipeline.cut(m, w2r.data, "w2_word")

        # +2: the layer's weights picked (its flag drives 8Q multiplexers: a net that slow
        # must not also precede a multiply), the operands aligned
        wgt_word = pipeline.cut(m, Mux(tags[2].fc2, w2_word, w1_word), "wgt_word")
        act_word = pipeline.cut(m, act_word, "act_word2")

        # +3: Q products
        prods_word = pipeline.cut(m, Cat(*[
            (act_word[9 * q:9 * q + 9].as_signed() * wgt_word[8 * q:8 * q + 8].as_signed())[:17]
            for q in range(Q)]), "prods_word")
        prods = [prods_word[17 * q:17 * q + 17].as_signed() for q in range(Q)]

        # +4 ...: the adder tree, a register on every level; then the accumulator at A
        f = p.frac_bits
        tA = tags[A]
        fc_roms = []
        for layer in (0, 1):
            rom = memory.Memory(shape=p.fc_word_bits, depth=len(p.fc_rom(layer)),
                                init=p.fc_rom(layer))
            m.submodules[f"fc{layer + 1}_rom"] = rom
            fc_roms.append(rom)
        # the bias, read three cycles ahead: the block RAM's word, then the layer's word
        # picked onto a register, so neither the slow data out nor the layer flag's mux
        # precedes the accumulator's add
        bias_r = [rom.read_port() for rom in fc_roms]
        m.d.comb += [r.addr.eq(tags[A - 3].o) for r in bias_r]
        bias_w = [pipeline.cut(m, r.data[:p.acc_bits], f"bias{layer + 1}")
                  for layer, r in enumerate(bias_r)]
        bias = pipeline.cut(m, Mux(tags[A - 1].fc2, bias_w[1], bias_w[0]).as_signed(), "bias")
        acc = Signal(signed(p.acc_bits))
        if p.saturate:
            (lo1, hi1), (lo2, hi2) = p.acc_range(0), p.acc_range(1)
            l3 = tags[plan.ISSUE_TO_TREE].fc2
            lo, hi = Mux(l3, lo2, lo1), Mux(l3, hi2, hi1)
            maps = [(x << f, lo, hi) for x in prods]
            for level in range(p.tree_levels):
                pairs = [pipeline.compose_clamped(m, maps[i], maps[i + 1], f"sat{level}")
                         for i in range(0, len(maps) - 1, 2)]
                maps = [tuple(pipeline.cut(m, v, f"sat{level}_{n}") for v, n in zip(mp, "slh"))
                        for mp in pairs + maps[len(pairs) * 2:]]
            s, L, H = maps[0]
            lo, hi = Mux(tA.fc2, lo2, lo1), Mux(tA.fc2, hi2, hi1)
            base = arith.wire(m, Mux(tA.first, arith.clamp(bias, lo, hi), acc), "acc_base")
            total = arith.clamp(arith.wire(m, base + s, "acc_sum"), L, H)
        else:
            values = prods
            for level in range(p.tree_levels):
                pairs = [values[i] + values[i + 1] for i in range(0, len(values) - 1, 2)]
                values = [pipeline.cut(m, v, f"tree{level}")
                          for v in pairs + values[len(pairs) * 2:]]
            total = Mux(tA.first, bias, acc) + (values[0] << f)
        acc_next = arith.wire(m, total[:p.acc_bits].as_signed(), "acc_next")
        rq_acc = Signal(signed(p.acc_bits))
        with m.If(tA.valid):
            m.d.sync += acc.eq(acc_next)
        with m.If(tA.valid & tA.last):
            m.d.sync += rq_acc.eq(acc_next)

        # A+1: the multiplier's word; acc and M on registers at A+2
        acc2, mult, shift = pipeline.requant_operands(m, fc_roms, tags, A, rq_acc,
                                                      p.acc_bits, p.mult_bits)

        # A+2 ...: acc x M, the rounding shift, zero point, clamp (lower clamp at zh: fc1's
        # fused ReLU)
        z1, lo1 = p.fc1_output          # (zh, zh): fused ReLU; SiLU's input zp, 0
        layers = ((z1, lo1, p.rounding("fc1") == nm.HALF_UP),
                  (p.ze, 0, p.rounding("fc2") == nm.HALF_UP))
        code, _ = pipeline.requantizer(m, acc2, mult, shift,
                                       tags[A + 2 + pipeline.MUL_STAGES].fc2, layers,
                                       p.max_shift)
        code = arith.wire(m, code, "code")
        assert A + 2 + pipeline.MUL_STAGES + pipeline.REQUANT_STAGES == p.issue_to_code
        code_reg = pipeline.cut(m, code, "code_reg")
        if p.silu_rom is None:          # ReLU: fc1's code, from its register, is the hidden code
            tc, hidden_code = tags[p.issue_to_code + plan.HIDDEN_CODE_CYCLES], code_reg
        else:                           # SiLU: its ROM (block RAM) after the code's register
            silu = m.submodules.silu_rom = memory.Memory(shape=8, depth=256, init=p.silu_rom)
            sr = silu.read_port()
            m.d.comb += sr.addr.eq(code_reg)
            tc, hidden_code = tags[p.issue_to_code + plan.HIDDEN_TABLE_CYCLES], sr.data
        for i in range(hid):
            with m.If(tc.valid & tc.last & ~tc.fc2 & (tc.o == i)):
                m.d.sync += hidden[i].eq(hidden_code)

        # the code's register, the gate ROM (block RAM) and the gate write
        lut = m.submodules.sigmoid_rom = memory.Memory(shape=p.gate_bits, depth=256,
                                                      init=p.gate_rom)
        lr = lut.read_port()
        te = tags[p.issue_to_code + plan.CODE_TO_GATE]
        m.d.comb += [
            lr.addr.eq(code_reg),
            self.w_en.eq(te.valid & te.last & te.fc2), self.w_bank.eq(gb),
            self.w_tile.eq(te.tile), self.w_group.eq(te.grp), self.w_lane.eq(te.lane),
            self.w_data.eq(lr.data), self.w_channel.eq(te.o),
            self.w_frame_tile.eq(cur_strip * tx + te.tile),
        ]
        return m
