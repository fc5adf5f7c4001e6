"""excite_mac: squeeze, fc1 + ReLU, fc2 and sigmoid of every tile (ref_model.streaming.excite_mac).

Owns the P mean units, the pooled codes of two strips, the Q-multiplier MAC with its shared
requantizer, the sigmoid ROM, and the timing of a strip: exactly
plan.excite_cycles_per_tile cycles per tile, the strip's gates committed to the gate memory
in the last cycle of its tiles_x * excite_cycles_per_tile (the model's excite latency).

Squeeze. The line accumulator hands over the P finished sums of a tile on each beat that
completes it; P mean units turn them into pooled codes (numerics.mean_hw_f32 / mean_hw) one
cycle later, into the pooled bank of the strip's parity. So the means are taken while the
strip's last pixels stream in, and the MAC only waits for the last beat's.

MAC. Both 1x1 convolutions run one output at a time with Q inputs in parallel: Q products
(9-bit x int8), an adder tree (a chain of saturating adds when hw.saturate, which is what
makes saturation bit-exact) and one accumulator loaded with the fixed-point bias. fc1 takes
hidden * ceil(C/Q) cycles, fc2 C * ceil(hidden/Q): together exactly the model's
C * ceil(hidden/Q) + hidden * ceil(C/Q). One output per chunk loop means one requantizer
(acc x M, then the rounding shift) serves both layers, and fc2's gates leave one at a time,
which is what the gate memory and its probe take.

Schedule of one tile, in cycles from its start (B = plan.excite_cycles_per_tile):
    0, 1      the last beat's sums reach the mean units, the pooled codes are written
    2 ...     fc1 issues: output o, chunk k (hidden * K1 cycles, K1 = ceil(C/Q))
    F2 ...    fc2 issues: output c, chunk k (C * K2 cycles, K2 = ceil(hidden/Q)),
              F2 = 2 + hidden*K1 - 1 + max(1, 5 - K2): the last hidden code is written 4
              cycles after its last issue (products, accumulate, multiply, round)
    ... B-1   the last gate is written 4 cycles after fc2's last issue, at the latest in
              cycle B-1; the strip commits in the last cycle of its last tile.
Pipeline of an issue: [weight ROM word (block RAM, read a cycle ahead), products] ->
[adder tree + accumulator] -> [acc x M] -> [round, zero point, clamp: hidden code, or excite
code] -> [sigmoid ROM, gate write].

Strip hand-over, as the model's excite_mac: a strip is excited as soon as its last sums
arrived and the previous strip committed; its gates go to gate bank (strip number mod 3),
which is free by then, and it commits only once the broadcaster released the strip two
before (until then the MAC holds in its last cycle; the model likewise computes a strip and
waits to write it). A pooled bank stays busy until its strip commits, so the line
accumulator waits (its sums stream is not ready) only while two strips are pending.
"""
from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from ref_model import numerics as nm

from . import arith
from .params import RtlParams, field, sums_layout


def fc2_start(p: RtlParams) -> int:
    """Cycle of a tile's first fc2 issue (see the module docstring): the plan's."""
    return p.fc2_start


def check_schedule(p: RtlParams) -> None:
    """The tile's work fits its excite_cycles_per_tile cycles: the plan's assertion."""
    p.check_schedule()


