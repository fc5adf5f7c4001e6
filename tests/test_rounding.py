"""tse.ref_model.rounding's half-even rounding to N bits (round_half_even_shift), the one
definition quantize_multiplier, hw_profile.reciprocal and round_significant share, against
exact rational rounding (Python's round of a Fraction: ties to even)."""
from __future__ import annotations

import random
from fractions import Fraction

import numpy as np

from tse.ref_model.rounding import round_half_even_shift, round_half_even_shift_jit


def _cases(seed: int, n: int, bits: int):
    rng = random.Random(seed)
    for _ in range(n):
        drop = rng.randrange(1, min(bits, 62))
        v = rng.randrange(-(1 << bits), 1 << bits)
        if rng.random() < 0.4:                   # exactly half: the tie
            v = (v >> drop << drop) + (1 << (drop - 1))
        yield v, drop


def test_half_even_matches_exact_rounding():
    for v, drop in _cases(1, 20000, 120):        # Python integers, wider than 64 bits
        got = round_half_even_shift(v, drop)
        assert got == round(Fraction(v, 1 << drop)) and type(got) is int, (v, drop)
    assert [round_half_even_shift(v, 1) for v in (-3, -1, 1, 3, 5)] == [-2, 0, 0, 2, 2]


def test_half_even_jitted_matches_exact_rounding():
    for v, drop in _cases(2, 5000, 62):          # int64, as the jitted callers use it
        got = round_half_even_shift_jit(np.int64(v), np.int64(drop))
        assert got == round(Fraction(v, 1 << drop)), (v, drop)
