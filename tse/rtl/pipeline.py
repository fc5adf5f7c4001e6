"""Pipelined arithmetic of the excite MAC: register cuts, wide multiplies split at the DSP
blocks, and the mean and the requantizer in register stages (issue 16: 100 MHz on an ECP5).

Owns the stage structure of the long computations. Each function builds its twin in
tse.ref_model.numerics (tests/test_rtl_arith.py checks each), spread over register stages: `cut`
puts a value on a register, and every function says how many stages it adds, so the caller
delays the tags that travel with the value by as many (`delay`). None of these pipelines
stall: the excite MAC's schedule is fixed, a value enters and leaves on fixed cycles.

Why the cuts sit where they do (ECP5, speed grade 6, 10 ns a cycle, of which routing takes
about two thirds after place and route):
  - a multiply wider than 18 x 18 is cut into 17-bit limbs, one MULT18X18D each, with a
    register on every limb product and on every level of the adder tree that sums them
    (synth_ecp5 would otherwise chain the blocks' outputs through carry chains in one cycle);
  - rounding to 24 significant bits (float32) is magnitude, then how many bits to drop (as a
    thermometer of OR trees, not a leading-one detector's adders), then the kept bits and
    their rounding bit (one-hot selects), then the increment and the shift back, then the
    sign: five stages, each about one carry chain or one selection;
  - the requantizer's rounding shift by a variable amount is the shift with its half and
    sticky bits, then the increment and the zero point, then the clamp.
"""
from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.hdl import Value

from tse.ref_model import numerics as nm
from tse.ref_model import plan

from . import arith

F32_BITS = 24
"""Significant bits of a float32."""
LIMB_BITS = 17
"""Bits of a multiply's limb: an unsigned 17-bit limb is an 18-bit signed operand of one
MULT18X18D."""

MUL_STAGES = 4
"""Stages of `mul` at most (limb products, then an adder tree of up to 8 of them, a level a
stage: a 62-bit register times a 31-bit multiplier, the widest the hw profile allows);
callers that need a fixed schedule pad to it."""
ROUND24_STAGES = 5
"""Stages of `round_significant` on a value wider than its significant bits."""
REQUANT_STAGES = 2
"""Registers of `requant` (the clamp after them is left combinational)."""


def cut(m, value, name: str = "cut", reset: bool = False) -> Signal:
    """value on a register of its own shape: one pipeline stage. Data registers have no
    reset (reset=True for a valid flag): a reset would reach thousands of flip-flops and,
    with an enable, cost a LUT in front of each."""
    value = Value.cast(value)
    sig = Signal(value.shape(), name=name, reset_less=not reset)
    m.d.sync += sig.eq(value)
    return sig


def delay(m, value, stages: int, name: str = "dly", reset: bool = False) -> Value:
    """value `stages` cycles later (a chain of registers; the value itself for 0)."""
    for i in range(stages):
        value = cut(m, value, f"{name}_d{i}", reset)
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


def mul(m, a, b, name: str = "mul") -> tuple[Signal, int]:
    """a * b, exact: (product on a register, stages). Every limb product on a register (one
    DSP block each), then their sum as an adder tree with a register on every level."""
    a, b = Value.cast(a), Value.cast(b)
    full = (a * b).shape()      # the exact product's width and signedness
    terms = []
    for i, (la, ea) in enumerate(_limbs(a)):
        for j, (lb, eb) in enumerate(_limbs(b)):
            terms.append(cut(m, (la * lb) << (ea + eb), f"{name}_p{i}{j}"))
    stages = 1
    while len(terms) > 1:
        pairs = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        terms = [cut(m, v, f"{name}_t{stages}") for v in pairs + terms[len(pairs) * 2:]]
        stages += 1
    exact = terms[0][:full.width]             # wiring: the value fits the exact width
    return (exact.as_signed() if full.signed else exact), stages


def naf_digits(c: int) -> list[tuple[int, int]]:
    """The non-adjacent form of c >= 0: (sign, exponent) pairs with c = sum(sign 2**exp),
    no two exponents adjacent (the fewest nonzero digits of any signed-digit form)."""
    out, k = [], 0
    while c:
        if c & 1:
            d = 2 - (c & 3)            # +1 when c = 1 mod 4, -1 when c = 3 mod 4
            out.append((d, k))
            c -= d
        c >>= 1
        k += 1
    return out