class ExciteMac(wiring.Component):
    """Finished tile sums in, gates out to the gate memory (see the module docstring)."""

    def __init__(self, p: RtlParams):
        self.p = p
        check_schedule(p)
        super().__init__({
            "i_sums": In(stream.Signature(sums_layout(p))),
            # gate writes, one gate a cycle, and the strip's commit
            "w_en": Out(1), "w_bank": Out(2), "w_tile": Out(field(p.tx)),
            "w_group": Out(field(p.G)), "w_lane": Out(field(p.P)), "w_data": Out(p.gate_bits),
            "w_channel": Out(field(p.C)), "w_frame_tile": Out(field(p.tx * p.ty)),
            "commit": Out(1), "commit_bank": Out(2),
            "bank_free": In(3),         # gate memory banks not holding a strip (GateMemory)
        })

    def elaborate(self, platform):
        p = self.p
        m = Module()
        P, C, hid, Q, tx = p.P, p.C, p.hidden, p.Q, p.tx

        # ================= squeeze: P mean units into two pooled banks =================
        wbank = Signal()                     # bank of the strip whose sums arrive
        pbusy = Signal(2)                    # bank holds a finished strip not yet excited
        bank_strip = Array(Signal(field(p.ty), name=f"bank_strip{b}") for b in range(2))
        s_in = self.i_sums.payload
        m.d.comb += self.i_sums.ready.eq(~Mux(wbank, pbusy[1], pbusy[0]))
        accept = self.i_sums.valid & self.i_sums.ready
        strip_done = accept & s_in.strip_end

        a_valid = Signal()
        # registers that hold many fields are one Signal each, sliced: Icarus runs one
        # process per register on every clock edge, and 381 of them were most of its work
        a_word = Signal(P * p.sum_bits)
        a_sums = [a_word[lane * p.sum_bits:(lane + 1) * p.sum_bits].as_signed()
                  for lane in range(P)]
        a_kind, a_tile, a_group, a_bank = (Signal(2), Signal(field(tx)), Signal(field(p.G)),
                                           Signal())
        m.d.sync += a_valid.eq(accept)
        with m.If(accept):
            m.d.sync += [a_kind.eq(s_in.kind), a_tile.eq(s_in.tile), a_group.eq(s_in.group),
                         a_bank.eq(wbank)]
            m.d.sync += a_word.eq(s_in.sums)
        with m.If(strip_done):
            m.d.sync += [wbank.eq(~wbank), bank_strip[wbank].eq(s_in.strip)]
        means = [arith.wire(m, arith.mean(m, s[:p.sum_value_bits].as_signed(), a_kind, p),
                            f"mean{lane}") for lane, s in enumerate(a_sums)]
        pooled_words = [[Signal(8 * C, name=f"pooled_b{b}_t{t}") for t in range(tx)]
                        for b in range(2)]
        pooled = [[[word[8 * c:8 * c + 8] for c in range(C)] for word in bank]
                  for bank in pooled_words]
        for b in range(2):
            for t in range(tx):
                for g in range(p.G):
                    with m.If(a_valid & (a_bank == b) & (a_tile == t) & (a_group == g)):
                        m.d.sync += pooled_words[b][t][8 * P * g:8 * P * (g + 1)].eq(
                            Cat(*means))

        # ================= strip control: exactly B cycles per tile ====================
        B = p.tile_cycles
        running = Signal()
        rb = Signal()                        # pooled bank (strip parity) the MAC works on
        gb = Signal(2)                       # gate bank: strip number mod 3
        tile = Signal(field(tx))
        sc = Signal(range(B))                # cycle within the tile
        cur_strip = Signal(field(p.ty))
        waiting = Mux(rb, pbusy[1], pbusy[0]) | (strip_done & (wbank == rb))
        start = ~running & waiting
        last_cycle = running & (sc == B - 1) & (tile == tx - 1)
        # like the model, a strip's gates become visible only once the broadcaster is done
        # with the strip two before (its bank, gb + 1 mod 3, is free)
        older = Mux(gb == 2, 0, gb + 1)
        can_commit = Array(self.bank_free[b] for b in range(3))[older]
        commit = last_cycle & can_commit
        m.d.comb += [self.commit.eq(commit), self.commit_bank.eq(gb)]
        with m.If(start):    # the start cycle is the tile's cycle 0
            m.d.sync += [running.eq(1), tile.eq(0), sc.eq(1),
                         cur_strip.eq(Mux(strip_done & (wbank == rb), s_in.strip,
                                          bank_strip[rb]))]
        with m.Elif(running):
            with m.If(sc != B - 1):
                m.d.sync += sc.eq(sc + 1)
            with m.Elif(tile != tx - 1):
                m.d.sync += [sc.eq(0), tile.eq(tile + 1)]
            with m.Elif(can_commit):         # else: hold in the last cycle
                m.d.sync += [running.eq(0), rb.eq(~rb), gb.eq(Mux(gb == 2, 0, gb + 1))]
        for b in range(2):   # a bank is busy from its strip's last sums to its commit
            with m.If(strip_done & (wbank == b)):
                m.d.sync += pbusy[b].eq(1)
            with m.If(commit & (rb == b)):
                m.d.sync += pbusy[b].eq(0)

        # ================= issue: (layer, output, chunk) per cycle ======================
        F1, F2 = 2, fc2_start(p)
        in_fc1 = running & (sc >= F1) & (sc < F1 + hid * p.K1)
        in_fc2 = running & (sc >= F2) & (sc < F2 + C * p.K2)
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
        with m.If(~running | (sc == F1 - 1) | (sc == F2 - 1)):
            m.d.sync += [o.eq(0), k.eq(0), c_grp.eq(0), c_lane.eq(0)]

        # weight ROMs with synchronous reads (block RAM): each is addressed with its
        # counter's next value, so the word of an issue is there in the cycle
        restart = ~running | (sc == F1 - 1)
        a1_next = arith.wire(m, Mux(restart, 0, Mux(in_fc1, a1 + 1, a1))[:len(a1)], "a1_next")
        a2_next = arith.wire(m, Mux(restart, 0, Mux(in_fc2, a2 + 1, a2))[:len(a2)], "a2_next")
        m.d.sync += [a1.eq(a1_next), a2.eq(a2_next)]
        w1 = m.submodules.w1_rom = memory.Memory(shape=8 * Q, depth=len(p.w1_rom), init=p.w1_rom)
        w2 = m.submodules.w2_rom = memory.Memory(shape=8 * Q, depth=len(p.w2_rom), init=p.w2_rom)
        w1r, w2r = w1.read_port(), w2.read_port()
        m.d.comb += [w1r.addr.eq(a1_next), w2r.addr.eq(a2_next)]

        # activations: Q pooled codes of chunk k of this tile, or Q hidden codes
        hidden_word = Signal(8 * hid)
        hidden = [hidden_word[8 * i:8 * i + 8] for i in range(hid)]
        pooled_chunks = Array(
            Cat(*[pooled[b][t][kk * Q + q] if kk * Q + q < C else Const(0, 8)
                  for q in range(Q)])
            for b in range(2) for t in range(tx) for kk in range(p.K1))
        hidden_chunks = Array(
            Cat(*[hidden[kk * Q + q] if kk * Q + q < hid else Const(0, 8) for q in range(Q)])
            for kk in range(p.K2))
        pw = arith.wire(m, pooled_chunks[(rb * tx + tile) * p.K1 + k], "pooled_chunk")
        hw_ = arith.wire(m, hidden_chunks[k], "hidden_chunk")

        # stage 1: Q products
        v1, l1, first1, last1 = Signal(), Signal(), Signal(), Signal()
        o1, t1, g1, n1 = Signal.like(o), Signal.like(tile), Signal.like(c_grp), Signal.like(c_lane)
        prods_word = Signal(17 * Q)
        prods = [prods_word[17 * q:17 * q + 17].as_signed() for q in range(Q)]
        products = []
        m.d.sync += [v1.eq(in_fc1 | in_fc2), l1.eq(in_fc2), first1.eq(k == 0),
                     last1.eq(k == kmax), o1.eq(o), t1.eq(tile), g1.eq(c_grp), n1.eq(c_lane)]
        for q in range(Q):
            act = Mux(in_fc2, arith.minus_zp(hw_[8 * q:8 * q + 8], p.zh),
                      arith.minus_zp(pw[8 * q:8 * q + 8], p.zx))
            wgt = Mux(in_fc2, w2r.data[8 * q:8 * q + 8], w1r.data[8 * q:8 * q + 8]).as_signed()
            products.append((act * wgt)[:17])
        m.d.sync += prods_word.eq(Cat(*products))

        # stage 2: chunk sum into the accumulator (loaded with the bias on chunk 0)
        fc_roms = []
        for layer in (0, 1):
            rom = memory.Memory(shape=p.fc_word_bits, depth=len(p.fc_rom(layer)),
                                init=p.fc_rom(layer))
            m.submodules[f"fc{layer + 1}_rom"] = rom
            fc_roms.append(rom)
        bias_r = [rom.read_port(domain="comb") for rom in fc_roms]
        m.d.comb += [r.addr.eq(o1) for r in bias_r]
        bias = Mux(l1, bias_r[1].data[:p.acc_bits], bias_r[0].data[:p.acc_bits]).as_signed()
        acc = Signal(signed(p.acc_bits))
        f = p.frac_bits
        if p.saturate:
            (lo1, hi1), (lo2, hi2) = p.acc_range(0), p.acc_range(1)
            lo, hi = Mux(l1, lo2, lo1), Mux(l1, hi2, hi1)
            total = arith.wire(m, Mux(first1, arith.clamp(arith.wire(m, bias, "bias"), lo, hi),
                                      acc), "acc_base")
            for q in range(Q):       # in channel order, saturating at every add
                total = arith.wire(m, arith.sat_add(m, total, prods[q] << f, lo, hi), "acc_q")
        else:
            chunk = arith.tree_sum(m, prods)
            total = Mux(first1, bias, acc) + (chunk << f)
        acc_next = arith.wire(m, total[:p.acc_bits].as_signed(), "acc_next")
        rq_v, rq_l, rq_acc = Signal(), Signal(), Signal(signed(p.acc_bits))
        rq_o, rq_t, rq_g, rq_n = Signal.like(o), Signal.like(tile), Signal.like(g1), Signal.like(n1)
        with m.If(v1):
            m.d.sync += acc.eq(acc_next)
        m.d.sync += rq_v.eq(v1 & last1)
        with m.If(v1 & last1):
            m.d.sync += [rq_l.eq(l1), rq_acc.eq(acc_next), rq_o.eq(o1), rq_t.eq(t1),
                         rq_g.eq(g1), rq_n.eq(n1)]

        # stage 3: acc x M (the requantizer's multiply)
        mult_r = [rom.read_port(domain="comb") for rom in fc_roms]
        m.d.comb += [r.addr.eq(rq_o) for r in mult_r]
        word = Mux(rq_l, mult_r[1].data, mult_r[0].data)
        mult = word[p.acc_bits:p.acc_bits + p.mult_bits]
        shift = word[p.acc_bits + p.mult_bits:]
        pr_v, pr_l = Signal(), Signal()
        pr = Signal(signed(p.acc_bits + p.mult_bits + 1))
        pr_s = Signal(p.shift_bits)
        pr_o, pr_t, pr_g, pr_n = Signal.like(o), Signal.like(tile), Signal.like(g1), Signal.like(n1)
        m.d.sync += [pr_v.eq(rq_v), pr_l.eq(rq_l), pr.eq(rq_acc * mult), pr_s.eq(shift),
                     pr_o.eq(rq_o), pr_t.eq(rq_t), pr_g.eq(rq_g), pr_n.eq(rq_n)]

        # stage 4: rounding shift, zero point, clamp (lower clamp at zh: fc1's fused ReLU)
        max_shift = max(int(v) for v in list(p.ip.hw_fc1_shift) + list(p.ip.hw_fc2_shift))
        half_up = Mux(pr_l, p.rounding("fc2") == nm.HALF_UP, p.rounding("fc1") == nm.HALF_UP)
        code = arith.wire(m, arith.requant(m, pr, pr_s, max_shift, Mux(pr_l, p.ze, p.zh),
                                           Mux(pr_l, 0, p.zh), half_up), "code")
        for i in range(hid):
            with m.If(pr_v & ~pr_l & (pr_o == i)):
                m.d.sync += hidden[i].eq(code)
        e_v, e_code = Signal(), Signal(8)
        e_o, e_t, e_g, e_n = Signal.like(o), Signal.like(tile), Signal.like(g1), Signal.like(n1)
        m.d.sync += [e_v.eq(pr_v & pr_l), e_code.eq(code), e_o.eq(pr_o), e_t.eq(pr_t),
                     e_g.eq(pr_g), e_n.eq(pr_n)]

        # stage 5: sigmoid ROM and the gate write
        lut = m.submodules.sigmoid_rom = memory.Memory(shape=p.gate_bits, depth=256,
                                                      init=p.gate_rom)
        lr = lut.read_port(domain="comb")
        m.d.comb += [
            lr.addr.eq(e_code),
            self.w_en.eq(e_v), self.w_bank.eq(gb), self.w_tile.eq(e_t),
            self.w_group.eq(e_g), self.w_lane.eq(e_n), self.w_data.eq(lr.data),
            self.w_channel.eq(e_o), self.w_frame_tile.eq(cur_strip * tx + e_t),
        ]
        return m
