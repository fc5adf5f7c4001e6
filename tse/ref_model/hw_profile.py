"""The widths of the hw numerics profile: what an integer datapath of the TSE unit is built from.

Every register, multiplier and rounding of the hw profile is a field here, so the RTL, the
integer model and the width sweeps read one object. The profile itself (each stage's
arithmetic) is tse.ref_model.numerics; docs/numerics.md explains both.

Registers (all two's complement unless noted):
  - tile sum       `sum_bits`-bit accumulator of (x - zero point), one per (tile column, channel)
  - mean           sum x R[n] with R[n] an unsigned `reciprocal_bits`-bit reciprocal of the
                   tile's element count n (normalised: 2**(bits-1) <= R[n] <= 2**bits),
                   rounded exactly (half_up, half_even: the reciprocal must be wide enough
                   for the tile, checked) or as PyTorch's float32 does (f32: R[n] is
                   f32(1/n), >= 24 bits, and the product and the zero point's sum are
                   rounded to 24 significant bits before the final rounding)
  - fc1, fc2       accumulators of `fc1_acc_bits` / `fc2_acc_bits` integer bits plus
                   `bias_frac_bits` fractional bits (the bias is loaded into them first, as a
                   fixed-point value in accumulator units)
  - requantizers   (acc * M + round) >> s with an unsigned M of `*_multiplier_bits` bits,
                   rounding half_up or half_even, then the zero point and the 8-bit clamp
  - gate           `gate_bits` bits kept from the 8-bit gate table (sigmoid or hard sigmoid): each entry rounded
                   (half up) to a multiple of 2**(8 - gate_bits), clamped to the largest
                   gate_bits-bit code; the gate memory and the broadcaster's multiplier
                   input are gate_bits wide (8: the table as it is)
  - saturate       False: a width that can overflow for the configuration's tile size and
                   channel count is a ConfigError. True: any width is allowed; accumulators
                   saturate at their range and the model counts saturated values per stage.
  - exact_mean     True: reciprocal_bits must be wide enough for the mean to be what
                   mean_rounding promises (an exactly rounded mean for half_up/half_even, f32(1/n)
                   itself for f32); a ConfigError otherwise. False: any reciprocal_bits; a
                   narrower R[n] (round(2**shift / n), or f32(1/n) rounded half-even to
                   reciprocal_bits significant bits) gives a mean that can be an LSB off: less
                   accurate hardware, as the width sweeps evaluate it.

The default preset (DEFAULT_HW) is the one closest to the torch profile that integers allow:
the multipliers keep the 24 significant bits of PyTorch's float32 multipliers exactly, the
bias keeps 16 fractional bits, the mean rounds like PyTorch's float32 mean (f32; it
reproduces PyTorch exactly), and every requantizer rounds half-even like PyTorch's rint.
Its measured distance from the torch profile is in docs/numerics.md.
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

ROUNDINGS = ("half_up", "half_even")
"""half_up: ties toward +infinity (floor(v + 1/2)); half_even: ties to the even integer."""
MEAN_ROUNDINGS = ROUNDINGS + ("f32",)
"""The mean also has f32: PyTorch's float32 steps emulated with integers (numerics.mean_hw)."""
F32_BITS = 24
"""Significant bits of a float32."""

MAX_RECIPROCAL_BITS = 30   # R[n] <= 2**30 < 2**31: the model's exact wide multiply needs M < 2**31
MAX_MULTIPLIER_BITS = 31
MAX_REGISTER_BITS = 62     # a register (integer + fractional bits) must fit |v| < 2**61
MAX_BIAS_FRAC_BITS = 30
GATE_BITS = 8
"""Width of the sigmoid table's codes (quantized sigmoid: scale 1/256); gate_bits <= 8."""

PRODUCT_MAX = 255 * 128
"""Largest |(x - zero point) * w| of an 8-bit activation and an int8 weight (255 * |-128|)."""
CODE_SPAN = 255
"""Largest |x - zero point| of an 8-bit activation code."""


