"""The unit's ROM images: the words each ROM holds, their fields and widths, and their files.

One source of truth for the ROM contents, computed from (TSEConfig, IntParams) without
Amaranth: tse.rtl.params builds the RTL's memories from these words, tse.ref_model.vectors and
tse.rtl.export write them as hex files (hex/rom_<name>.hex), and the exported Verilog loads its
ROMs from those files with $readmemh, so the files are what the unit runs from.

Words are unsigned integers; fields are packed LSB first (negative values as two's
complement of the field's width). Q = excite_lanes(cfg), K1 = ceil(C/Q), K2 = ceil(hidden/Q).

  name     words       word a holds (fields LSB first)
  w1       hidden*K1   a = o*K1 + k: Q int8 fields, field q = w1[o, k*Q + q] (0 past C)
  w2       C*K2        a = c*K2 + k: Q int8 fields, field q = w2[c, k*Q + q] (0 past hidden)
  fc1      hidden      a = o: bias (acc_bits, signed; clamped to fc1's register range when
                       hw.saturate) | multiplier (mult_bits) | shift (shift_bits)
  fc2      C           a = c: the same fields for fc2
  sigmoid  256         a = excite code e: the gate_bits-wide gate hw_gate_table[e] >> (8 - gate_bits)
                       (the configuration's gate: sigmoid or hard sigmoid; the name stays)
  silu     256         a = fc1 code: the hidden code (hidden_activation = silu only)

acc_bits is the shared fc accumulator (the wider of the two layers' registers plus the bias
fraction bits); mult_bits and shift_bits are the widest multiplier and shift of either layer.
The reciprocal table and the broadcaster's multiplier are constants in the unit's logic, not
ROMs (their values are in the vectors' hex/param_*.hex images, for reference).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import plan
from .config import TSEConfig

NAMES = ("w1", "w2", "fc1", "fc2", "sigmoid")
"""The ROMs of every unit; OPTIONAL_NAMES those of some dialects (names(cfg))."""
OPTIONAL_NAMES = ("silu",)
ROM_DIR = "hex"
"""Where the images lie, relative to the directory of tse_unit.v (vectors and `tse rtl`)."""
ROM_DIR_PLUSARG = "tse_rom_dir"
"""Simulation plusarg of the exported Verilog that names the image directory at run time."""


def names(cfg: TSEConfig) -> tuple:
    """The ROMs of cfg's unit: NAMES, and silu with a SiLU hidden activation."""
    return NAMES + (("silu",) if cfg.hidden_activation == "silu" else ())


def bits_for(n: int) -> int:
    """Bits of an unsigned counter holding 0..n."""
    return max(1, int(n).bit_length())


def pack(fields) -> int:
    """Pack (value, width) pairs LSB first; negative values as two's complement."""
    word, pos = 0, 0
    for value, width in fields:
        value = int(value)
        assert -(1 << width) < value < (1 << width), (value, width)
        word |= (value & ((1 << width) - 1)) << pos
        pos += width
    return word


@dataclass(frozen=True)
class Field:
    """`count` consecutive fields of `bits` bits each (count > 1: the lanes of a weight word)."""
    name: str
    bits: int
    signed: bool
    count: int = 1


