"""What the ECA and SRM unit plans share (issue 18): both blocks' hw parameters (attention_hw's
EcaHw, SrmHw) carry the same zero points, sigmoid table and broadcaster multiply under the same
names (and the mean's reciprocals), which the unit's shared stages read through these properties; each block's plan
(eca_unit_plan, srm_unit_plan) adds its own excite's numbers and schedule."""
from __future__ import annotations

from dataclasses import dataclass

from .unit_plan import UnitPlan


@dataclass(frozen=True)
class AttentionUnitPlan(UnitPlan):
    """UnitPlan whose ip is an attention_hw.EcaHw or SrmHw."""

    @property
    def zx(self): return int(self.ip.zx)                           # noqa: E704
    @property
    def ze(self): return int(self.ip.ze)                           # noqa: E704
    @property
    def zo(self): return int(self.ip.zo)                           # noqa: E704

    @property
    def recip(self) -> list[int]:
        return [int(v) for v in self.ip.mean.recip]

    @property
    def recip_shift(self) -> list[int]:
        return [int(v) for v in self.ip.mean.shift]

    @property
    def mul_mult(self) -> int:
        return int(self.ip.mul_mult)

    @property
    def mul_shift(self) -> tuple[int, int]:
        s = int(self.ip.mul_shift) - (8 - self.gate_bits)
        return (s, 0) if s >= 0 else (0, -s)

    @property
    def gate_rom(self) -> list[int]:
        """The sigmoid table as the gate memory holds it: gate_bits wide."""
        return [int(v) >> (8 - self.gate_bits) for v in self.ip.gate_lut]