@dataclass(frozen=True)
class HwProfile:
    """Widths and roundings of the hw numerics profile (see the module docstring)."""

    reciprocal_bits: int = 26
    fc1_multiplier_bits: int = 24
    fc2_multiplier_bits: int = 24
    mul_multiplier_bits: int = 24
    bias_frac_bits: int = 16
    gate_bits: int = 8
    sum_bits: int = 32
    fc1_acc_bits: int = 32
    fc2_acc_bits: int = 32
    mean_rounding: str = "f32"
    fc1_rounding: str = "half_even"
    fc2_rounding: str = "half_even"
    mul_rounding: str = "half_even"
    saturate: bool = False
    exact_mean: bool = True

    def __post_init__(self):
        _int_field("reciprocal_bits", self.reciprocal_bits, 2, MAX_RECIPROCAL_BITS)
        for name in ("fc1_multiplier_bits", "fc2_multiplier_bits", "mul_multiplier_bits"):
            _int_field(name, getattr(self, name), 2, MAX_MULTIPLIER_BITS)
        _int_field("bias_frac_bits", self.bias_frac_bits, 0, MAX_BIAS_FRAC_BITS)
        _int_field("gate_bits", self.gate_bits, 1, GATE_BITS)
        _int_field("sum_bits", self.sum_bits, 2, MAX_REGISTER_BITS)
        for name in ("fc1_acc_bits", "fc2_acc_bits"):
            _int_field(name, getattr(self, name), 2, MAX_REGISTER_BITS - self.bias_frac_bits,
                       why=f" (with bias_frac_bits={self.bias_frac_bits} the register "
                           f"must stay within {MAX_REGISTER_BITS} bits)")
        for name in ("mean_rounding", "fc1_rounding", "fc2_rounding", "mul_rounding"):
            v = getattr(self, name)
            allowed = MEAN_ROUNDINGS if name == "mean_rounding" else ROUNDINGS
            if v not in allowed:
                raise ConfigError(f"hw.{name}: {v!r} is not allowed; "
                                  f"allowed: {', '.join(allowed)}")
        for name in ("saturate", "exact_mean"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"hw.{name}: {getattr(self, name)!r} is not allowed; "
                                  "allowed: true or false")
        if (self.mean_rounding == "f32" and self.reciprocal_bits < F32_BITS
                and self.exact_mean):
            raise ConfigError(f"hw.reciprocal_bits: {self.reciprocal_bits} is too few for "
                              f"mean_rounding = 'f32' (the reciprocal is f32(1/n), "
                              f"{F32_BITS} significant bits); allowed: "
                              f"{F32_BITS}..{MAX_RECIPROCAL_BITS}, or hw.exact_mean = false "
                              "for a narrower, approximate reciprocal")

    # ---- checks against a configuration -------------------------------------------------
    def check(self, channels: int, hidden: int, tile_counts) -> None:
        """Reject widths that can overflow for these channel counts and tile element counts
        (unless saturate), and a reciprocal too short to round the mean exactly (unless
        not exact_mean)."""
        n_max = max(tile_counts)
        if not self.saturate:
            need = required_bits(channels, hidden, n_max)
            for name, bits in need.items():
                have = getattr(self, name)
                if have < bits:
                    what = {"sum_bits": f"tile sums of up to {n_max} elements",
                            "fc1_acc_bits": f"fc1 over {channels} channels",
                            "fc2_acc_bits": f"fc2 over {hidden} hidden channels"}[name]
                    raise ConfigError(
                        f"hw.{name}: {have} can overflow for {what} (|acc| up to "
                        f"{_worst(name, channels, hidden, n_max)}); allowed: >= {bits}, "
                        "or hw.saturate = true to saturate and count")
        for n in sorted(set(tile_counts)):
            if self.mean_rounding == "f32" or not self.exact_mean:
                continue                  # f32: no exactness condition (emulates torch)
            if not reciprocal_exact(n, self.reciprocal_bits):
                least = min_reciprocal_bits(n)
                allowed = (f"{least}..{MAX_RECIPROCAL_BITS}" if least <= MAX_RECIPROCAL_BITS
                           else "none (the tile is too large for an exact mean)")
                raise ConfigError(
                    f"hw.reciprocal_bits: {self.reciprocal_bits} is too few to round the mean "
                    f"of a {n}-element tile exactly; allowed: {allowed}, or hw.exact_mean = "
                    "false for an approximate mean")

    # ---- conversions -----------------------------------------------------------------
    def replace(self, **changes) -> "HwProfile":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data, source: str = "configuration") -> "HwProfile":
        if isinstance(data, HwProfile):
            return data
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: hw: {data!r} is not allowed; allowed: a table of "
                              f"hw widths ({', '.join(f.name for f in dataclasses.fields(cls))})")
        known = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConfigError(f"{source}: unknown key 'hw.{key}'{hint}; "
                                  f"allowed: {', '.join(known)}")
        return cls(**data)

    def fxp_formats(self) -> dict:
        """The datapath's registers as fxpmath dtypes ('fxp-s32/0': signed, 32 bits, none
        fractional), for Fxp(None, dtype=...). Reciprocals and multipliers are integers
        scaled by their table's 2**-shift."""
        f = self.bias_frac_bits
        return {
            "input_minus_zp": "fxp-s9/0",
            "tile_sum": f"fxp-s{self.sum_bits}/0",
            "reciprocal": f"fxp-u{self.reciprocal_bits + 1}/0",
            "pooled": "fxp-u8/0",
            "weight": "fxp-s8/0",
            "fc1_acc": f"fxp-s{self.fc1_acc_bits + f}/{f}",
            "fc1_multiplier": f"fxp-u{self.fc1_multiplier_bits}/0",
            "hidden": "fxp-u8/0",
            "fc2_acc": f"fxp-s{self.fc2_acc_bits + f}/{f}",
            "fc2_multiplier": f"fxp-u{self.fc2_multiplier_bits}/0",
            "excite": "fxp-u8/0",
            "gate": f"fxp-u{self.gate_bits}/{self.gate_bits}",
            "mul_product": f"fxp-s{9 + self.gate_bits}/0",
            "mul_multiplier": f"fxp-u{self.mul_multiplier_bits}/0",
            "output": "fxp-u8/0",
        }


