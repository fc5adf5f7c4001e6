"""srm_excite: squeeze, deviation, style pooling, the channel-wise 2-weight FC and the sigmoid
of every tile of an SRM unit (tse.ref_model.attention_hw.srm_excite_tile; issue 18).

Owns SRM's excite stage: the same ports as SE's excite MAC and ECA's excite (finished tile
sums in, here with their sums of squares; gates out to the gate memory; the strip's commit),
so TSEUnit swaps it in by cfg.block and keeps the line accumulator (which also sums squares
for SRM), strip buffer, gate memory and tile broadcaster. Its timing is tse.ref_model.plan's
SRM block: a strip is exactly lead-in + tiles_x * C + drain cycles (srm_latency_cycles), the
gates committed in its last cycle.

Squeeze, as the excite MAC's: P mean units turn the P sums of each completing beat into
pooled codes, MEAN_STAGES later, into the pooled bank of the strip's parity. Beside them P
deviation units (`deviation`) turn each lane's (S1, S2) into its std code, SRM_DEV_STAGES
later, into the std bank of the same parity, a register a stage:
    +1          S1, S2 and n[kind] on registers
    +2..+5      n S2 and S1^2 (pipeline.mul, padded to MUL_STAGES)
    +6          D = n S2 - S1^2 (>= 0, variance_numerator_bits)
    +7..+10     D x R[kind] (the reciprocal of n (n - 1))
    +11, +12    V = ((D R >> (s[kind] - 1)) + 1) >> 1: round half up by s[kind]
    +13..+32    the non-restoring square root, one result bit a stage (SRM_ROOT_BITS):
                R' = 4 R + v_i - (4 Q + 1) if R >= 0 else 4 R + v_i + (4 Q + 3),
                Q' = 2 Q + (R' >= 0)
    +33         the remainder's correction (R < 0: R + 2 Q + 1 = V - Q^2)
    +34         r = Q + (V - Q^2 > Q): floor(sqrt(V) + 1/2), attention_hw.isqrt_nearest
    +35..+38    r x M_std
    +39, +40    the requantizer's rounding shift and zero point (pipeline.requant)

Excite. Per tile, two window registers of C codes (pooled, std) are loaded from the banks
and slide one code a cycle, so in cycle c of the tile they hold channel c's codes. Each
cycle issues channel c (cycles after the issue):
    +1..+7      the style codes: (code - z) x m, the rounding shift and zero point, a register
                (the mean's and the deviation's requantizers side by side); the channel's
                ROM word (srm_fc: w0, w1, bias, M, s) read at +5, on a register at +7
    +8          w0 (sm - zs) and w1 (ss - zs)
    +9          their sum
    +10         bias + (sum << bias_frac_bits)
    +11..+14    acc x M[c]
    +15, +16    the rounding shift by s[c] and ze (pipeline.requant), the clamp
    +17         the code's register
    +18         the sigmoid ROM (block RAM), the gate write: plan.SRM_ISSUE_TO_GATE
The pipeline never stalls; a strip commits only once the broadcaster released the strip two
before (gate bank (s + 1) mod 3 free), holding in its last cycle until then, as the excite MAC.
"""
from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.hdl import Value
from amaranth.lib import data, memory

from . import arith, pipeline
from .squeeze import ChannelIssue, ExciteStage, Squeeze, StripControl

ROM_ADDRESS_AT = 5
"""Cycle after an issue in which the channel's srm_fc word is addressed (its data is on a
register of its own two cycles later, when the style codes are)."""


def _table(m, values, kind, name):
    """A per-kind constant: a Const when every kind has the same, else a register of the
    kind's entry (readable a cycle after `kind`)."""
    if len(set(values)) == 1:
        return Const(int(values[0]))
    return pipeline.cut(m, arith.const_table(values, kind), name)


