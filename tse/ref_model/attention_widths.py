"""Register widths of the other blocks' hw datapath (issue 18, tse.ref_model.attention_hw) and
their check against a configuration: ECA's k-tap accumulator, and SRM's sum of squares,
variance numerator and two-weight accumulator. Light (no numba): the configuration imports it.

With d = x - zero point, |d| <= 255, over a tile of n elements:
  S1 = sum d          hw.sum_bits (checked as for SE)
  S2 = sum d^2        unsigned, square_sum_bits(n) = bits of 255^2 n
  D  = n S2 - S1^2    unsigned (n^2 times the biased variance, 0 <= D <= n S2), bits of
                      255^2 n^2: at most 62 (the model's exact wide multiply), so n <= 8.4 M
  ECA acc             signed, bits of k * 255 * 128 (hw.fc2_acc_bits)
  SRM acc             signed, bits of 2 * 255 * 128 (hw.fc2_acc_bits)
"""
from __future__ import annotations

from .errors import ConfigError
from .hw_profile import CODE_SPAN, MAX_REGISTER_BITS, PRODUCT_MAX, required_bits

STD_FRAC_BITS = 12
"""Fractional bits of SRM's standard deviation (in input code units) out of the square root;
the variance is computed with twice as many."""


def square_sum_bits(n: int) -> int:
    return (CODE_SPAN ** 2 * n).bit_length()


def variance_numerator_bits(n: int) -> int:
    return (CODE_SPAN ** 2 * n * n).bit_length()


def excite_acc_bits(block: str, eca_taps: int) -> int:
    """Signed integer bits of the excite accumulator (without the bias, as for SE)."""
    products = eca_taps if block == "eca" else 2
    return (PRODUCT_MAX * products).bit_length() + 1


def check(block: str, hw, eca_taps: int, tile_counts) -> None:
    """Reject hw settings the ECA / SRM datapath does not implement or cannot hold."""
    if block == "se":
        return
    if hw.saturate:
        raise ConfigError(f"hw.saturate: True is not supported for block = {block!r} yet; "
                          "allowed: false (widths checked to never overflow)")
    n = max(tile_counts)
    need = required_bits(1, 1, n)["sum_bits"]
    if hw.sum_bits < need:
        raise ConfigError(f"hw.sum_bits: {hw.sum_bits} can overflow for tile sums of up to "
                          f"{n} elements; allowed: >= {need}")
    need = excite_acc_bits(block, eca_taps)
    if hw.fc2_acc_bits < need:
        what = f"{eca_taps} taps" if block == "eca" else "two weights a channel"
        raise ConfigError(f"hw.fc2_acc_bits: {hw.fc2_acc_bits} can overflow for the {block} "
                          f"excite ({what}); allowed: >= {need}")
    if block == "srm" and variance_numerator_bits(n) > MAX_REGISTER_BITS:
        raise ConfigError(f"tile: {n} elements need a {variance_numerator_bits(n)}-bit "
                          f"variance numerator for block = 'srm'; allowed: tiles whose "
                          f"255^2 n^2 fits {MAX_REGISTER_BITS} bits (n <= 8421504)")
