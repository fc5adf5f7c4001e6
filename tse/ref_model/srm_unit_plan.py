"""The plan of one SRM unit (issue 18): SE's unit plan with SRM's hw parameters in place of
SE's integer parameters, so the unit's shared stages (input slices, line accumulator, strip
buffer, gate memory, tile broadcaster) elaborate from it and the SRM excite stage
(tse/rtl/srm_excite.py) reads its constants, its per-channel ROM and its sigmoid table here.

SrmUnitPlan(cfg, h) with h = attention_hw.SrmHw (attention_hw.srm_hw_params, what the SRM
vectors use): the geometry and the port widths are UnitPlan's; the numbers (zero points, the
mean's and the variance's reciprocals, the requantizers, the broadcaster's multiply) are h's;
the schedule is tse.ref_model.plan's SRM block (lead-in, C cycles a tile, drain). The line
accumulator also sums squares (square_bits, attention_widths.square_sum_bits of the largest
tile). facts() is what a vectors manifest carries ("unit"): geometry, schedule, ports.

ROMs: sigmoid (256 words, gate_bits) and srm_fc (C words, address c: w[c, 0] | w[c, 1] |
bias[c] | M[c] | s[c], LSB first; the weights int8, the bias signed fixed point).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from . import plan
from .attention_hw import SrmHw
from .attention_widths import square_sum_bits, variance_numerator_bits
from .errors import ConfigError
from .hw_profile import CODE_SPAN
from .rounding import HALF_UP
from .roms import Field, Rom, bits_for, pack
from .attention_unit_plan import AttentionUnitPlan
from .unit_plan import geometry, signed_bits


@dataclass(frozen=True)
class SrmUnitPlan(AttentionUnitPlan):
    """UnitPlan of an SRM unit; ip is the block's attention_hw.SrmHw."""

    def __post_init__(self):
        if self.cfg.block != "srm" or not isinstance(self.ip, SrmHw):
            raise ConfigError(f"unit plan: block {self.cfg.block!r} with "
                              f"{type(self.ip).__name__}; allowed: block 'srm' with SrmHw")
        if min(self.var_shift) < 1:
            raise ConfigError(f"hw.reciprocal_bits: {self.cfg.hw.reciprocal_bits} leaves the "
                              "SRM variance's shift below 1; allowed: more reciprocal bits")
        if self.variance_bits > 2 * plan.SRM_ROOT_BITS:
            raise ConfigError(f"unit plan: SRM variance of {self.variance_bits} bits; allowed: "
                              f"at most {2 * plan.SRM_ROOT_BITS} (plan.SRM_ROOT_BITS)")

    # ---- the SRM excite's schedule (tse.ref_model.plan's SRM block) ----
    @property
    def tile_cycles(self): return plan.srm_cycles_per_tile(self.C)  # noqa: E704
    @property
    def lead_cycles(self): return plan.SRM_LEAD_CYCLES             # noqa: E704
    @property
    def drain_cycles(self): return plan.srm_drain_cycles()         # noqa: E704
    @property
    def dev_stages(self): return plan.SRM_DEV_STAGES               # noqa: E704
    @property
    def root_bits(self): return plan.SRM_ROOT_BITS                 # noqa: E704

    # ---- numbers ----
    @property
    def zstd(self): return int(self.ip.zstd)                       # noqa: E704
    @property
    def zs(self): return int(self.ip.zs)                           # noqa: E704

    @property
    def counts(self) -> list[int]:
        """Elements of each tile kind (hw_profile.tile_counts' order)."""
        return [int(v) for v in self.ip.mean.counts]

    @property
    def n_max(self) -> int:
        return max(self.counts)

    @property
    def sum_value_bits(self) -> int:
        return min(self.sum_bits, signed_bits(-CODE_SPAN * self.n_max, CODE_SPAN * self.n_max))

    @property
    def square_bits(self) -> int:
        """The line accumulator's sum of squares (unsigned): attention_widths.square_sum_bits."""
        return square_sum_bits(self.n_max)

    @property
    def numerator_bits(self) -> int:
        """D = n S2 - S1^2 (unsigned): attention_widths.variance_numerator_bits."""
        return variance_numerator_bits(self.n_max)

    @property
    def var_recip(self) -> list[int]:
        return [int(v) for v in self.ip.var_recip]

    @property
    def var_shift(self) -> list[int]:
        return [int(v) for v in self.ip.var_shift]

    @property
    def variance_bits(self) -> int:
        """V = round_half_up(D R[n] / 2^s[n]) (unsigned), D at most n^2 255^2 / 4 (the biased
        variance of codes spanning 255 is at most 255^2 / 4)."""
        top = max((n * n * CODE_SPAN ** 2 // 4 * r + (1 << (s - 1))) >> s
                  for n, r, s in zip(self.counts, self.var_recip, self.var_shift))
        return bits_for(top)

    # the deviation's and the style's requantizers: (multiplier, shift)
    @property
    def std_requant(self): return int(self.ip.std_mult), int(self.ip.std_shift)  # noqa: E704
    @property
    def mean_requant(self): return int(self.ip.mean_mult), int(self.ip.mean_shift)  # noqa
    @property
    def dev_requant(self): return int(self.ip.dev_mult), int(self.ip.dev_shift)  # noqa: E704

    @property
    def style_half_up(self) -> bool:
        return int(self.ip.style_rounding) == HALF_UP

    @property
    def fc_half_up(self) -> bool:
        return int(self.ip.rounding) == HALF_UP

    # ---- the per-channel ROM ----
    @property
    def bias_bits(self) -> int:
        b = [int(v) for v in self.ip.bias]
        return signed_bits(min(b + [0]), max(b + [0]))

    @property
    def fc_mult_bits(self) -> int:
        return bits_for(max(int(v) for v in self.ip.mult))

    @property
    def fc_shift_bits(self) -> int:
        return bits_for(max(int(v) for v in self.ip.shift))

    @property
    def max_fc_shift(self) -> int:
        return max(int(v) for v in self.ip.shift)

    @property
    def fc_fields(self) -> tuple:
        return (Field("w0", 8, True), Field("w1", 8, True), Field("bias", self.bias_bits, True),
                Field("mult", self.fc_mult_bits, False),
                Field("shift", self.fc_shift_bits, False))

    @cached_property
    def rom_images(self) -> dict:
        """The SRM unit's ROMs (tse.rtl.export loads them from their hex images, as SE's)."""
        h = self.ip
        widths = [f.bits for f in self.fc_fields]
        words = tuple(pack(zip((h.weights[c, 0], h.weights[c, 1], h.bias[c], h.mult[c],
                                h.shift[c]), widths)) for c in range(self.C))
        return {"sigmoid": Rom("sigmoid", tuple(self.gate_rom),
                               (Field("gate", self.gate_bits, False),),
                               "word e: the gate of excite code e (0..255)"),
                "srm_fc": Rom("srm_fc", words, self.fc_fields,
                              "word c: channel c's two weights, folded bias (bias_frac_bits), "
                              "multiplier and shift")}

    def memory_bits(self) -> dict:
        """Storage of every buffer and ROM, in bits, as the components build it."""
        return {"strip_buffer_bits": self.depth * self.beat_bits,
                "gate_memory_bits": self.gate_banks * self.tx * self.C * self.gate_bits,
                "accumulator_bits": self.tx * self.C * self.sum_bits,
                "square_accumulator_bits": self.tx * self.C * self.square_bits,
                "pooled_buffer_bits": self.pooled_banks * self.tx * self.C * 8,
                "std_buffer_bits": self.pooled_banks * self.tx * self.C * 8,
                "window_bits": 2 * 8 * self.C,
                "rom_bits": {name: rom.width * rom.depth
                             for name, rom in self.rom_images.items()}}

    def facts(self) -> dict:
        """The derived facts a vectors manifest carries (JSON-able)."""
        return {"geometry": geometry(self.cfg),
                "schedule": {"tile_cycles": self.tile_cycles,
                             "lead_cycles": self.lead_cycles,
                             "drain_cycles": self.drain_cycles,
                             "deviation_stages": self.dev_stages,
                             "strip_latency_cycles": self.strip_latency,
                             "strip_buffer_depth": self.depth, "gate_banks": self.gate_banks,
                             "pooled_banks": self.pooled_banks},
                "widths": {"square_sum_bits": self.square_bits,
                           "variance_numerator_bits": self.numerator_bits,
                           "variance_bits": self.variance_bits, "root_bits": self.root_bits},
                "memory_bits": self.memory_bits(), "ports": self.port_widths()}
