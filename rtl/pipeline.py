"""Pipelined arithmetic of the excite MAC: register cuts, wide multiplies split at the DSP
blocks, and the mean and the requantizer in register stages (issue 16: 100 MHz on an ECP5).

Owns the stage structure of the long computations. Each function builds its twin in
ref_model.numerics (tests/test_rtl_arith.py checks each), spread over register stages: `cut` puts a value on a register, and every function says how many stages it adds,
so the caller delays the tags that travel with the value by as many (`delay`). None of these
pipelines stall: the excite MAC's schedule is fixed, a value enters and leaves on fixed cycles.

Why the cuts sit where they do (ECP5, speed grade 6, about 10 ns a cycle):
  - a multiply wider than 18 x 18 is cut into 17-bit limbs, one MULT18X18D each, with a
    register on every limb product and one on their sum (synth_ecp5 would otherwise chain the
    blocks' outputs through carry chains in the same cycle);
  - rounding to 24 significant bits (float32) is magnitude + leading-one count, then the right
    shift with its rounding bits, then the increment and the shift back, then the sign: four
    stages, each one carry chain or one barrel shifter;
  - the requantizer's rounding shift by a variable amount is the shift with its half and
    sticky bits, then the increment and the zero point, then the clamp.
"""
from __future__ import annotations

from amaranth import Array, Cat, Const, Mux, Signal, signed, unsigned
from amaranth.hdl import Value

from ref_model import numerics as nm

from . import arith

F32_BITS = 24
"""Significant bits of a float32."""
LIMB_BITS = 17
"""Bits of a multiply's limb: an unsigned 17-bit limb is an 18-bit signed operand of one
MULT18X18D."""

MUL_STAGES = 2
"""Stages of `mul`: limb products, their sum."""
ROUND24_STAGES = 4
"""Stages of `round_significant` on a value wider than its significant bits."""


def cut(m, value, name: str = "cut") -> Signal:
    """value on a register of its own shape: one pipeline stage."""
    value = Value.cast(value)
    sig = Signal(value.shape(), name=name)
    m.d.sync += sig.eq(value)
    return sig


def delay(m, value, stages: int, name: str = "dly") -> Value:
    """value `stages` cycles later (a chain of registers; the value itself for 0)."""
    for i in range(stages):
        value = cut(m, value, f"{name}_d{i}")
    return value


def _limbs(v: Value) -> list[tuple[Value, int]]:
    """v as (limb, weight exponent) pairs: 17-bit unsigned limbs, the top one keeping v's
    signedness, so that sum(limb << exp) == v."""
    n = len(v)
    if n <= LIMB_BITS + 1:
        return [(v, 0)]
    out = []
    for lo in range(0, n, LIMB_BITS):
        hi = min(n, lo + LIMB_BITS)
        limb = v[lo:hi]
        if hi == n and v.shape().signed:
            limb = limb.as_signed()
        out.append((limb, lo))
    return out


def mul(m, a, b, name: str = "mul") -> Signal:
    """a * b, exact, in MUL_STAGES stages: every limb product on a register (one DSP block
    each), then their sum on a register."""
    a, b = Value.cast(a), Value.cast(b)
    terms = []
    for i, (la, ea) in enumerate(_limbs(a)):
        for j, (lb, eb) in enumerate(_limbs(b)):
            terms.append((cut(m, la * lb, f"{name}_p{i}{j}"), ea + eb))
    total = terms[0][0] << terms[0][1] if terms[0][1] else terms[0][0]
    for prod, exp in terms[1:]:
        total = total + (prod << exp)
    full = (a * b).shape()      # the exact product's width and signedness
    exact = total[:full.width]
    return cut(m, exact.as_signed() if full.signed else exact, f"{name}_sum")


def round_significant(m, v, bits: int, name: str = "r24") -> tuple[Value, int]:
    """v rounded to `bits` significant bits, ties to even (numerics.round_significant), in
    ROUND24_STAGES stages; (value, stages). A value no wider than `bits` is already exact
    and passes in 0 stages."""
    v = Value.cast(v)
    w = len(v)
    if w <= bits:
        return v, 0
    neg0 = v[-1] if v.shape().signed else Const(0)
    mag0 = arith.wire(m, Mux(neg0, -v, v)[:w], f"{name}_mag0")
    length = arith.bit_length(m, mag0)
    drop0 = Mux(length > bits, length - bits, 0)[:max(1, (w - bits).bit_length())]
    # 1: magnitude and how many bits to drop
    mag, neg, drop = cut(m, mag0, f"{name}_mag"), cut(m, neg0, f"{name}_neg"), \
        cut(m, drop0, f"{name}_drop")
    q0 = arith.wire(m, mag >> drop, f"{name}_q0")
    half = (mag & Cat(*[drop == i + 1 for i in range(w)])).any()
    sticky = (mag & Cat(*[drop > i + 1 for i in range(w)])).any()
    # 2: the kept bits and whether they round up
    q, inc = cut(m, q0[:bits + 1], f"{name}_q"), cut(m, half & (sticky | q0[0]), f"{name}_inc")
    neg, drop = cut(m, neg, f"{name}_neg2"), cut(m, drop, f"{name}_drop2")
    # 3: rounded and shifted back to the value's scale
    rounded = cut(m, ((q + inc) << drop)[:w + 1], f"{name}_rnd")
    neg = cut(m, neg, f"{name}_neg3")
    # 4: the sign
    return cut(m, Mux(neg, -rounded, rounded), f"{name}_out"), ROUND24_STAGES


