"""Elaboration-time parameters of the RTL: one object built from (TSEConfig, IntParams).

Every component reads its sizes, widths, constants and ROM images from RtlParams, so the RTL
is parameterized by the same configuration object as the model and computes with the same
integer parameters as the golden vectors (numerics.derive). Nothing here is hardware; it is
the arithmetic of sizes and widths.

ROM images: the words of the unit's five ROMs (w1, w2, fc1, fc2, sigmoid) come from
ref_model.roms (their layout is documented there), the one source the memories' init values
and the hex files the exported Verilog loads (rtl.export) are both made from.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from ref_model import numerics as nm
from ref_model import plan, roms
from ref_model.config import TSEConfig
from ref_model.errors import ConfigError
from ref_model.hw_profile import CODE_SPAN
from ref_model.roms import bits_for

ROUNDING = {"half_up": nm.HALF_UP, "half_even": nm.HALF_EVEN, "f32": nm.F32}


def signed_bits(lo: int, hi: int) -> int:
    """Bits of a two's complement register holding lo..hi."""
    return max(lo.bit_length() if lo < 0 else 0, hi.bit_length()) + 1


@dataclass(frozen=True)
class RtlParams:
    """Sizes, widths, constants and ROM images of one TSE unit (see the module docstring)."""

    cfg: TSEConfig
    ip: nm.IntParams

    def __post_init__(self):
        ip, cfg = nm.int_params_for(self.cfg, self.ip), self.cfg
        object.__setattr__(self, "ip", ip)
        if ip.hw != cfg.hw:
            raise ConfigError("rtl: the integer parameters were derived for other hw widths")

    # ---- shape ------------------------------------------------------------------------
    @property
    def C(self): return self.cfg.channels                       # noqa: E704
    @property
    def H(self): return self.cfg.height                         # noqa: E704
    @property
    def W(self): return self.cfg.width                          # noqa: E704
    @property
    def th(self): return self.cfg.tile_rows                     # noqa: E704
    @property
    def tw(self): return self.cfg.tile_cols                     # noqa: E704
    @property
    def tx(self): return self.cfg.tiles_x                       # noqa: E704
    @property
    def ty(self): return self.cfg.tiles_y                       # noqa: E704
    @property
    def hidden(self): return self.cfg.hidden                    # noqa: E704
    @property
    def P(self): return self.cfg.lanes                          # noqa: E704
    @property
    def Q(self):
        """Multiplier lanes built: Q, but no more than the widest layer's inputs (more would
        multiply zeros; the schedule, ceil(C/Q) and ceil(hidden/Q), is the same)."""
        return roms.excite_lanes(self.cfg)
    @property
    def G(self): return self.C // self.P                        # noqa: E704
    @property
    def K1(self): return math.ceil(self.C / self.Q)             # noqa: E704
    @property
    def K2(self): return math.ceil(self.hidden / self.Q)        # noqa: E704
    @property
    def depth(self): return self.cfg.strip_buffer_depth         # noqa: E704
    @property
    def tile_cycles(self):                                      # noqa: E704
        return plan.excite_cycles_per_tile(self.C, self.hidden, self.Q)
    @property
    def strip_latency(self): return self.cfg.excite_latency_cycles  # noqa: E704
    @property
    def beat_bits(self): return 8 * self.P                      # noqa: E704
    @property
    def partial_rows(self): return self.H % self.th != 0        # noqa: E704
    @property
    def partial_cols(self): return self.W % self.tw != 0        # noqa: E704

    # ---- zero points ------------------------------------------------------------------
    @property
    def zx(self): return int(self.ip.zero_points["input"])      # noqa: E704
    @property
    def zh(self): return int(self.ip.zero_points["hidden"])     # noqa: E704
    @property
    def ze(self): return int(self.ip.zero_points["excite"])     # noqa: E704
    @property
    def zo(self): return int(self.ip.zero_points["output"])     # noqa: E704

    # ---- hw widths --------------------------------------------------------------------
    @property
    def hw(self): return self.cfg.hw                            # noqa: E704
    @property
    def saturate(self): return bool(self.hw.saturate)           # noqa: E704
    @property
    def sum_bits(self): return self.hw.sum_bits                 # noqa: E704
    @property
    def frac_bits(self): return self.hw.bias_frac_bits          # noqa: E704
    @property
    def gate_bits(self): return roms.gate_bits(self.hw)          # noqa: E704

    @property
    def sum_value_bits(self) -> int:
        """Width that holds every tile sum the accumulator can produce: the register itself
        when it saturates, else the proven range 255 * n_max (the mean's multiplier input)."""
        if self.saturate:
            return self.sum_bits
        return min(self.sum_bits, signed_bits(-CODE_SPAN * int(max(self.ip.tile_counts)),
                                              CODE_SPAN * int(max(self.ip.tile_counts))))

    def acc_range(self, layer: int) -> tuple[int, int]:
        """Register range of the fc1 (layer 0) or fc2 (layer 1) accumulator."""
        return roms.acc_range(self.hw, layer)

    @property
    def acc_bits(self) -> int:
        """The shared fc accumulator: wide enough for both layers' registers."""
        return roms.acc_bits(self.hw)

    @property
    def mult_bits(self) -> int:
        """Requantizer multiplier width: the widest multiplier of either layer's table."""
        return roms.mult_bits(self.ip)

    @property
    def shift_bits(self) -> int:
        return roms.shift_bits(self.ip)

    @property
    def mean_rounding(self) -> int:
        return ROUNDING[self.hw.mean_rounding]

    def rounding(self, which: str) -> int:
        return ROUNDING[getattr(self.hw, f"{which}_rounding")]

    # ---- reciprocal table (per tile kind) ---------------------------------------------
    @property
    def recip(self) -> list[int]:
        return [int(v) for v in self.ip.hw_recip]

    @property
    def recip_shift(self) -> list[int]:
        return [int(v) for v in self.ip.hw_recip_shift]

    @property
    def recip_bits(self) -> int:
        return bits_for(max(self.recip))

    # ---- the broadcaster's multiply (gate_bits-wide gates) ----------------------------
    @property
    def mul_mult(self) -> int:
        return int(self.ip.hw_mul_mult[0])

    @property
    def mul_shift(self) -> tuple[int, int]:
        """(right shift, left shift) of (x - zx) * g_stored * M: the gate memory holds the
        table's codes >> (8 - gate_bits), so the product is 2**(8 - gate_bits) smaller and
        the right shift that much shorter (a left shift if it would go negative)."""
        s = int(self.ip.hw_mul_shift[0]) - (8 - self.gate_bits)
        return (s, 0) if s >= 0 else (0, -s)

    # ---- ROM images (ref_model.roms) ---------------------------------------------------
    @cached_property
    def rom_images(self) -> dict:
        """The unit's ROMs, {name: ref_model.roms.Rom}."""
        return roms.images(self.cfg, self.ip)

    @property
    def w1_rom(self) -> list[int]:
        return list(self.rom_images["w1"].words)

    @property
    def w2_rom(self) -> list[int]:
        return list(self.rom_images["w2"].words)

    def fc_rom(self, layer: int) -> list[int]:
        return list(self.rom_images[f"fc{layer + 1}"].words)

    @property
    def fc_word_bits(self) -> int:
        return self.rom_images["fc1"].width

    @property
    def gate_rom(self) -> list[int]:
        return list(self.rom_images["sigmoid"].words)

    @property
    def recip_word_bits(self) -> int:
        return self.recip_bits + bits_for(max(self.recip_shift))

    # ---- sizes for the resource report --------------------------------------------------
    def memory_bits(self) -> dict:
        """Storage of every buffer and ROM, in bits, as the components build it."""
        sb = self.depth * self.beat_bits
        return {
            "strip_buffer_bits": sb,
            "gate_memory_bits": 3 * self.tx * self.C * self.gate_bits,
            "accumulator_bits": self.tx * self.C * self.sum_bits,
            "pooled_buffer_bits": 2 * self.tx * self.C * 8,
            "hidden_buffer_bits": self.hidden * 8,
            "rom_bits": {
                "w1": len(self.w1_rom) * 8 * self.Q,
                "w2": len(self.w2_rom) * 8 * self.Q,
                "fc1_params": self.hidden * self.fc_word_bits,
                "fc2_params": self.C * self.fc_word_bits,
                "reciprocal": 4 * self.recip_word_bits,
                "sigmoid": 256 * self.gate_bits,
            },
        }