def const_mul_stages(c: int) -> int:
    """Stages of const_mul(m, a, c): one per level of its adder tree, at least one."""
    return max(1, (len(naf_digits(c)) - 1).bit_length())


def const_mul(m, a, c: int, name: str = "cmul") -> tuple[Signal, int]:
    """a * c for a constant c >= 0, exact, without a multiplier: the shifted copies of a
    for c's signed digits (non-adjacent form) summed by an adder tree with a register on
    every level; (product on a register, const_mul_stages(c)). A register -> DSP block ->
    register path is 4.45 ns of logic and two trips to and from the DSP column (5.5-5.9 ns
    of routing on the default unit); a level of this tree is one carry chain."""
    a = Value.cast(a)
    full = (a * Const(c)).shape()
    terms = [(a << k) if d > 0 else -(a << k) for d, k in naf_digits(c)] or [Const(0)]
    stages = 0
    while True:
        pairs = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        terms = [cut(m, v, f"{name}_t{stages}") for v in pairs + terms[len(pairs) * 2:]]
        stages += 1
        if len(terms) == 1:
            break
    exact = terms[0][:full.width]
    return (exact.as_signed() if full.signed else exact), stages


def round_significant(m, v, bits: int, name: str = "r24", add=None,
                      split: bool = False) -> tuple[Value, int]:
    """v rounded to `bits` significant bits, ties to even (numerics.round_significant), in
    ROUND24_STAGES stages, or one more with split (the increment and the shift back on
    registers of their own, for a caller with stages to spare); (value, stages).
    `add(stages)`, if given, is a value added in the last stage (given how many stages
    precede it, so it can be delayed to match). A value no wider than `bits` is already
    exact: 0 stages, or 1 for the add."""
    v = Value.cast(v)
    w = len(v)
    if w <= bits:
        return (cut(m, v + add(0), f"{name}_add"), 1) if add else (v, 0)
    # 1: sign and magnitude (|v| <= 2**(w-1) fits w bits)
    neg = cut(m, v[-1] if v.shape().signed else Const(0), f"{name}_neg1")
    mag = cut(m, Mux(v[-1], -v, v)[:w] if v.shape().signed else v, f"{name}_mag")
    # 2: how many bits to drop, as a thermometer: past[d - 1] = |v| has more than bits + d - 1
    # significant bits (OR trees side by side, not a leading-one detector's adder chain)
    n_drop = w - bits
    past = cut(m, Cat(*[mag[bits + d - 1:].any() for d in range(1, n_drop + 1)]),
               f"{name}_past")
    mag, neg = cut(m, mag, f"{name}_mag2"), cut(m, neg, f"{name}_neg2")
    # 3: the kept bits and whether they round up, selected by the one-hot drop
    ext = Cat(past, Const(0, 1))
    hot = [~past[0]] + [past[d - 1] & ~ext[d] for d in range(1, n_drop + 1)]
    q0 = arith.wire(m, Cat(*[
        Cat(*[hot[d] & (mag[d + i] if d + i < w else Const(0, 1)) for d in range(n_drop + 1)]).any()
        for i in range(bits + 1)]), f"{name}_q0")
    half = Cat(*[hot[d] & mag[d - 1] for d in range(1, n_drop + 1)]).any()
    sticky = Cat(*[hot[d] & mag[:d - 1].any() for d in range(2, n_drop + 1)]).any() \
        if n_drop >= 2 else Const(0, 1)
    q = cut(m, q0, f"{name}_q")
    inc = cut(m, half & (sticky | q0[0]), f"{name}_inc")
    hot = cut(m, Cat(*hot), f"{name}_hot")
    neg = cut(m, neg, f"{name}_neg3")
    # 4: rounded and shifted back to the value's scale (split: the increment a stage of its
    # own; in one stage, a carry chain then the one-hot shift's AND-OR trees, was the
    # default unit's out-of-context critical path, 10.44 ns, 7.65 of it routing)
    up = arith.wire(m, q + inc, f"{name}_up")
    n_stages = ROUND24_STAGES
    if split:
        up, hot, neg = cut(m, up, f"{name}_up"), cut(m, hot, f"{name}_hot4"), \
            cut(m, neg, f"{name}_neg35")
        n_stages += 1
    rounded = cut(m, Cat(*[
        Cat(*[hot[d] & up[i - d] for d in range(n_drop + 1) if 0 <= i - d < len(up)]).any()
        for i in range(w + 1)]), f"{name}_rnd")
    neg = cut(m, neg, f"{name}_neg4")
    # 5: the sign, and the add
    if add:
        extra = add(n_stages - 1)
        out = Mux(neg, extra - rounded, extra + rounded)
    else:
        out = Mux(neg, -rounded, rounded)
    return cut(m, out, f"{name}_out"), n_stages


