"""The plan of one ECA unit (issue 18): SE's unit plan with ECA's hw parameters in place of
SE's integer parameters, so the unit's shared stages (input slices, line accumulator, strip
buffer, gate memory, tile broadcaster) elaborate from it unchanged and the ECA excite stage
(tse/rtl/eca_excite.py) reads its taps, multiplier and sigmoid table here.

EcaUnitPlan(cfg, h) with h = attention_hw.EcaHw (attention_hw.eca_hw_params, what the ECA
vectors use): the geometry and the port widths are UnitPlan's; the numbers (zero points, the
mean's reciprocals, the broadcaster's multiply) are h's; the schedule is tse.ref_model.plan's
ECA block (lead-in, C cycles a tile, drain). facts() is what a vectors manifest carries
("unit"): geometry, schedule, ports.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from . import plan
from .roms import Field, Rom
from .attention_hw import EcaHw
from .errors import ConfigError
from .hw_profile import CODE_SPAN
from .attention_unit_plan import AttentionUnitPlan
from .unit_plan import geometry, signed_bits


@dataclass(frozen=True)
class EcaUnitPlan(AttentionUnitPlan):
    """UnitPlan of an ECA unit; ip is the block's attention_hw.EcaHw."""

    def __post_init__(self):
        if self.cfg.block != "eca" or not isinstance(self.ip, EcaHw):
            raise ConfigError(f"unit plan: block {self.cfg.block!r} with "
                              f"{type(self.ip).__name__}; allowed: block 'eca' with EcaHw")
        if len(self.ip.taps) != self.cfg.eca_taps:
            raise ConfigError(f"unit plan: {len(self.ip.taps)} ECA taps for eca_kernel "
                              f"{self.cfg.eca_taps}; allowed: the configuration's taps")

    # ---- the ECA excite's schedule (tse.ref_model.plan's ECA block) ----
    @property
    def taps(self) -> list[int]:
        return [int(t) for t in self.ip.taps]

    @property
    def k(self): return len(self.ip.taps)                          # noqa: E704
    @property
    def tile_cycles(self): return plan.eca_cycles_per_tile(self.C)  # noqa: E704
    @property
    def lead_cycles(self): return plan.ECA_LEAD_CYCLES            # noqa: E704
    @property
    def tree_levels(self): return plan.eca_tree_levels(self.k)    # noqa: E704
    @property
    def drain_cycles(self): return plan.eca_drain_cycles(self.k)  # noqa: E704

    # ---- numbers ----
    @property
    def mult(self): return int(self.ip.mult)                       # noqa: E704
    @property
    def shift(self): return int(self.ip.shift)                     # noqa: E704

    @property
    def sum_value_bits(self) -> int:
        n = int(max(self.ip.mean.counts))
        return min(self.sum_bits, signed_bits(-CODE_SPAN * n, CODE_SPAN * n))

    @cached_property
    def rom_images(self) -> dict:
        """The ECA unit's one ROM (tse.rtl.export loads it from its hex image, as SE's)."""
        return {"sigmoid": Rom("sigmoid", tuple(self.gate_rom),
                               (Field("gate", self.gate_bits, False),),
                               "word e: the gate of excite code e (0..255)")}

    def memory_bits(self) -> dict:
        """Storage of every buffer and ROM, in bits, as the components build it."""
        return {"strip_buffer_bits": self.depth * self.beat_bits,
                "gate_memory_bits": self.gate_banks * self.tx * self.C * self.gate_bits,
                "accumulator_bits": self.tx * self.C * self.sum_bits,
                "pooled_buffer_bits": self.pooled_banks * self.tx * self.C * 8,
                "window_bits": 8 * (self.C + self.k - 1),
                "rom_bits": {"sigmoid": 256 * self.gate_bits}}

    def facts(self) -> dict:
        """The derived facts a vectors manifest carries (JSON-able)."""
        return {"geometry": geometry(self.cfg),
                "schedule": {"eca_taps": self.k, "tile_cycles": self.tile_cycles,
                             "strip_latency_cycles": self.strip_latency,
                             "strip_buffer_depth": self.depth, "gate_banks": self.gate_banks,
                             "pooled_banks": self.pooled_banks},
                "memory_bits": self.memory_bits(), "ports": self.port_widths()}