def rtl_params(cfg: TSEConfig, ip) -> RtlParams:
    """RtlParams from a configuration and IntParams (or QuantParams, derived here)."""
    return RtlParams(cfg, nm.int_params_for(cfg, ip))


# ---- stream payloads shared by the components --------------------------------------------

def field(n: int):
    """An unsigned field holding 0..n-1 (at least one bit)."""
    return max(1, (n - 1).bit_length())


def beat_layout(p: RtlParams):
    """An AXI4-Stream beat: P lanes of 8 bits (lane 0 in the least significant bits), TLAST."""
    from amaranth.lib import data
    return data.StructLayout({"data": p.beat_bits, "last": 1})


def sums_layout(p: RtlParams):
    """What the line accumulator hands the excite MAC on each beat that completes a tile:
    the P finished sums of channel group `group` of tile column `tile`, the tile's kind
    (2 * cut by the bottom edge + cut by the right edge), the strip index in the frame, and
    whether this is the strip's last beat."""
    from amaranth import signed
    from amaranth.lib import data
    return data.StructLayout({
        "sums": data.ArrayLayout(signed(p.sum_bits), p.P),
        "tile": field(p.tx), "group": field(p.G), "kind": 2, "strip": field(p.ty),
        "strip_end": 1,
    })


def whole(layout, **fields):
    """One value of a struct layout from its fields, as a single Cat in the layout's bit order
    (each field given whole, at its exact width): a payload driven field by field exports as
    part-select assigns to one net, which Icarus simulates as a slow .concat8 tree."""
    from amaranth import Cat, Value
    parts = []
    for name, fld in sorted(layout, key=lambda item: item[1].offset):
        if name not in fields:
            raise ValueError(f"field {name}: not given (the layout's fields: "
                             f"{', '.join(n for n, _ in layout)})")
        v = Value.cast(fields.pop(name))
        if len(v) != fld.width:
            raise ValueError(f"field {name}: {len(v)} bits given, the layout has {fld.width}")
        parts.append(v)
    if fields:
        raise ValueError(f"fields not in the layout: {', '.join(sorted(fields))}")
    return Cat(*parts)


def advance_raster(m, p: RtlParams, grp, col, tcol, tile, row, rin, strip=None) -> None:
    """Step a stream position to the next beat (synchronous): channel group, then column (and
    tile column), then row (and row in strip, and strip), then the next frame. The line
    accumulator and the tile broadcaster keep one such position each, as the model's
    processes do."""
    m.d.sync += grp.eq(grp + 1)
    with m.If(grp == p.G - 1):
        m.d.sync += [grp.eq(0), col.eq(col + 1), tcol.eq(tcol + 1)]
        with m.If(tcol == p.tw - 1):
            m.d.sync += [tcol.eq(0), tile.eq(tile + 1)]
        with m.If(col == p.W - 1):
            m.d.sync += [col.eq(0), tcol.eq(0), tile.eq(0), row.eq(row + 1), rin.eq(rin + 1)]
            with m.If(rin == p.th - 1):
                m.d.sync += rin.eq(0)
                if strip is not None:
                    m.d.sync += strip.eq(strip + 1)
            with m.If(row == p.H - 1):
                m.d.sync += [row.eq(0), rin.eq(0)]
                if strip is not None:
                    m.d.sync += strip.eq(0)
