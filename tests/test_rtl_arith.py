"""tse.rtl.arith and tse.rtl.pipeline: every hardware rounding against its tse.ref_model.numerics twin, on
random and edge-case operands (ties, extreme sums, shifts past the product width), the
pipelined ones fed a new operand every clock."""
from __future__ import annotations

import types

import numpy as np
import pytest
from amaranth import Shape, signed, unsigned

from tse.ref_model import numerics as nm
from tse.ref_model.hw_profile import reciprocal
from tse.rtl import arith, pipeline

from rtl_helpers import eval_comb, eval_pipe

MODES = {"f32": nm.F32, "half_even": nm.HALF_EVEN, "half_up": nm.HALF_UP}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("counts, bits, sum_bits", [
    ((196, 28, 49, 4), 26, None),           # 7x7 tiles with partial edges
    ((8, 4, 4, 2), 24, None),
    ((50176, 224, 224, 1), 30, None),       # a plain SE tile of 224x224
    ((196, 196, 196, 196), 26, 40),         # saturating register: sums far past 255 n
])
def test_mean_matches_numerics(mode, counts, bits, sum_bits):
    rng = np.random.default_rng(len(counts) * bits + len(mode))
    recs = [reciprocal(n, bits, f32=mode == "f32") for n in counts]
    for zx in (0, int(rng.integers(1, 255)), 255):
        p = types.SimpleNamespace(zx=zx, recip=[r for r, _ in recs],
                                  recip_shift=[s for _, s in recs], mean_rounding=MODES[mode],
                                  mean_shift_add=len({r for r, _ in recs}) == 1)
        width = sum_bits or (255 * max(counts)).bit_length() + 1
        vecs = []
        for _ in range(150):
            k = int(rng.integers(0, 4))
            n = counts[k]
            if sum_bits:
                s = int(rng.integers(-(1 << (sum_bits - 1)), 1 << (sum_bits - 1)))
            elif rng.random() < 0.4:          # ties and near-ties of S / n
                s = int(rng.integers(-zx, 256 - zx)) * n + int(rng.choice([n // 2, -(n // 2),
                                                                          n // 2 + 1, 0]))
                s = max(min(s, (255 - zx) * n), -zx * n)
            else:
                s = int(rng.integers(-zx * n, (255 - zx) * n + 1))
            vecs.append(dict(s=s, kind=k))
        got = eval_pipe({"s": signed(width), "kind": 2},
                        lambda m, s, kind: pipeline.mean(m, s, kind, p), vecs)
        for v, g in zip(vecs, got):
            k = v["kind"]
            if mode == "f32":
                want = nm.mean_hw_f32(v["s"], p.recip[k], p.recip_shift[k], zx)
            else:
                want = nm.mean_hw(v["s"], p.recip[k], p.recip_shift[k], zx, MODES[mode])
            assert g == want, (v, zx, g, want)


@pytest.mark.parametrize("half_up", [False, True])
def test_requant_matches_numerics(half_up):
    rng = np.random.default_rng(7 + half_up)
    acc_bits, mult_bits, max_shift = 48, 24, 70
    vecs = []
    for _ in range(400):
        shift = int(rng.integers(0, max_shift + 1))
        mult = int(rng.integers(1 << (mult_bits - 1), 1 << mult_bits))
        if rng.random() < 0.5:      # land near the 8-bit range, ties included
            target = int(rng.integers(-300, 300))
            acc = (target << shift) // mult + int(rng.integers(-2, 3))
            acc = max(min(acc, (1 << (acc_bits - 1)) - 1), -(1 << (acc_bits - 1)))
        else:
            acc = int(rng.integers(-(1 << (acc_bits - 1)), 1 << (acc_bits - 1)))
        zo, lo = int(rng.integers(0, 256)), int(rng.integers(0, 256))
        vecs.append(dict(acc=acc, mult=mult, shift=shift, zo=zo, lo=lo))
    # exact ties: acc * mult = (k + 1/2) 2**shift
    for k in (-3, -1, 0, 1, 2, 5):
        vecs.append(dict(acc=(2 * k + 1) << 9, mult=1 << 20, shift=30, zo=10, lo=0))
    # the floor (acc here) around the edges of pipeline.NEAR_BITS, where the saturation flags
    # take over from the narrow add: -2**9 and 2**9, with the zero point at both ends
    for floor in (*range(-516, -508), *range(-260, -252), *range(252, 260), *range(506, 516)):
        for zo, lo in ((0, 0), (255, 0), (255, 200), (0, 255)):
            vecs.append(dict(acc=floor, mult=1 << 20, shift=20, zo=zo, lo=lo))
    rounding = nm.HALF_UP if half_up else nm.HALF_EVEN

    def build(m, acc, mult, shift, zo, lo):    # the excite MAC's: multiply, then requantize
        product, n = pipeline.mul(m, acc, mult)
        late = [pipeline.delay(m, v, n) for v in (shift, zo, lo)]
        code = pipeline.requant(m, product, late[0], max_shift, late[1], late[2], half_up)
        return code, n + pipeline.REQUANT_STAGES

    got = eval_pipe({"acc": signed(acc_bits), "mult": mult_bits, "shift": 7, "zo": 8, "lo": 8},
                    build, vecs)
    for v, g in zip(vecs, got):
        lo = min(v["lo"], 255)
        want = nm.requant_hw(v["acc"], v["mult"], v["shift"], v["zo"], lo, rounding)
        assert g == want, (v, g, want)


@pytest.mark.parametrize("gate_bits, rounding", [(8, "half_even"), (8, "half_up"),
                                                 (5, "half_even")])
def test_scale_matches_numerics(gate_bits, rounding):
    rng = np.random.default_rng(gate_bits)
    for _ in range(3):
        zx, zo = int(rng.integers(0, 256)), int(rng.integers(0, 256))
        mult, shift = nm.quantize_multiplier(float(rng.uniform(0.001, 2.0)) / 256, 24)
        p = types.SimpleNamespace(
            zx=zx, zo=zo, mul_mult=mult, rounding=lambda which: MODES[rounding],
            mul_shift=(shift - (8 - gate_bits), 0) if shift >= 8 - gate_bits
            else (0, 8 - gate_bits - shift))
        vecs = [dict(x=int(rng.integers(0, 256)), g=int(rng.integers(0, 1 << gate_bits)))
                for _ in range(200)]
        vecs += [dict(x=x, g=g) for x in (0, zx, 255) for g in (0, (1 << gate_bits) - 1)]
        got = eval_comb({"x": 8, "g": gate_bits},
                        lambda m, x, g: arith.scale(m, x, g, p), vecs)
        for v, g in zip(vecs, got):
            want = nm.mul_hw(v["x"], zx, v["g"] << (8 - gate_bits), 0, mult, shift, zo,
                             MODES[rounding])
            assert g == want, (v, g, want)


@pytest.mark.parametrize("split", [False, True])
def test_round_significant_and_shift_edges(split):
    """Carries into a new leading bit, exact powers of two, the most negative value (split:
    the increment and the shift back in stages of their own)."""
    width = 40
    values = [0, 1, -1, (1 << 24) - 1, 1 << 24, (1 << 25) - 1, (1 << 25) + 1, (1 << 25) + 3,
              -(1 << 39), (1 << 39) - 1, -((1 << 26) + 2), 0x123456789, -0x123456789]
    got = eval_pipe({"v": signed(width)},
                    lambda m, v: pipeline.round_significant(m, v, 24, split=split),
                    [dict(v=v) for v in values])
    for v, g in zip(values, got):
        mm, e = nm.round_significant(v, 0, 24)
        assert g == int(mm) * 2 ** int(e), (v, g)
    shifts = [(v, s) for v in (-5, 5, -6, 6, 7, -7, -(1 << 39)) for s in (0, 1, 2, 3, 39, 45)]
    for half_up in (False, True):
        got = eval_comb({"v": signed(width), "s": unsigned(6)},
                        lambda m, v, s: arith.round_shift(m, v, s, half_up, 63),
                        [dict(v=v, s=s) for v, s in shifts])
        for (v, s), g in zip(shifts, got):
            assert g == nm.round_shift_mul(v, 1, 0, s, nm.HALF_UP if half_up else nm.HALF_EVEN)


@pytest.mark.parametrize("a_shape, b_shape", [(signed(48), unsigned(24)), (signed(18), 26),
                                              (unsigned(40), signed(35)), (signed(9), signed(8)),
                                              (signed(62), unsigned(31))])
def test_mul_in_limbs_is_exact(a_shape, b_shape):
    """pipeline.mul: products split at 17-bit limbs, extremes of both operands included."""
    a_shape, b_shape = (Shape.cast(x) for x in (a_shape, b_shape))

    def ends(shape):
        lo, hi = (-(1 << (shape.width - 1)), (1 << (shape.width - 1)) - 1) if shape.signed \
            else (0, (1 << shape.width) - 1)
        return lo, hi, [lo, hi, 0, 1, lo + 1, hi - 1]

    rng = np.random.default_rng(a_shape.width * b_shape.width)
    (alo, ahi, aends), (blo, bhi, bends) = ends(a_shape), ends(b_shape)
    vecs = [dict(a=a, b=b) for a in aends for b in bends]
    vecs += [dict(a=int(rng.integers(alo, ahi, endpoint=True)),
                  b=int(rng.integers(blo, bhi, endpoint=True))) for _ in range(300)]
    stages = []

    def build(m, a, b):
        product, n = pipeline.mul(m, a, b)
        stages.append(n)
        return product, n

    got = eval_pipe({"a": a_shape, "b": b_shape}, build, vecs)
    assert got == [v["a"] * v["b"] for v in vecs]
    # the widest product the hw profile allows (62-bit register x 31-bit M) fits MUL_STAGES
    assert 1 <= stages[0] and (stages[0] <= pipeline.MUL_STAGES
                               or max(a_shape.width, b_shape.width) > 62
                               or min(a_shape.width, b_shape.width) > 31)


@pytest.mark.parametrize("a_shape", [signed(17), unsigned(17), signed(40), signed(24)])
def test_const_mul_is_exact(a_shape):
    """pipeline.const_mul (the mean's multiply by a reciprocal the same for every tile
    kind): a times constants with long runs of ones (the signed digits' subtractions), 0,
    1, powers of two and random 26- and 30-bit values, for the operand's extremes."""
    a_shape = Shape.cast(a_shape)
    lo, hi = (-(1 << (a_shape.width - 1)), (1 << (a_shape.width - 1)) - 1) if a_shape.signed \
        else (0, (1 << a_shape.width) - 1)
    rng = np.random.default_rng(a_shape.width)
    values = [lo, hi, 0, 1, lo + 1, hi - 1] + [int(v) for v in rng.integers(lo, hi, 40)]
    consts = [0, 1, 2, 3, 1 << 25, (1 << 26) - 1, 0b1011011101111, 21399971,
              int(rng.integers(1 << 25, 1 << 26)), int(rng.integers(1 << 29, 1 << 30))]
    for c in consts:
        stages = []

        def build(m, a):
            product, n = pipeline.const_mul(m, a, c)
            stages.append(n)
            return product, n

        got = eval_pipe({"a": a_shape}, build, [dict(a=v) for v in values])
        assert got == [v * c for v in values], c
        assert stages[0] == pipeline.const_mul_stages(c)
        assert c >= 1 << 27 or stages[0] <= pipeline.MUL_STAGES     # a 26-bit reciprocal fits


def test_a_tree_of_clamp_shift_maps_is_the_chain_of_saturating_adds():
    """The saturating MAC's adder tree (pipeline.compose_clamped) equals adding in channel
    order with a clamp after every add (numerics.saturating_add), from any start value."""
    lo, hi, n = -100, 90, 5
    rng = np.random.default_rng(5)
    vecs = []
    for _ in range(400):
        xs = [int(v) for v in rng.integers(-120, 121, n)]
        vecs.append(dict(a=int(rng.integers(lo, hi + 1)),
                         **{f"x{i}": x for i, x in enumerate(xs)}))

    def build(m, a, **xs):
        maps = [(xs[f"x{i}"], lo, hi) for i in range(n)]
        while len(maps) > 1:
            pairs = [pipeline.compose_clamped(m, maps[i], maps[i + 1])
                     for i in range(0, len(maps) - 1, 2)]
            maps = pairs + maps[len(pairs) * 2:]
        s, low, high = maps[0]
        return arith.clamp(arith.wire(m, a + s), low, high)

    got = eval_comb({"a": signed(9), **{f"x{i}": signed(9) for i in range(n)}}, build, vecs)
    for v, g in zip(vecs, got):
        acc = v["a"]
        for i in range(n):
            acc = min(max(acc + v[f"x{i}"], lo), hi)
        assert g == acc, (v, g, acc)