def mean_mul(m, s, r, shift_add: bool) -> tuple[Value, int]:
    """The mean's sum x reciprocal: with shift_add (p.mean_shift_add: one reciprocal for
    every tile kind, r that int) by const_mul, else mul (DSP blocks; r a register). A
    constant never sits on a register at a multiplier: Yosys keeps a flip-flop with a
    constant input and another initial value and merges it with its likes, and one such
    register fed the multipliers of all P mean units and the requantizer's across the die
    (the default unit's critical path out of context, 10.3-10.8 ns). MEAN_STAGES allows
    either form: a reciprocal below 2**31 has at most 16 signed digits, MUL_STAGES levels."""
    if shift_add:
        product, n = const_mul(m, s, r, "mean_cmul")
        assert n <= MUL_STAGES, (r, n)
        return product, n
    return mul(m, s, r, "mean_mul")


MEAN_UNIT = "mean"
"""Name prefix of the mean units' submodules (`mean0`, `mean1`, ... one per lane): the
mutation campaign proves a mutant of one alone (tse.sim.mean_check)."""


def mean_unit(m, s, kind, p, lane: int) -> tuple[Signal, int]:
    """`mean` as a submodule of its own, MEAN_UNIT + str(lane), with ports s, kind and code:
    (code, registers before it). The same logic; the hierarchy lets a formal check take one
    mean unit alone, a pure function of its last inputs."""
    sub = Module()
    s_in = Signal(Value.cast(s).shape(), name="s")
    kind_in = Signal(2, name="kind")
    code = Signal(8, name="code")
    value, depth = mean(sub, s_in, kind_in, p)
    sub.d.comb += code.eq(value)
    m.submodules[f"{MEAN_UNIT}{lane}"] = sub
    m.d.comb += [s_in.eq(s), kind_in.eq(kind)]
    return code, depth


def mean_depth(p) -> int:
    """Registers before a mean unit's code (what mean_unit returns with it), from a build
    of its logic alone."""
    from amaranth import signed
    from amaranth.hdl import Fragment

    m = Module()
    depth = mean(m, Signal(signed(p.sum_value_bits)), Signal(2), p)[1]
    Fragment.get(m, None)           # elaborated, as a module must be
    return depth


