"""excite3x1: the paper's 3x1 excite (issue 18; block "se", excite_kernel "3x1"): squeeze,
fc1 over pooled rows r-1, r, r+1 (+ ReLU), fc2 over hidden rows e-1, e, e+1 and the sigmoid,
in the order and arithmetic of tse.ref_model.excite3x1_streaming (its _excite).

The same ports as SE's excite MAC (tse/rtl/squeeze.excite_ports), so TSEUnit keeps the line
accumulator, strip buffer, gate memory and tile broadcaster. Its facts are the plan's,
tse.ref_model.excite3x1_unit_plan.Excite3x1UnitPlan (schedule, K1 = ceil(3C/Q),
K2 = ceil(3 hidden/Q), ROM images, windows).

Squeeze. P mean units (tse/rtl/pipeline.mean) write a strip's pooled codes into one of four
pooled slots, a running counter (so a frame's first strips arrive while the last strip of the
frame before is processed). A slot is busy from its strip's last sums until the last hidden
row that reads it is computed; a strip's sums are accepted only into a free slot (with an
excite that keeps up, always: the three passes of a frame's last strip free a slot each,
before the next frame's strips need them). Beside them, three hidden slots hold hidden rows
(slot r mod 3): the windows, never a frame.

Passes. A finished strip s is processed in passes of exactly the plan's excite latency (lead-in,
tiles_x tiles of tile_cycles, drain): pass 0 computes hidden row s-1 (if s >= 1) and excite row
s-2 (if s >= 2); on the frame's last strip pass 1 computes hidden row s and excite row s-1, and
pass 2 excite row s (rows beyond the frame are zero padding: their products are masked). A
pass with nothing to do is skipped. Within a tile, fc1's hid*K1 issues come first, then from
fc2_start fc2's C*K2 (its third tap, the hidden row this pass writes, is written by then).
Each excite row is one strip's gates: written to gate bank gb and committed in the pass's last
cycle once the strip two before is released (gb + 1 mod 3 free; until then the pass holds).

The MAC is the excite MAC's (tse/rtl/excite_mac.py, same stage numbering): operands at +1
(weight ROM words, the chunk of Q codes picked from the window by a registered index, padded
taps masked to 0), +2 aligned, +3 Q products, an adder tree with a register a level, the
accumulator loaded with the bias (fc ROM, block RAM), acc x M (pipeline.mul) and the
requantizer (pipeline.requant; fc1's lower clamp is its fused ReLU), the hidden code written
into its slot HIDDEN_CODE_CYCLES after the code, the gate CODE_TO_GATE after (sigmoid ROM).
"""
from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, memory

from tse.ref_model import plan
from tse.ref_model.excite3x1_unit_plan import HIDDEN_SLOTS as HSLOTS
from tse.ref_model.excite3x1_unit_plan import POOLED_SLOTS as SLOTS
from tse.ref_model.rounding import HALF_UP

from . import arith, pipeline
from .params import field
from .squeeze import ExciteStage

LEAD, TILES, DRAIN = 0, 1, 2


