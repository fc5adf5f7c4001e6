"""eca_excite: squeeze, the k-tap convolution across channels and the sigmoid of every tile of
an ECA unit (tse.ref_model.attention_hw.eca_excite_tile; issue 18).

Owns ECA's excite stage: the same ports as SE's excite MAC (finished tile sums in, gates out
to the gate memory, the strip's commit), so TSEUnit swaps one for the other by cfg.block and
keeps the line accumulator, strip buffer, gate memory and tile broadcaster. Its timing is
tse.ref_model.plan's ECA block: a strip is exactly lead-in + tiles_x * C + drain cycles
(eca_latency_cycles), the gates committed in its last cycle.

Squeeze, as the excite MAC's: P mean units (tse/rtl/pipeline.mean) turn the P sums of each
completing beat into pooled codes, MEAN_STAGES later, into the pooled bank of the strip's
parity; a bank stays busy from its strip's last sums to its commit.

Filter. Per tile, a window register of C + k - 1 codes is loaded with the tile's pooled codes
between (k - 1) / 2 zero-point codes at each end (the zero padding: a padded tap adds 0) and
slides one code a cycle, so in cycle c of the tile it holds pooled[c - (k-1)/2 ..
c + (k-1)/2]. Each cycle issues output channel c (cycles after the issue):
    +1          the k products tap[t] (code - zx), taps constant (the vectors' integer taps)
    +2..+1+L    the adder tree, a register on every level (L = plan.eca_tree_levels)
    then        acc x M (pipeline.mul, padded to MUL_STAGES), the rounding shift and zero
                point (pipeline.requant: fc2's rounding, no lower clamp), the code's register,
                the sigmoid ROM (block RAM), the gate write: plan.ECA_TREE_TO_GATE.
The pipeline never stalls; a strip commits only once the broadcaster released the strip two
before (gate bank (s + 1) mod 3 free), holding in its last cycle until then, as the excite MAC.
"""
from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Signal

from tse.ref_model import numerics as nm
from tse.ref_model import plan

from . import arith, pipeline
from .squeeze import ChannelIssue, ExciteStage, Squeeze, StripControl


class EcaExcite(ExciteStage):
    """Finished tile sums in, ECA gates out to the gate memory (see the module docstring);
    p: tse.ref_model.eca_unit_plan.EcaUnitPlan."""

    def elaborate(self, platform):
        p = self.p
        m = Module()
        C, tx, k = p.C, p.tx, p.k
        assert (pipeline.MUL_STAGES + pipeline.REQUANT_STAGES + 2 == plan.ECA_TREE_TO_GATE), \
            "plan.ECA_TREE_TO_GATE no longer matches the pipeline's stages"

        # ================= squeeze: P mean units into two pooled banks =================
        sq = Squeeze(m, p, self.i_sums, self.i_sums_ready_next)
        ctl = StripControl(m, p, sq, self.bank_free)

        # ============ strip control: lead-in, tiles of C cycles, drain ==================
        iss = ChannelIssue(m, p, ctl)
        load, load_tile = iss.load, iss.load_tile
        in_tiles, rb, gb = ctl.in_tiles, ctl.rb, ctl.gb
        m.d.comb += [self.commit.eq(ctl.commit), self.commit_bank.eq(gb)]

        # ================= the sliding window and the k products ========================
        half = (k - 1) // 2
        pad = Cat(*[Const(p.zx, 8)] * half) if half else Const(0, 0)
        win = Signal(8 * (C + k - 1), name="window")
        words = Array(sq.pooled[b][t] for b in range(2) for t in range(tx))
        with m.If(load):
            m.d.sync += win.eq(Cat(pad, words[rb * tx + load_tile], pad))
        with m.Elif(in_tiles):
            m.d.sync += win.eq(Cat(win[8:], Const(p.zx, 8)))
        prods = []
        for t, tap in enumerate(p.taps):
            d = arith.minus_zp(win[8 * t:8 * t + 8], p.zx)[:9].as_signed()
            prods.append(pipeline.cut(m, d * arith.sconst(tap), f"eca_prod{t}"))
        values = prods
        for level in range(p.tree_levels):
            pairs = [values[i] + values[i + 1] for i in range(0, len(values) - 1, 2)]
            values = [pipeline.cut(m, v, f"eca_tree{level}")
                      for v in pairs + values[len(pairs) * 2:]]
        acc = values[0]
        assert len(values) == 1

        # ================= requantizer, sigmoid ROM, gate write ===========================
        product, n = pipeline.mul(m, acc, Const(p.mult), "eca_mul")
        assert n <= pipeline.MUL_STAGES, n
        product = pipeline.delay(m, product, pipeline.MUL_STAGES - n, "eca_mul_pad")
        code = pipeline.requant(m, product, Const(p.shift), p.shift, Const(p.ze, 8),
                                Const(0, 8), Const(int(p.rounding("fc2") == nm.HALF_UP), 1))
        code_reg = pipeline.cut(m, code, "eca_code")
        self.sigmoid_gate_write(m, code_reg, ctl, iss, "eca")
        return m
