"""The hw profile's arithmetic as Amaranth expressions: rounding shifts, clamps, saturating adds,
the leading-one detector and the broadcaster's multiply (tse/rtl/pipeline.py builds the excite
MAC's long computations from these in register stages).

Each function mirrors one function of tse.ref_model.numerics and builds combinational logic from
Values (registers and pipelining are the components' business). All arithmetic is exact:
Amaranth widens every sum and product to hold its value, so the only roundings are the ones
written here, and tests/test_rtl_arith.py checks each against its numerics twin.

Every function takes the Module `m` first and puts each value used more than once on a wire
(a comb-assigned Signal): Amaranth expressions are trees, and a value reused by the next
step would otherwise be copied into every use, multiplying the size of chained roundings.

Rounding conventions (numerics.round_shift_mul): a right shift by s of a two's complement
value v floors; the bits shifted out decide the rounding: `half` is bit s-1, `sticky` is any
bit below it. above half = half & sticky, tie = half & ~sticky; half_up rounds ties up
(toward +infinity), half_even to the even quotient.
"""
from __future__ import annotations

from amaranth import Array, Cat, Const, Mux, Signal, signed, unsigned
from amaranth.hdl import Value

from tse.ref_model import numerics as nm


def wire(m, expr, name: str = "w") -> Signal:
    """expr on a comb-assigned Signal of its own shape."""
    expr = Value.cast(expr)
    sig = Signal(expr.shape(), name=name)
    m.d.comb += sig.eq(expr)
    return sig


def const_table(values, index) -> Value:
    """A small ROM of constants as a multiplexer (a constant when all entries agree)."""
    values = [int(v) for v in values]
    if len(set(values)) == 1:
        return Const(values[0])
    return Array(Const(v) for v in values)[index]


def clamp(v, lo, hi) -> Value:
    """v clamped to [lo, hi] (lo and hi may be Values); v is used three times: a wire."""
    return Mux(v < lo, lo, Mux(v > hi, hi, v))


def sat_add(m, acc, v, lo: int, hi: int) -> Value:
    """acc + v clamped to the register range [lo, hi] (numerics.saturating_add)."""
    return clamp(wire(m, acc + v, "sat_sum"), lo, hi)


def sconst(v: int) -> Const:
    """A signed constant: subtracting it keeps the result signed (unsigned - unsigned wraps
    in Amaranth)."""
    return Const(int(v), signed(max(1, int(v).bit_length()) + 1))


def minus_zp(x, zp: int) -> Value:
    """x - zero point of an unsigned code, as a signed value."""
    return Value.cast(x).as_unsigned() - sconst(zp)


def extend(v: Value, width: int) -> Value:
    """The bits of v sign- (or zero-) extended to at least `width` bits."""
    if len(v) >= width:
        return v
    fill = v[-1] if v.shape().signed else Const(0, 1)
    return Cat(v, *([fill] * (width - len(v))))


def round_shift(m, v, shift, half_up, max_shift: int | None = None) -> Value:
    """round(v / 2**shift), exact, for a signed or unsigned Value v: floor, then +1 when the
    dropped bits are above half, or a tie and (half_up, or the floor is odd).

    shift: an int, or a Value with max_shift its largest value. half_up: a bool or a 1-bit
    Value (ties up), else ties to even. numerics.round_shift_mul with m = 1, add = 0."""
    v = wire(m, v, "rs_in")
    if isinstance(shift, int):
        if shift == 0:
            return v
        bits = extend(v, shift + 1)
        half = bits[shift - 1]
        sticky = bits[:shift - 1].any() if shift > 1 else Const(0)
    else:
        shift = wire(m, shift, "rs_shift")
        bits = extend(v, max_shift + 1)
        half = (bits & Cat(*[shift == i + 1 for i in range(len(bits))])).any()
        sticky = (bits & Cat(*[shift > i + 1 for i in range(len(bits))])).any()
    # a constant shift as a slice (shift_right): `>>` keeps the width and exports the sign
    # as one concatenation input per shifted-out bit, which Icarus re-sends bit by bit
    narrow = isinstance(shift, int) and shift < len(v)
    floor = wire(m, v.shift_right(shift) if narrow else v >> shift, "rs_floor")
    return floor + (half & (sticky | half_up | floor[0]))


def bit_length(m, v) -> Value:
    """The bit length of an unsigned value (0 for 0): a leading-one detector built as a
    balanced tree (a long priority chain would be as deep as the value is wide)."""
    if len(v) == 1:
        return v[0]
    half = len(v) // 2
    lo, hi = v[:half], v[half:]
    return wire(m, Mux(hi.any(), bit_length(m, hi) + half, bit_length(m, lo)), "bitlen")


SCALE_CHUNK_BITS = 17
"""Bits of a chunk of the broadcaster's multiplier M: t (18 bits signed) times a 17-bit
unsigned chunk is one MULT18X18D."""


def scale_offset(x, p) -> Value:
    """Step 1 of scale (an add): x - zx."""
    return minus_zp(x, p.zx)


def scale_gate(xz, g) -> Value:
    """Step 2 of scale (a multiply): (x - zx) * g with the stored gate g (unsigned)."""
    return Value.cast(xz) * Value.cast(g).as_unsigned()


def scale_chunks(t, p) -> list:
    """Step 3 of scale (multiplies side by side): t times each SCALE_CHUNK_BITS chunk of M,
    least significant first."""
    mult, chunks = p.mul_mult, []
    while True:
        c = mult & ((1 << SCALE_CHUNK_BITS) - 1)
        chunks.append(Value.cast(t) * Const(c, unsigned(max(1, c.bit_length()))))
        mult >>= SCALE_CHUNK_BITS
        if not mult:
            return chunks


def scale_sum(chunks) -> Value:
    """Step 4 of scale (an add): t * M from scale_chunks' products."""
    total = Value.cast(chunks[0])
    for i, c in enumerate(chunks[1:], 1):
        total = total + (Value.cast(c) << (SCALE_CHUNK_BITS * i))
    return total


def scale_round(m, tm, p) -> Value:
    """Step 5 of scale (a rounding add): round(t * M * 2**left / 2**right) by the mul
    rounding (the left shift, when the stored gate is narrower than the shift, is wiring)."""
    right, left = p.mul_shift
    tm = Value.cast(tm)
    return round_shift(m, tm << left if left else tm, right,
                       p.rounding("mul") == nm.HALF_UP)


def scale_zero_point(q, p) -> Value:
    """Step 6 of scale (an add): + zo."""
    return Value.cast(q) + p.zo


def scale_clamp(m, q) -> Value:
    """Step 7 of scale (a clamp): to the output code, 0..255."""
    return clamp(wire(m, q, "scale_q"), 0, 255)[:8]


def scale(m, x, g, p) -> Value:
    """The tile broadcaster's product of one lane: clamp(round((x - zx) * g * M / 2**s) + zo,
    0, 255) with the stored gate g (gate_bits wide, numerics.scale / mul_hw): the steps
    above chained without registers (the broadcaster registers each one)."""
    t = wire(m, scale_gate(scale_offset(x, p), g), "scale_t")
    tm = scale_sum([wire(m, c, "scale_tm") for c in scale_chunks(t, p)])
    return scale_clamp(m, scale_zero_point(scale_round(m, tm, p), p))


__all__ = ["wire", "extend", "const_table", "clamp", "sat_add", "sconst", "minus_zp",
           "round_shift", "bit_length", "scale",
           "SCALE_CHUNK_BITS", "scale_offset", "scale_gate", "scale_chunks", "scale_sum",
           "scale_round", "scale_zero_point", "scale_clamp"]