def isqrt_nearest(m, v, rb: int):
    """floor(sqrt(v) + 1/2) of an unsigned v < 2**(2 rb) (attention_hw.isqrt_nearest):
    (root on a register, stages = rb + 2). The non-restoring square root, one result bit a
    stage: R' = 4 R + v_i - (4 Q + 1) if R >= 0 else 4 R + v_i + (4 Q + 3),
    Q' = 2 Q + (R' >= 0) (v_i: v's next two bits, from the top); then the remainder's
    correction (R < 0: R + 2 Q + 1, so R = v - Q^2), then Q + (R > Q)."""
    v = Value.cast(v)
    assert len(v) <= 2 * rb, (len(v), rb)
    rem = Const(0, signed(rb + 4))          # |R| < 2**(rb + 3)
    q = Const(0, rb)
    rest = v
    for i in range(rb - 1, -1, -1):
        pair = rest[2 * i:2 * i + 2]
        base = (rem << 2) + pair
        nxt = Mux(rem[-1], base + Cat(Const(3, 2), q), base - Cat(Const(1, 2), q))
        nxt = nxt[:rb + 4].as_signed()
        q = pipeline.cut(m, Cat(~nxt[-1], q)[:rb], "sqrt_q")
        rem = pipeline.cut(m, nxt, "sqrt_rem")
        rest = pipeline.cut(m, rest[:2 * i], "sqrt_rest") if i else None
    rem = pipeline.cut(m, Mux(rem[-1], rem + Cat(Const(1, 1), q), rem)[:rb + 4].as_signed(),
                       "sqrt_remc")
    q = pipeline.cut(m, q, "sqrt_qc")
    return pipeline.cut(m, q + (rem > q), "sqrt_root"), rb + 2


def deviation(m, s1, s2, kind, p):
    """The std code of one lane (attention_hw.srm_deviation_code) from its tile sum s1
    (signed), sum of squares s2 (unsigned) and 2-bit tile kind, all readable in the same
    cycle: (8-bit code, registers before it); the code itself is combinational (the
    requantizer's clamp), for the caller's register. See the module docstring's stages."""
    M = pipeline.MUL_STAGES
    kinds = [kind]

    def kind_at(k):                # the kind, k stages on (one register chain a lane)
        while len(kinds) <= k:
            kinds.append(pipeline.cut(m, kinds[-1], "dev_kind"))
        return kinds[k]

    a1, a2 = pipeline.cut(m, s1, "dev_s1"), pipeline.cut(m, s2, "dev_s2")
    n = _table(m, p.counts, kind_at(0), "dev_n")
    stages = 1
    ns2, k1 = pipeline.mul(m, a2, n, "dev_ns2")
    s11, k2 = pipeline.mul(m, a1, a1, "dev_s11")
    ns2 = pipeline.delay(m, ns2, M - k1, "dev_ns2_pad")
    s11 = pipeline.delay(m, s11, M - k2, "dev_s11_pad")
    stages += M
    d = pipeline.cut(m, (ns2 - s11)[:p.numerator_bits], "dev_d")
    stages += 1
    r = _table(m, p.var_recip, kind_at(stages - 1), "dev_recip")
    prod, k3 = pipeline.mul(m, d, r, "dev_dr")
    prod = pipeline.delay(m, prod, M - k3, "dev_dr_pad")
    stages += M
    # round half up by s: ((x >> (s - 1)) + 1) >> 1
    sh = arith.const_table([s - 1 for s in p.var_shift], kind_at(stages))
    t = pipeline.cut(m, prod >> sh, "dev_t")
    v = pipeline.cut(m, ((t + 1) >> 1)[:2 * p.root_bits], "dev_v")
    stages += 2
    root, k = isqrt_nearest(m, v, p.root_bits)
    stages += k
    mult, shift = p.std_requant
    prod, k4 = pipeline.mul(m, root, Const(mult), "dev_std")
    prod = pipeline.delay(m, prod, M - k4, "dev_std_pad")
    stages += M
    code = pipeline.requant(m, prod, Const(shift), shift, Const(p.zstd, 8), Const(0, 8),
                            Const(int(p.style_half_up), 1))
    return code, stages + pipeline.REQUANT_STAGES