class Excite3x1(ExciteStage):
    """Finished tile sums in, 3x1-excite gates out to the gate memory (module docstring);
    p: tse.ref_model.excite3x1_unit_plan.Excite3x1UnitPlan."""

    @staticmethod
    def _rom(m, p, name):
        """The plan's ROM image `name` as a memory (block RAM) NAME_rom of module m."""
        rom = p.rom_images[name]
        mem = memory.Memory(shape=rom.width, depth=rom.depth, init=list(rom.words))
        m.submodules[f"{name}_rom"] = mem
        return mem

    def elaborate(self, platform):
        p = self.p
        m = Module()
        P, C, hid, Q, tx, ty = p.P, p.C, p.hidden, p.Q, p.tx, p.ty
        K1, K2, B, F2 = p.K1, p.K2, p.tile_cycles, p.fc2_start
        assert SLOTS == 4, SLOTS            # the pooled slots' counters wrap at 2 bits
        lead, drain = p.lead_cycles, p.drain_cycles

        # ================= squeeze: P mean units into four pooled slots ==================
        s_in = self.i_sums.payload
        pend = Signal(range(SLOTS + 1))      # finished strips not yet processed
        busy = Signal(SLOTS)                 # slot holds a finished row a hidden row reads
        wslot = Signal(2)                    # slot of the strip whose sums arrive
        pslot = Signal(2)                    # slot of the strip processed (or next)
        slot_strip = Array(Signal(field(ty), name=f"slot_strip{i}") for i in range(SLOTS))
        sums_ready = Signal(init=1)
        m.d.comb += self.i_sums.ready.eq(sums_ready)
        accept = self.i_sums.valid & sums_ready
        strip_done = accept & s_in.strip_end
        with m.If(strip_done):
            m.d.sync += [wslot.eq(wslot + 1), slot_strip[wslot].eq(s_in.strip)]
        a_valid = pipeline.cut(m, accept, "a_valid", reset=True)
        a_word = Signal(P * p.sum_bits)
        a_kind = Signal(2)
        a_where = Signal(data.StructLayout({"tile": field(tx), "group": field(p.G),
                                            "slot": 2}))
        with m.If(accept):
            m.d.sync += [a_kind.eq(s_in.kind), a_word.eq(s_in.sums),
                         a_where.eq(Cat(s_in.tile, s_in.group, wslot))]
        means, depth = [], 0
        for lane in range(P):
            s = a_word[lane * p.sum_bits:(lane + 1) * p.sum_bits].as_signed()
            code, depth = pipeline.mean_unit(m, s[:p.sum_value_bits].as_signed(), a_kind, p,
                                              lane)
            means.append(code)
        assert depth <= plan.MEAN_STAGES, (depth, plan.MEAN_STAGES)
        means_word = pipeline.delay(m, Cat(*means), plan.MEAN_STAGES - depth, "means")
        m_valid = pipeline.delay(m, a_valid, plan.MEAN_STAGES, "mean_valid", reset=True)
        m_where = data.View(a_where.shape(), pipeline.delay(m, a_where.as_value(),
                                                            plan.MEAN_STAGES, "mean_where"))
        pooled_w = [[Signal(8 * C, name=f"pooled_s{sl}_t{t}") for t in range(tx)]
                    for sl in range(SLOTS)]
        for sl in range(SLOTS):
            for t in range(tx):
                for g in range(p.G):
                    with m.If(m_valid & (m_where.slot == sl) & (m_where.tile == t)
                              & (m_where.group == g)):
                        m.d.sync += pooled_w[sl][t][8 * P * g:8 * P * (g + 1)].eq(means_word)
        pooled = [[[w[8 * c:8 * c + 8] for c in range(C)] for w in row] for row in pooled_w]
        hidden = [[[Signal(8, name=f"hidden_s{sl}_t{t}_{o}") for o in range(hid)]
                   for t in range(tx)] for sl in range(HSLOTS)]

        # ================= passes: lead-in, tiles, drain ================================
        running = Signal()
        phase = Signal(2)
        cnt = Signal(range(max(lead, drain) + 1))
        k_pass = Signal(2)
        strip = Signal(field(ty))            # the strip processed
        tile = Signal(field(tx))
        sc = Signal(range(B))
        gb = Signal(2)
        # the pass's facts, registers set at its start
        h_ok, e_ok = Signal(), Signal()      # a hidden row, an excite row to compute
        pbase = Signal(2)                    # pooled slot of fc1's tap 0 (row h - 1)
        hbase = Signal(range(HSLOTS))        # hidden slot of fc2's tap 0 (row e - 1)
        hw_slot = Signal(range(HSLOTS))      # hidden slot fc1 writes (row h)
        pad1, pad2 = Signal(3), Signal(3)    # taps beyond the frame, fc1 and fc2
        e_row = Signal(field(ty))

        last_strip = strip == ty - 1

        def pass_facts(s, k, slot):
            """(statements) the pass registers for pass k of strip s in pooled slot `slot`:
            h = s - 1 + k, e = s - 2 + k (pass 2: no hidden row)."""
            rows = range(ty)
            h_tab = arith.const_table([(r - 1 + kk) % HSLOTS for r in rows for kk in range(3)],
                                      s * 3 + k)
            b_tab = arith.const_table([(r - 3 + kk) % HSLOTS for r in rows for kk in range(3)],
                                      s * 3 + k)
            return [
                h_ok.eq((k != 2) & ((k != 0) | (s != 0))),
                e_ok.eq(Mux(k == 0, s >= 2, Mux(k == 1, s >= 1, 1))),
                pbase.eq(slot - 2 + k),
                hw_slot.eq(h_tab), hbase.eq(b_tab),
                # fc1's taps: rows s-2+k, s-1+k, s+k; fc2's: rows s-3+k, s-2+k, s-1+k
                pad1.eq(Cat(s + k < 2, Const(0, 1), s + k > ty - 1)),
                pad2.eq(Cat(s + k < 3, Const(0, 1), s + k > ty)),
                e_row.eq(s - 2 + k),
            ]

        in_tiles = running & (phase == TILES)
        last_cycle = running & (phase == DRAIN) & (cnt == drain - 1)
        older = Mux(gb == 2, 0, gb + 1)
        can_commit = Array(self.bank_free[b] for b in range(3))[older]
        commit = last_cycle & e_ok & can_commit
        pass_end = last_cycle & (~e_ok | can_commit)
        more = pass_end & last_strip & (k_pass != 2)
        proc_done = pass_end & ~more
        m.d.comb += [self.commit.eq(commit), self.commit_bank.eq(gb)]

        # a slot is busy from its strip's last sums until the pass of the last hidden row that
        # reads it ends: row h - 1 (tap 0) after hidden row h, and on the frame's last hidden
        # row also row h (tap 1). The sums' ready (the slot they go to is free) a cycle ahead.
        pend_next = pend + strip_done - proc_done
        frees = pass_end & h_ok
        release = Cat(*[frees & (((pbase == sl) & ~pad1[0])
                                 | ((pbase == (sl - 1) % SLOTS) & pad1[2]))
                        for sl in range(SLOTS)])
        busy_next = (busy | Mux(strip_done, Const(1, SLOTS) << wslot, 0)) & ~release
        m.d.comb += self.i_sums_ready_next.eq(~(busy_next >> (wslot + strip_done)[:2])[0])
        m.d.sync += [pend.eq(pend_next), busy.eq(busy_next),
                     sums_ready.eq(self.i_sums_ready_next)]

        start_strip = Mux(pend != 0, slot_strip[pslot], s_in.strip)
        start = ~running & ((pend != 0) | strip_done)
        with m.If(start):
            m.d.sync += [running.eq(1), phase.eq(LEAD), cnt.eq(1), k_pass.eq(0),
                         strip.eq(start_strip), *pass_facts(start_strip, Const(0, 2), pslot)]
        with m.Elif(running):
            with m.Switch(phase):
                with m.Case(LEAD):
                    with m.If(~h_ok & ~e_ok):       # nothing to do (strip 0): skip the pass
                        m.d.sync += [phase.eq(DRAIN), cnt.eq(drain - 1)]
                    with m.Elif(cnt == lead - 1):
                        m.d.sync += [phase.eq(TILES), tile.eq(0), sc.eq(0)]
                    with m.Else():
                        m.d.sync += cnt.eq(cnt + 1)
                with m.Case(TILES):
                    with m.If(sc != B - 1):
                        m.d.sync += sc.eq(sc + 1)
                    with m.Else():
                        m.d.sync += sc.eq(0)
                        with m.If(tile != tx - 1):
                            m.d.sync += tile.eq(tile + 1)
                        with m.Else():
                            m.d.sync += [phase.eq(DRAIN), cnt.eq(0)]
                with m.Default():
                    with m.If(cnt != drain - 1):
                        m.d.sync += cnt.eq(cnt + 1)
                    with m.Elif(pass_end):
                        with m.If(e_ok):
                            m.d.sync += gb.eq(Mux(gb == 2, 0, gb + 1))
                        with m.If(more):
                            m.d.sync += [phase.eq(LEAD), cnt.eq(1), k_pass.eq(k_pass + 1),
                                         *pass_facts(strip, (k_pass + 1)[:2], pslot)]
                        with m.Else():
                            m.d.sync += [running.eq(0), pslot.eq(pslot + 1)]

        # ================= issue: (layer, output, chunk) per cycle ======================
        in_fc1 = in_tiles & h_ok & (sc < hid * K1)
        in_fc2 = in_tiles & e_ok & (sc >= F2)
        o = Signal(field(max(C, hid)))
        k = Signal(field(max(K1, K2)))
        c_grp, c_lane = Signal(field(p.G)), Signal(field(P))
        kmax = Mux(in_fc2, K2 - 1, K1 - 1)
        with m.If(in_fc1 | in_fc2):
            m.d.sync += k.eq(k + 1)
            with m.If(k == kmax):
                m.d.sync += [k.eq(0), o.eq(o + 1), c_lane.eq(c_lane + 1)]
                with m.If(c_lane == P - 1):
                    m.d.sync += [c_lane.eq(0), c_grp.eq(c_grp + 1)]
        with m.If(~in_tiles | (sc == B - 1) | (sc == F2 - 1)):
            m.d.sync += [o.eq(0), k.eq(0), c_grp.eq(0), c_lane.eq(0)]
        # the weight ROMs' addresses o*K + k as counters (no multiply before the read)
        a1, a2 = Signal(range(hid * K1)), Signal(range(C * K2))
        with m.If(~in_tiles | (sc == B - 1)):
            m.d.sync += [a1.eq(0), a2.eq(0)]
        with m.Else():
            with m.If(in_fc1):
                m.d.sync += a1.eq(a1 + 1)
            with m.If(in_fc2):
                m.d.sync += a2.eq(a2 + 1)

        tag_layout = data.StructLayout({
            "valid": 1, "fc2": 1, "first": 1, "last": 1, "k": field(max(K1, K2)),
            "o": field(max(C, hid)), "tile": field(tx), "grp": field(p.G), "lane": field(P)})
        A = plan.ISSUE_TO_TREE + p.tree_levels
        tags = [Signal(tag_layout, name="tag0")]
        m.d.comb += tags[0].eq(Cat(in_fc1 | in_fc2, in_fc2, k == 0, k == kmax, k, o, tile,
                                   c_grp, c_lane))
        last_tag = p.issue_to_code + max(plan.CODE_TO_GATE, plan.HIDDEN_CODE_CYCLES)
        for i in range(1, last_tag + 1):
            tags.append(Signal(tag_layout, name=f"tag{i}"))
            m.d.sync += tags[i].eq(tags[i - 1])

        # +1: operands. Weight ROMs read at the issue (address o*K + k); the window's chunk
        # picked by an index registered at the issue, padded taps masked
        w1r, w2r = [self._rom(m, p, name).read_port() for name in ("w1", "w2")]
        m.d.comb += [w1r.addr.eq(a1), w2r.addr.eq(a2)]

        def chunks(rows, nslots, width, kk_n, zero):
            """Array over (base slot, tile, chunk) of Q codes: input i = t*width + c reads
            rows[(base + t) mod nslots][tile][c]."""
            out = []
            for b in range(nslots):
                for t in range(tx):
                    for kk in range(kk_n):
                        lanes = []
                        for q in range(Q):
                            i = kk * Q + q
                            tap, c = divmod(i, width)
                            lanes.append(rows[(b + tap) % nslots][t][c] if tap < 3 else zero)
                        out.append(Cat(*lanes))
            return Array(out)

        def masks(width, kk_n, pads):
            """Array over chunk of the Q-bit mask of lanes whose tap is padded (or past the
            inputs)."""
            return Array(Cat(*[pads[(kk * Q + q) // width] if kk * Q + q < 3 * width
                               else Const(1, 1) for q in range(Q)]) for kk in range(kk_n))

        zero8 = Const(0, 8)
        sel1 = pipeline.cut(m, (pbase * tx + tile) * K1 + k, "pooled_sel")
        sel2 = pipeline.cut(m, (hbase * tx + tile) * K2 + k, "hidden_sel")
        t1 = tags[1]
        pw = arith.wire(m, chunks(pooled, SLOTS, C, K1, zero8)[sel1], "pooled_chunk")
        hw_ = arith.wire(m, chunks(hidden, HSLOTS, hid, K2, zero8)[sel2], "hidden_chunk")
        mk1 = arith.wire(m, masks(C, K1, pad1)[t1.k], "pad_mask1")
        mk2 = arith.wire(m, masks(hid, K2, pad2)[t1.k], "pad_mask2")
        acts = [Mux(t1.fc2,
                    Mux(mk2[q], 0, arith.minus_zp(hw_[8 * q:8 * q + 8], p.zh)),
                    Mux(mk1[q], 0, arith.minus_zp(pw[8 * q:8 * q + 8], p.zx)))[:9]
                for q in range(Q)]
        act_word = pipeline.cut(m, Cat(*acts), "act_word")
        w1_word = pipeline.cut(m, w1r.data, "w1_word")
        w2_word = pipeline.cut(m, w2r.data, "w2_word")

        # +2: the layer's weights picked, the operands aligned
        wgt_word = pipeline.cut(m, Mux(tags[2].fc2, w2_word, w1_word), "wgt_word")
        act_word = pipeline.cut(m, act_word, "act_word2")
        # +3: Q products
        prods_word = pipeline.cut(m, Cat(*[
            (act_word[9 * q:9 * q + 9].as_signed() * wgt_word[8 * q:8 * q + 8].as_signed())[:17]
            for q in range(Q)]), "prods_word")
        values = [prods_word[17 * q:17 * q + 17].as_signed() for q in range(Q)]
        # +4 ...: the adder tree, a register a level; the accumulator at A
        for level in range(p.tree_levels):
            pairs = [values[i] + values[i + 1] for i in range(0, len(values) - 1, 2)]
            values = [pipeline.cut(m, v, f"tree{level}")
                      for v in pairs + values[len(pairs) * 2:]]
        f = p.frac_bits
        tA = tags[A]
        fc_roms = [self._rom(m, p, name) for name in ("fc1", "fc2")]
        bias_r = [rom.read_port() for rom in fc_roms]
        m.d.comb += [r.addr.eq(tags[A - 3].o) for r in bias_r]
        bias_w = [pipeline.cut(m, r.data[:p.acc_bits], f"bias{layer + 1}")
                  for layer, r in enumerate(bias_r)]
        bias = pipeline.cut(m, Mux(tags[A - 1].fc2, bias_w[1], bias_w[0]).as_signed(), "bias")
        acc = Signal(signed(p.acc_bits))
        total = Mux(tA.first, bias, acc) + (values[0] << f)
        acc_next = arith.wire(m, total[:p.acc_bits].as_signed(), "acc_next")
        rq_acc = Signal(signed(p.acc_bits))
        with m.If(tA.valid):
            m.d.sync += acc.eq(acc_next)
        with m.If(tA.valid & tA.last):
            m.d.sync += rq_acc.eq(acc_next)

        # A+1: the multiplier's word; A+2 ...: acc x M, padded to MUL_STAGES, then the
        # rounding shift, the zero point and the clamp
        acc2, mult, shift = pipeline.requant_operands(m, fc_roms, tags, A, rq_acc,
                                                      p.acc_bits, p.mult_bits)
        fc1, fc2 = p.ip.fc1, p.ip.fc2
        layers = tuple((int(fc.zo), int(fc.lo), int(fc.rounding) == HALF_UP)
                       for fc in (fc1, fc2))
        code, _ = pipeline.requantizer(m, acc2, mult, shift,
                                       tags[A + 2 + pipeline.MUL_STAGES].fc2, layers,
                                       p.max_shift)
        code = arith.wire(m, code, "code")
        assert A + 2 + pipeline.MUL_STAGES + pipeline.REQUANT_STAGES == p.issue_to_code
        code_reg = pipeline.cut(m, code, "code_reg")

        # the hidden code into its slot (the pass's hw_slot)
        tc = tags[p.issue_to_code + plan.HIDDEN_CODE_CYCLES]
        for sl in range(HSLOTS):
            for t in range(tx):
                for i in range(hid):
                    with m.If(tc.valid & tc.last & ~tc.fc2 & (hw_slot == sl) & (tc.tile == t)
                              & (tc.o == i)):
                        m.d.sync += hidden[sl][t][i].eq(code_reg)

        # the sigmoid ROM and the gate write
        lut = m.submodules.sigmoid_rom = memory.Memory(shape=p.gate_bits, depth=256,
                                                      init=p.gate_rom)
        lr = lut.read_port()
        te = tags[p.issue_to_code + plan.CODE_TO_GATE]
        m.d.comb += [
            lr.addr.eq(code_reg),
            self.w_en.eq(te.valid & te.last & te.fc2), self.w_bank.eq(gb),
            self.w_tile.eq(te.tile), self.w_group.eq(te.grp), self.w_lane.eq(te.lane),
            self.w_data.eq(lr.data), self.w_channel.eq(te.o),
            self.w_frame_tile.eq(e_row * tx + te.tile),
        ]
        return m