def required_bits(channels: int, hidden: int, n_max: int) -> dict:
    """Least accumulator widths (integer bits, signed) that cannot overflow."""
    return {"sum_bits": _signed_bits(CODE_SPAN * n_max),
            "fc1_acc_bits": _signed_bits(PRODUCT_MAX * channels),
            "fc2_acc_bits": _signed_bits(PRODUCT_MAX * hidden)}


def _worst(name, channels, hidden, n_max):
    return {"sum_bits": CODE_SPAN * n_max, "fc1_acc_bits": PRODUCT_MAX * channels,
            "fc2_acc_bits": PRODUCT_MAX * hidden}[name]


def _signed_bits(magnitude: int) -> int:
    """Bits of a two's complement register holding -magnitude..magnitude."""
    return magnitude.bit_length() + 1


def reciprocal(n: int, bits: int, f32: bool = False) -> tuple[int, int]:
    """The mean's reciprocal of n: (R, shift) with R / 2**shift ~ 1 / n and
    2**(bits-1) <= R <= 2**bits. Exact mean (f32=False): R = round(2**shift / n).
    f32: R / 2**shift is exactly PyTorch's f32(1/n) (float64 1/n rounded to float32), its
    24-bit significand widened to `bits` bits (bits >= 24), or rounded half-even to `bits`
    significant bits (bits < 24: an approximate reciprocal, HwProfile.exact_mean = False)."""
    shift = bits - 1 + (n - 1).bit_length()
    if not f32:
        r = (2 * (1 << shift) + n) // (2 * n)    # nearest; exact ties cannot occur for n > 1
        return r, shift
    frac, exp = np.frexp(np.float64(np.float32(1.0 / n)))     # f32(1/n) = frac * 2**exp
    sig = int(np.ldexp(frac, F32_BITS))                       # 24-bit significand
    if bits >= F32_BITS:
        return sig << (bits - F32_BITS), bits - int(exp)
    from .rounding import round_half_even_shift     # here: it loads numba, configs do not
    r = round_half_even_shift(sig, F32_BITS - bits)           # may reach 2**bits: allowed
    return r, bits - int(exp)


def reciprocal_exact(n: int, bits: int) -> bool:
    """Whether sum x R[n] identifies round(sum / n) exactly for every |sum| <= 255 n.

    t = S R differs from S 2**shift / n by at most E = 255 |R n - 2**shift|. The mean's
    rounding looks at d = 2 (t mod 2**shift) - 2**shift, which is 2**(shift+1) times the
    distance of the fraction from 1/2; fractions of S / n lie m / (2n) from 1/2 (m even for
    even n, odd for odd n), so the exact d values are m 2**shift / n ~ m R. A tie (m = 0) is
    told apart as |2d| < R when 4E < R, and every other fraction (|m| >= 1) stays outside
    that window, on its own side, when 4E n <= 2**(shift+1) - R n."""
    r, shift = reciprocal(n, bits)
    err4 = 4 * CODE_SPAN * abs(r * n - (1 << shift))
    return err4 < r and err4 * n <= (1 << (shift + 1)) - r * n


def min_reciprocal_bits(n: int) -> int:
    for bits in range(2, 64):
        if reciprocal_exact(n, bits):
            return bits
    return 64


def _int_field(name, value, lo, hi, why=""):
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"hw.{name}: {value!r} is not allowed; allowed: an integer "
                          f"{lo}..{hi}{why}")


def tile_counts(height: int, width: int, tile_rows: int, tile_cols: int) -> tuple:
    """Element counts of the four kinds of tile, indexed by kind = 2 * partial_row +
    partial_col: a full tile, one cut by the right edge, one cut by the bottom edge, and the
    bottom-right one cut by both. A kind that does not occur repeats the full count."""
    last_rows = height - (height - 1) // tile_rows * tile_rows
    last_cols = width - (width - 1) // tile_cols * tile_cols
    return (tile_rows * tile_cols, tile_rows * last_cols,
            last_rows * tile_cols, last_rows * last_cols)


DEFAULT_HW = HwProfile()
"""The default hw preset: as close to the torch profile as integers allow (docs/numerics.md)."""