class SrmExcite(ExciteStage):
    """Finished tile sums and sums of squares in, SRM gates out to the gate memory (see the
    module docstring); p: tse.ref_model.srm_unit_plan.SrmUnitPlan."""

    def elaborate(self, platform):
        p = self.p
        m = Module()
        P, C, tx = p.P, p.C, p.tx
        M, RQ = pipeline.MUL_STAGES, pipeline.REQUANT_STAGES
        assert 2 * M + 2 * RQ + 6 == p.drain_cycles, \
            "plan.SRM_ISSUE_TO_GATE no longer matches the pipeline's stages"

        # ============ squeeze: P mean units and P deviation units into two banks each ======
        sq = Squeeze(m, p, self.i_sums, self.i_sums_ready_next)
        ctl = StripControl(m, p, sq, self.bank_free)
        a_sq = Signal(P * p.square_bits)
        with m.If(sq.accept):
            m.d.sync += a_sq.eq(sq.s_in.squares)
        devs, depth = [], 0
        for lane in range(P):
            s1 = sq.a_word[lane * p.sum_bits:(lane + 1) * p.sum_bits].as_signed()
            s2 = a_sq[lane * p.square_bits:(lane + 1) * p.square_bits]
            code, depth = deviation(m, s1[:p.sum_value_bits].as_signed(), s2, sq.a_kind, p)
            devs.append(code)
        assert depth == p.dev_stages, (depth, p.dev_stages)
        devs_word = Cat(*devs)
        d_valid = pipeline.delay(m, sq.a_valid, p.dev_stages, "dev_valid", reset=True)
        d_where = data.View(sq.a_where.shape(), pipeline.delay(
            m, sq.a_where.as_value(), p.dev_stages, "dev_where"))
        std = [[Signal(8 * C, name=f"std_b{b}_t{t}") for t in range(tx)] for b in range(2)]
        for b in range(2):
            for t in range(tx):
                for g in range(p.G):
                    with m.If(d_valid & (d_where.bank == b) & (d_where.tile == t)
                              & (d_where.group == g)):
                        m.d.sync += std[b][t][8 * P * g:8 * P * (g + 1)].eq(devs_word)

        # ============ strip control: lead-in, tiles of C cycles, drain ==================
        iss = ChannelIssue(m, p, ctl)
        ch = iss.ch
        in_tiles, rb, gb = ctl.in_tiles, ctl.rb, ctl.gb
        m.d.comb += [self.commit.eq(ctl.commit), self.commit_bank.eq(gb)]

        # ================= the windows: channel c's pooled and std codes ==================
        wp = Signal(8 * C, name="pooled_window")
        ws = Signal(8 * C, name="std_window")
        pooled_words = Array(sq.pooled[b][t] for b in range(2) for t in range(tx))
        std_words = Array(std[b][t] for b in range(2) for t in range(tx))
        with m.If(iss.load):
            m.d.sync += [wp.eq(pooled_words[rb * tx + iss.load_tile]),
                         ws.eq(std_words[rb * tx + iss.load_tile])]
        with m.Elif(in_tiles):
            m.d.sync += [wp.eq(Cat(wp[8:], Const(0, 8))), ws.eq(Cat(ws[8:], Const(0, 8)))]

        # ================= the style codes (+7) and the channel's ROM word ================
        def style(code, z, requant, name):
            mult, shift = requant
            prod, n = pipeline.mul(m, arith.minus_zp(code, z)[:9].as_signed(), Const(mult), name)
            prod = pipeline.delay(m, prod, M - n, f"{name}_pad")
            q = pipeline.requant(m, prod, Const(shift), shift, Const(p.zs, 8), Const(0, 8),
                                 Const(int(p.style_half_up), 1))
            return pipeline.cut(m, q, f"{name}_code")

        sm = style(wp[:8], p.zx, p.mean_requant, "srm_sm")
        ss = style(ws[:8], p.zstd, p.dev_requant, "srm_ss")
        rom = p.rom_images["srm_fc"]
        fc = m.submodules.srm_fc_rom = memory.Memory(shape=rom.width, depth=rom.depth,
                                                    init=list(rom.words))
        fr = fc.read_port()
        m.d.comb += fr.addr.eq(pipeline.delay(m, ch, ROM_ADDRESS_AT, "srm_fc_addr"))
        word = pipeline.delay(m, fr.data, M + RQ + 1 - ROM_ADDRESS_AT - 1, "srm_fc_word")
        offs, fields = 0, {}
        for f in rom.fields:
            v = word[offs:offs + f.bits]
            fields[f.name] = v.as_signed() if f.signed else v
            offs += f.bits

        # ================= the FC, its requantizer, the sigmoid ROM, the gate write ========
        p0 = pipeline.cut(m, fields["w0"] * arith.minus_zp(sm, p.zs), "srm_p0")
        p1 = pipeline.cut(m, fields["w1"] * arith.minus_zp(ss, p.zs), "srm_p1")
        total = pipeline.cut(m, p0 + p1, "srm_sum")
        bias = pipeline.delay(m, fields["bias"], 2, "srm_bias")
        acc = pipeline.cut(m, bias + (total << p.frac_bits), "srm_acc")
        mult = pipeline.delay(m, fields["mult"], 3, "srm_mult")
        product, n = pipeline.mul(m, acc, mult, "srm_mul")
        assert n <= M, n
        product = pipeline.delay(m, product, M - n, "srm_mul_pad")
        shift = pipeline.delay(m, fields["shift"], 3 + M, "srm_shift")
        code = pipeline.requant(m, product, shift, p.max_fc_shift, Const(p.ze, 8), Const(0, 8),
                                Const(int(p.fc_half_up), 1))
        code_reg = pipeline.cut(m, code, "srm_code")
        self.sigmoid_gate_write(m, code_reg, ctl, iss, "srm")
        return m