def mean(m, s, kind, p) -> tuple[Value, int]:
    """The squeeze of one channel (numerics.mean_hw_f32 / mean_hw) in stages:
    (8-bit code on a register, stages). s: signed tile sum, kind: its 2-bit edge-tile kind."""
    zx, sh = p.zx, p.recip_shift
    r = p.recip
    stages = 0

    def at(value, name):                  # kind-dependent constants follow the value
        return arith.const_table(value, delay(m, kind, stages, f"{name}_kind"))

    if p.mean_rounding == nm.F32:
        s24, n = round_significant(m, s, F32_BITS, "mean_s")
        stages += n
        prod = mul(m, s24, at(r, "mean_r"), "mean_mul")
        stages += MUL_STAGES
        a24, n = round_significant(m, prod, F32_BITS, "mean_a")
        stages += n
        t = cut(m, a24 + at([zx << k for k in sh], "mean_zsh"), "mean_t")
        stages += 1
        b, n = round_significant(m, t, F32_BITS, "mean_b")
        stages += n
        kind_b = delay(m, kind, stages, "mean_kb")
        q = Array(arith.round_shift(m, b, k, False) for k in sh)[kind_b] \
            if len(set(sh)) > 1 else arith.round_shift(m, b, sh[0], False)
        return cut(m, arith.clamp(arith.wire(m, q, "mean_q"), 0, 255)[:8], "mean_code"), \
            stages + 1
    # exactly rounded: t = S R + zx 2**sh; q0 = t >> sh; the remainder against R decides
    prod = mul(m, s, at(r, "mean_r"), "mean_mul")
    stages += MUL_STAGES
    t = arith.wire(m, prod + at([zx << k for k in sh], "mean_zsh"), "mean_t")
    kind_t = delay(m, kind, stages, "mean_kt")
    q0 = Array(t >> k for k in sh)[kind_t] if len(set(sh)) > 1 else t >> sh[0]
    rem = t & arith.const_table([(1 << k) - 1 for k in sh], kind_t)
    d2 = (rem << 2) + arith.const_table([-(2 << k) for k in sh], kind_t)
    q0, d2 = cut(m, q0, "mean_q0"), cut(m, d2, "mean_d2")
    stages += 1
    rr = at(r, "mean_r2")
    if p.mean_rounding == nm.HALF_UP:
        up = d2 > -rr
    else:
        up = (d2 >= rr) | ((d2 > -rr) & q0[0])
    code = arith.clamp(arith.wire(m, q0 + up, "mean_q"), 0, 255)[:8]
    return cut(m, code, "mean_code"), stages + 1


REQUANT_STAGES = 2
"""Registers of `requant` (the code itself leaves it unregistered, to a register or a ROM
address of the caller's)."""


def requant(m, product, shift, max_shift: int, zo, lo, half_up) -> Value:
    """clamp(round(product / 2**shift) + zo, lo, 255) (numerics.requant_hw after its multiply) over REQUANT_STAGES
    registers: the shifted value with its half and sticky bits; the increment and the zero
    point; then the clamp, left combinational. shift, zo, lo, half_up must be the values of
    the product's cycle: they are delayed here."""
    v = arith.wire(m, product, "rq_in")
    bits = arith.extend(v, max_shift + 1)
    shift = arith.wire(m, shift, "rq_shift")
    half0 = (bits & Cat(*[shift == i + 1 for i in range(len(bits))])).any()
    sticky0 = (bits & Cat(*[shift > i + 1 for i in range(len(bits))])).any()
    floor = cut(m, v >> shift, "rq_floor")
    half, sticky = cut(m, half0, "rq_half"), cut(m, sticky0, "rq_sticky")
    zo, lo, half_up = (cut(m, x, f"rq_{n}") for x, n in ((zo, "zo"), (lo, "lo"),
                                                           (half_up, "half_up")))
    up = half & (sticky | half_up | floor[0])
    q = cut(m, floor + up + zo, "rq_q")
    lo = cut(m, lo, "rq_lo2")
    return arith.clamp(q, lo, 255)[:8]


def compose_clamped(m, f, g, name: str = "cmp"):
    """g after f, for clamp-shift maps (s, L, H): a -> clamp(a + s, L, H) with L <= H.

    The family is closed under composition: g(f(a)) = clamp(a + sf + sg, c(Lf + sg),
    c(Hf + sg)) where c clamps to [Lg, Hg]. A saturating add a -> clamp(a + x, lo, hi) is
    the map (x, lo, hi), so a chain of them, which is not associative as additions, is
    associative as maps: an adder tree of maps gives the chain's result exactly."""
    sf, lf, hf = f
    sg, lg, hg = g
    return (arith.wire(m, sf + sg, f"{name}_s"),
            arith.clamp(arith.wire(m, lf + sg, f"{name}_l"), lg, hg),
            arith.clamp(arith.wire(m, hf + sg, f"{name}_h"), lg, hg))