def mean(m, s, kind, p) -> tuple[Value, int]:
    """The squeeze of one channel (numerics.mean_hw_f32 / mean_hw) in stages: (8-bit code,
    registers before it); the code itself is combinational, for the caller's register.
    s: signed tile sum, kind: its 2-bit edge-tile kind."""
    zx, sh, r = p.zx, p.recip_shift, p.recip
    stages = 0

    def at(values, extra=0):     # a kind-dependent constant in the cycle `extra` stages on
        return arith.const_table(values, delay(m, kind, stages + extra, "mean_kind"))

    def recip():                 # the reciprocal at the multiply, `stages` on: a constant
        if p.mean_shift_add:     # (one for every kind), else the kind's, on a register
            return int(r[0])
        return cut(m, arith.const_table(r, delay(m, kind, stages - 1, "mean_kind")),
                   "mean_recip")

    # Both operands of the multiply come from registers of the mean unit's own. A sum no
    # wider than a float32's significand gets a register of its own in front (the deepest
    # form, the float32 rounding, has its output register there): the excite MAC's input
    # word feeds all P mean units, and its route to the multipliers was the default unit's
    # critical path out of context (seed 2, 10.1 ns, mostly routing). MEAN_STAGES counts the
    # deepest form, so the schedule does not change.
    zsh = [zx << k for k in sh]
    if p.mean_rounding == nm.F32:
        s24, n = round_significant(m, s, F32_BITS, "mean_s")
        if n == 0:
            s24, n = cut(m, s24, "mean_s_in"), 1
        stages += n
        prod, n = mean_mul(m, s24, recip(), p.mean_shift_add)
        stages += n
        # both roundings split where MEAN_STAGES (the deepest form) leaves two stages spare
        split = stages + 2 * (ROUND24_STAGES + 1) + 1 <= plan.MEAN_STAGES
        t, n = round_significant(m, prod, F32_BITS, "mean_a", add=lambda k: at(zsh, k),
                                 split=split)
        stages += n
        b, n = round_significant(m, t, F32_BITS, "mean_b", split=split)
        stages += n
        kind_b = delay(m, kind, stages, "mean_kb")
        q = Array(arith.round_shift(m, b, k, False) for k in sh)[kind_b] \
            if len(set(sh)) > 1 else arith.round_shift(m, b, sh[0], False)
        q = cut(m, q, "mean_q")        # the rounding add and the clamp's compares apart
        return arith.clamp(q, 0, 255)[:8], stages + 1
    # exactly rounded: t = S R + zx 2**sh; q0 = t >> sh; the remainder against R decides
    s = cut(m, s, "mean_s_in")
    stages += 1
    prod, n = mean_mul(m, s, recip(), p.mean_shift_add)
    stages += n
    t = cut(m, prod + at(zsh), "mean_t")
    stages += 1
    kind_t = delay(m, kind, stages, "mean_kt")
    q0 = Array(t >> k for k in sh)[kind_t] if len(set(sh)) > 1 else t >> sh[0]
    rem = t & arith.const_table([(1 << k) - 1 for k in sh], kind_t)
    d2 = (rem << 2) + arith.const_table([-(2 << k) for k in sh], kind_t)
    q0, d2 = cut(m, q0, "mean_q0"), cut(m, d2, "mean_d2")
    stages += 1
    rr = at(r)
    if p.mean_rounding == nm.HALF_UP:
        up = d2 > -rr
    else:
        up = (d2 >= rr) | ((d2 > -rr) & q0[0])
    return arith.clamp(arith.wire(m, q0 + up, "mean_q"), 0, 255)[:8], stages


NEAR_BITS = 10
"""Bits of the requantizer's floor its add and clamp use (signed: -512..511); the rest only
says whether the code saturates."""


REQUANTIZER = "requantizer"
"""Name of the requantizer's submodule (acc x M, then `requant`; one per excite MAC): the
mutation campaign proves a mutant of it alone (tse.sim.requant_check)."""


def requant_operands(m, fc_roms, tags, a: int, rq_acc, acc_bits: int, mult_bits: int):
    """The requantizer's operands for the accumulator of cycle a (SE's excite MAC and the 3x1
    excite's): the multiplier's words (bias | M | shift) read from the fc ROMs at a - 1 onto
    registers, the layer's word picked onto a register at a + 1 (a multiply's operand comes
    from a flip-flop, no multiplexer between: the layer flag's mux before the multiply was
    the default unit's out-of-context critical path, 9.8 ns), the accumulator onto a register
    beside it. tags[i]: the pipeline's tag of cycle i (its .o, the output index, and .fc2,
    the layer). Returns (acc, M, shift), all of cycle a + 2."""
    mult_r = [rom.read_port() for rom in fc_roms]
    m.d.comb += [r.addr.eq(tags[a - 1].o) for r in mult_r]
    words = [cut(m, r.data, f"rq_word{layer + 1}") for layer, r in enumerate(mult_r)]
    word = cut(m, Mux(tags[a + 1].fc2, words[1], words[0]), "rq_word")
    acc2 = cut(m, rq_acc, "rq_acc2")
    return acc2, word[acc_bits:acc_bits + mult_bits], word[acc_bits + mult_bits:]