@dataclass(frozen=True)
class Rom:
    """One ROM: its words in address order and what a word holds."""
    name: str
    words: tuple
    fields: tuple
    addressing: str

    @property
    def width(self) -> int:
        return sum(f.bits * f.count for f in self.fields)

    @property
    def depth(self) -> int:
        return len(self.words)

    @property
    def file(self) -> str:
        """The image's file name (in ROM_DIR beside tse_unit.v)."""
        return f"rom_{self.name}.hex"

    def hex_text(self) -> bytes:
        """The $readmemh image: one word per line, ceil(width/4) hex digits, address order."""
        digits = -(-self.width // 4)
        return "".join(f"{w:0{digits}x}\n" for w in self.words).encode()

    def describe(self) -> dict:
        """The manifest entry of the image."""
        return {"path": f"{ROM_DIR}/{self.file}", "bits": self.width, "depth": self.depth,
                "fields_lsb_first": [{"name": f.name, "bits": f.bits, "signed": f.signed,
                                      **({"count": f.count} if f.count > 1 else {})}
                                     for f in self.fields],
                "order": self.addressing}


# ---- widths, shared with tse.rtl.params -----------------------------------------------------

def excite_lanes(cfg: TSEConfig) -> int:
    """Q: the excite multipliers built (tse.ref_model.plan.excite_lanes)."""
    return plan.excite_lanes(cfg.channels, cfg.hidden, cfg.excite_multipliers)


def acc_bits(hw) -> int:
    """The shared fc accumulator: wide enough for both layers' registers."""
    return max(hw.fc1_acc_bits, hw.fc2_acc_bits) + hw.bias_frac_bits


def acc_range(hw, layer: int) -> tuple[int, int]:
    """Register range of the fc1 (layer 0) or fc2 (layer 1) accumulator."""
    bits = (hw.fc1_acc_bits if layer == 0 else hw.fc2_acc_bits) + hw.bias_frac_bits
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def mult_bits(ip) -> int:
    return bits_for(int(np.concatenate([ip.hw_fc1_mult, ip.hw_fc2_mult]).max()))


def max_shift(ip) -> int:
    """The largest requantizer shift of either layer (the shifter's width comes from it)."""
    return int(np.concatenate([ip.hw_fc1_shift, ip.hw_fc2_shift]).max())


def shift_bits(ip) -> int:
    return bits_for(max_shift(ip))


def gate_bits(hw) -> int:
    return int(getattr(hw, "gate_bits", 8))


# ---- the images ---------------------------------------------------------------------------

def _weights(name: str, w: np.ndarray, q: int) -> Rom:
    outs, ins = w.shape
    chunks = math.ceil(ins / q)
    padded = np.zeros((outs, chunks * q), dtype=np.int64)
    padded[:, :ins] = w
    words = tuple(pack((int(v), 8) for v in padded[o, k * q:(k + 1) * q])
                  for o in range(outs) for k in range(chunks))
    return Rom(name, words, (Field(f"{name}[o, k*Q + q]", 8, True, q),),
               f"word o*{chunks} + k (output o, chunk k of Q={q} inputs); field q = "
               f"{name}[o, k*Q + q], 0 past the {ins} inputs")


def _fc(ip, hw, layer: int) -> Rom:
    bias, mult, shift = ((ip.hw_fc1_bias, ip.hw_fc1_mult, ip.hw_fc1_shift) if layer == 0
                         else (ip.hw_fc2_bias, ip.hw_fc2_mult, ip.hw_fc2_shift))
    if hw.saturate:      # the model loads the bias saturated: clamp it once, here
        bias = np.clip(bias, *acc_range(hw, layer))
    a, mb, sb = acc_bits(hw), mult_bits(ip), shift_bits(ip)
    words = tuple(pack([(b, a), (m, mb), (s, sb)]) for b, m, s in zip(bias, mult, shift))
    name = f"fc{layer + 1}"
    return Rom(name, words, (Field("bias", a, True), Field("multiplier", mb, False),
                             Field("shift", sb, False)),
               f"word o: output channel o of {name}")


def images(cfg: TSEConfig, ip) -> dict[str, Rom]:
    """The unit's ROMs for a configuration and its IntParams (ip.hw must be cfg.hw)."""
    hw, q = cfg.hw, excite_lanes(cfg)
    g = gate_bits(hw)
    table = ip.hw_gate_table() if hasattr(ip, "hw_gate_table") else ip.sigmoid_lut
    sigmoid = tuple(int(v) >> (8 - g) for v in table)
    extra = {}
    if cfg.hidden_activation == "silu":
        extra["silu"] = Rom("silu", tuple(int(v) for v in ip.hidden_lut),
                            (Field("hidden", 8, False),),
                            "word a: the hidden code of fc1 code a (0..255)")
    return {
        "w1": _weights("w1", np.asarray(ip.w1, dtype=np.int64), q),
        "w2": _weights("w2", np.asarray(ip.w2, dtype=np.int64), q),
        "fc1": _fc(ip, hw, 0),
        "fc2": _fc(ip, hw, 1),
        "sigmoid": Rom("sigmoid", sigmoid, (Field("gate", g, False),),
                       "word e: the gate of excite code e (0..255)" + (
                           "" if cfg.gate == "sigmoid" else f" ({cfg.gate})")),
        **extra,
    }