def requantizer(m, acc, mult, shift, layer, layers, max_shift: int) -> tuple[Signal, int]:
    """acc x M in limbs padded to MUL_STAGES, then `requant`, as a submodule of its own
    (REQUANTIZER) with ports acc, mult, shift (of one cycle), layer (the layer flag of the
    product's cycle, MUL_STAGES later) and code: (code, registers before it, MUL_STAGES +
    REQUANT_STAGES). layers: (zo, lo, half_up) of fc1 and of fc2, constants. The hierarchy
    lets a formal check take the requantizer alone, a pure function of its inputs."""
    sub = Module()
    ports = [Signal(Value.cast(v).shape(), name=n)
             for v, n in ((acc, "acc"), (mult, "mult"), (shift, "shift"), (layer, "layer"))]
    acc_in, mult_in, shift_in, layer_in = ports
    code = Signal(8, name="code")
    product, n = mul(sub, acc_in, mult_in, "rq_mul")
    assert n <= MUL_STAGES, n
    product = delay(sub, product, MUL_STAGES - n, "rq_pad")
    late = delay(sub, shift_in, MUL_STAGES, "rq_shift")
    (z1, lo1, h1), (z2, lo2, h2) = layers
    sub.d.comb += code.eq(requant(sub, product, late, max_shift, Mux(layer_in, z2, z1),
                                  Mux(layer_in, lo2, lo1), Mux(layer_in, h2, h1)))
    m.submodules[REQUANTIZER] = sub
    m.d.comb += [port.eq(v) for port, v in zip(ports, (acc, mult, shift, layer))]
    return code, MUL_STAGES + REQUANT_STAGES


def requant(m, product, shift, max_shift: int, zo, lo, half_up) -> Value:
    """clamp(round(product / 2**shift) + zo, lo, 255) (numerics.requant_hw after its
    multiply) over REQUANT_STAGES registers: the shifted value with its half and sticky bits;
    the increment and the zero point; then the clamp, left combinational. shift, zo, lo and
    half_up must be the values of the product's cycle: they are delayed here."""
    v = arith.wire(m, product, "rq_in")
    bits = arith.extend(v, max_shift + 1)
    shift = arith.wire(m, shift, "rq_shift")
    # the decoders named: a mutation campaign picks a term of them (tests/test_mutate.py)
    half_at = arith.wire(m, Cat(*[shift == i + 1 for i in range(len(bits))]), "rq_half_at")
    sticky_at = arith.wire(m, Cat(*[shift > i + 1 for i in range(len(bits))]), "rq_sticky_at")
    half0 = (bits & half_at).any()
    sticky0 = (bits & sticky_at).any()
    floor = cut(m, v >> shift, "rq_floor")
    half, sticky = cut(m, half0, "rq_half"), cut(m, sticky0, "rq_sticky")
    zo, lo, half_up = (cut(m, x, f"rq_{n}") for x, n in ((zo, "zo"), (lo, "lo"),
                                                           (half_up, "half_up")))
    up = half & (sticky | half_up | floor[0])
    lo = cut(m, lo, "rq_lo2")
    if len(floor) <= NEAR_BITS:
        return arith.clamp(cut(m, floor + up + zo, "rq_q"), lo, 255)[:8]
    # The add and the clamp on NEAR_BITS of the floor, plus two flags: beyond them the
    # increment (0, 1) and the zero point (0..255) cannot bring the code back into range.
    # On the product's whole width both were carry chains of 38 cells, the out-of-context
    # critical path after the hidden word's register (issue 16).
    top = floor[NEAR_BITS - 1:]
    over = cut(m, ~floor[-1] & top.any(), "rq_over")        # floor >= 2**(NEAR_BITS-1)
    under = cut(m, floor[-1] & ~top.all(), "rq_under")      # floor < -2**(NEAR_BITS-1)
    q = cut(m, floor[:NEAR_BITS].as_signed() + up + zo, "rq_q")
    return Mux(over, 255, Mux(under, lo, arith.clamp(q, lo, 255)))[:8]


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
