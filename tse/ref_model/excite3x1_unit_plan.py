"""The plan of one unit with the paper's 3x1 excite (issue 18; block "se", excite_kernel "3x1"):
SE's unit plan with the 3x1 excite's hw parameters (attention_kernels.Excite3x1Hw, what
`tse vectors --excite-kernel 3x1` uses), so the unit's shared stages (input slices, line
accumulator, strip buffer, gate memory, tile broadcaster) elaborate from it and a 3x1 excite
stage reads its schedule, windows and ROMs here. Every fact is derived once, here, from
tse.ref_model.plan and the streaming model's dataflow (excite3x1_streaming.py):

  schedule  per strip arrival, the excite's operations (ops): hidden row r (fc1 over pooled
            rows r-1, r, r+1: 3 taps x C inputs an output) and excite row e (fc2 over hidden
            rows e-1, e, e+1: 3 taps x hidden inputs; its gates are the strip's commit),
            exactly the streaming model's order: on strip s, hidden row s-1 then excite row
            s-2; on the frame's last strip also hidden row s, excite rows s-1 and s (rows
            beyond the frame: zero padding, no products). A hidden and an excite row together
            are one strip of the plan's excite latency (plan.excite_latency_cycles(...,
            taps=3): K1 = ceil(3C/Q), K2 = ceil(3 hidden/Q) issues an output; Q the
            multipliers built, at most max(C, hidden) as SE's unit).
  windows   pooled rows and hidden rows a row reads: taps = 3 each (never a frame); the unit
            stores POOLED_SLOTS = 4 pooled rows (the next strip arrives while one is
            processed) and HIDDEN_SLOTS = 3 hidden rows.
  depth     the strip buffer: plan.full_throughput_depth(..., taps=3) = 3 strips + L beats
            (the streaming model's no_stall_depth is min(3 strips, frame) + L, the figure a
            unit that keeps up peaks at).
  roms      w1 (word o*K1 + k: Q weights of fc1's inputs k*Q.., input i = t*C + c, tap t
            0 the row above), w2 likewise over t*hidden + h; fc1 / fc2 (bias | multiplier |
            shift, LSB first); sigmoid.
facts() is what a vectors manifest or resources.json carries.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import plan
from .attention_kernels import Excite3x1Hw
from .attention_unit_plan import AttentionUnitPlan
from .errors import ConfigError
from .hw_profile import CODE_SPAN
from .roms import Field, Rom, bits_for, pack
from .rounding import HALF_EVEN, HALF_UP
from .unit_plan import geometry, signed_bits

TAPS = plan.EXCITE_KERNEL_TAPS["3x1"]
HALF = TAPS // 2
POOLED_SLOTS = TAPS + 1
"""Pooled rows the unit stores: the three a hidden row reads and the strip arriving."""
HIDDEN_SLOTS = TAPS
"""Hidden rows the unit stores: the three an excite row reads."""


def strip_ops(strip: int, tiles_y: int) -> tuple:
    """The excite's operations when strip `strip` of a frame of tiles_y strips arrives, in
    order: ("hidden", r) computes hidden row r, ("excite", e) excite row e and its gates
    (excite3x1_streaming._excite's order)."""
    if not 0 <= strip < tiles_y:
        raise ConfigError(f"strip: {strip} is not allowed; allowed: 0..{tiles_y - 1}")
    ops = []
    nh = max(0, strip - HALF)                  # hidden rows done before this strip
    ne = max(0, strip - 2 * HALF)              # excite rows done before this strip
    last = strip == tiles_y - 1
    for r in range(nh, (tiles_y - 1 if last else strip - HALF) + 1):
        ops.append(("hidden", r))
        for e in range(ne, (tiles_y - 1 if r == tiles_y - 1 else r - HALF) + 1):
            ops.append(("excite", e))
            ne = e + 1
    return tuple(ops)


@dataclass(frozen=True)
class Excite3x1UnitPlan(AttentionUnitPlan):
    """UnitPlan of a unit with the 3x1 excite; ip is attention_kernels.Excite3x1Hw."""

    def __post_init__(self):
        if (self.cfg.block, self.cfg.excite_kernel) != ("se", "3x1") \
                or not isinstance(self.ip, Excite3x1Hw):
            raise ConfigError(f"unit plan: block {self.cfg.block!r}, excite_kernel "
                              f"{self.cfg.excite_kernel!r} with {type(self.ip).__name__}; "
                              "allowed: block 'se', excite_kernel '3x1' with Excite3x1Hw")
        if self.ip.taps != TAPS:
            raise ConfigError(f"unit plan: {self.ip.taps} taps; allowed: {TAPS}")
        for name, conv in (("fc1", self.ip.fc1), ("fc2", self.ip.fc2)):
            if int(conv.rounding) not in (HALF_UP, HALF_EVEN):
                value = getattr(self.cfg.hw, f"{name}_rounding")
                raise ConfigError(f"hw.{name}_rounding: {value!r} is not allowed for the 3x1 "
                                  "unit; allowed: half_up, half_even")

    # ---- numbers: the 3x1 excite's zero points ----
    @property
    def zh(self): return int(self.ip.fc1.zo)                       # noqa: E704
    @property
    def ze(self): return int(self.ip.fc2.zo)                       # noqa: E704
    @property
    def frac_bits(self): return int(self.ip.frac_bits)             # noqa: E704

    @property
    def sum_value_bits(self) -> int:
        n = int(max(self.ip.mean.counts))
        return min(self.sum_bits, signed_bits(-CODE_SPAN * n, CODE_SPAN * n))

    # ---- schedule (plan.excite_* with taps = 3) ----
    @property
    def taps(self): return TAPS                                    # noqa: E704
    @property
    def lookahead(self): return plan.lookahead_strips(TAPS)        # noqa: E704
    @property
    def Q(self):
        """Multipliers built: excite_multipliers, at most max(C, hidden) as SE's unit
        (plan.excite_lanes), so the plan's tree levels and latency formulas hold."""
        return plan.excite_lanes(self.C, self.hidden, self.cfg.excite_multipliers)
    @property
    def K1(self): return math.ceil(TAPS * self.C / self.Q)         # noqa: E704
    @property
    def K2(self): return math.ceil(TAPS * self.hidden / self.Q)    # noqa: E704
    @property
    def tree_levels(self): return max(0, (self.Q - 1).bit_length())  # noqa: E704

    @property
    def tile_cycles(self):
        return plan.excite_cycles_per_tile(self.C, self.hidden, self.Q, TAPS)

    @property
    def fc2_start(self):
        return plan.excite_fc2_start(self.C, self.hidden, self.Q, TAPS)

    @property
    def strip_latency(self):
        """L: cycles from a handoff's last beat to one excite row's gates (the plan's)."""
        return plan.excite_latency_cycles(self.C, self.hidden, self.tx, self.Q, TAPS)

    @property
    def depth(self):
        """The strip buffer's beats: 3 strips + L (plan.full_throughput_depth, taps = 3)."""
        return plan.full_throughput_depth(self.th, self.W, self.C, self.hidden, self.tx,
                                          self.P, self.Q, TAPS)

    @property
    def no_stall_depth(self):
        """The streaming model's peak occupancy in a unit that keeps up:
        min(3 strips, frame) + L (excite3x1_streaming.no_stall_depth)."""
        return min((1 + self.lookahead) * self.strip_beats, self.beats_per_frame) \
            + self.strip_latency

    @property
    def window_rows(self): return TAPS                             # noqa: E704

    def ops(self, strip: int) -> tuple:
        """The excite's operations on strip `strip`'s arrival (strip_ops)."""
        return strip_ops(strip, self.ty)

    def check_schedule(self) -> None:
        """One hidden row and one excite row of a strip add up to the plan's latency."""
        assert self.Q <= max(self.C, self.hidden)
        assert (self.lead_cycles + self.tx * self.tile_cycles + self.drain_cycles
                == self.strip_latency), (self.lead_cycles, self.tile_cycles)

    # ---- widths ----
    def _acc_bound(self, conv) -> int:
        w = np.abs(conv.weights).sum(axis=(1, 2))
        return int((np.abs(conv.bias) + ((w * CODE_SPAN) << self.frac_bits)).max())

    @property
    def acc_bits(self) -> int:
        """The shared accumulator: both layers' largest |bias + sum w (code - z) << f|."""
        top = max(self._acc_bound(self.ip.fc1), self._acc_bound(self.ip.fc2))
        return signed_bits(-top, top)

    @property
    def mult_bits(self) -> int:
        return bits_for(int(max(self.ip.fc1.mult.max(), self.ip.fc2.mult.max())))

    @property
    def max_shift(self) -> int:
        return int(max(self.ip.fc1.shift.max(), self.ip.fc2.shift.max()))

    @property
    def shift_bits(self) -> int:
        return bits_for(int(max(self.ip.fc1.shift.max(), self.ip.fc2.shift.max())))

    # ---- ROMs ----
    def _weights(self, name, conv) -> Rom:
        w = np.asarray(conv.weights, np.int64)          # [out, in, taps]
        outs, ins, taps = w.shape
        flat = w.transpose(0, 2, 1).reshape(outs, taps * ins)      # input t*ins + c
        k = math.ceil(taps * ins / self.Q)
        padded = np.zeros((outs, k * self.Q), np.int64)
        padded[:, :taps * ins] = flat
        words = tuple(pack((int(v), 8) for v in padded[o, j * self.Q:(j + 1) * self.Q])
                      for o in range(outs) for j in range(k))
        return Rom(name, words, (Field(f"{name}[o, k*Q + q]", 8, True, self.Q),),
                   f"word o*{k} + k (output o, chunk k of Q={self.Q} inputs, input "
                   f"t*{ins} + c: tap t, 0 the row above); 0 past the {taps * ins} inputs")

    def _fc(self, name, conv) -> Rom:
        a, mb, sb = self.acc_bits, self.mult_bits, self.shift_bits
        words = tuple(pack([(int(b), a), (int(m), mb), (int(s), sb)])
                      for b, m, s in zip(conv.bias, conv.mult, conv.shift))
        return Rom(name, words, (Field("bias", a, True), Field("multiplier", mb, False),
                                 Field("shift", sb, False)), f"word o: output o of {name}")

    @cached_property
    def rom_images(self) -> dict:
        return {"w1": self._weights("w1", self.ip.fc1), "w2": self._weights("w2", self.ip.fc2),
                "fc1": self._fc("fc1", self.ip.fc1), "fc2": self._fc("fc2", self.ip.fc2),
                "sigmoid": Rom("sigmoid", tuple(self.gate_rom),
                               (Field("gate", self.gate_bits, False),),
                               "word e: the gate of excite code e (0..255)")}

    def memory_bits(self) -> dict:
        """Storage of every buffer and ROM, in bits, as the plan sizes them."""
        return {"strip_buffer_bits": self.depth * self.beat_bits,
                "gate_memory_bits": self.gate_banks * self.tx * self.C * self.gate_bits,
                "accumulator_bits": self.tx * self.C * self.sum_bits,
                "pooled_window_bits": POOLED_SLOTS * self.tx * self.C * 8,
                "hidden_window_bits": HIDDEN_SLOTS * self.tx * self.hidden * 8,
                "rom_bits": {name: rom.width * rom.depth
                             for name, rom in self.rom_images.items()}}

    def facts(self) -> dict:
        """The derived facts (JSON-able)."""
        return {"geometry": geometry(self.cfg),
                "schedule": {"excite_kernel": "3x1", "taps": TAPS,
                             "lookahead_strips": self.lookahead,
                             "excite_multipliers": self.Q, "K1": self.K1, "K2": self.K2,
                             "tile_cycles": self.tile_cycles, "fc2_start": self.fc2_start,
                             "strip_latency_cycles": self.strip_latency,
                             "strip_buffer_depth": self.depth,
                             "no_stall_depth": self.no_stall_depth,
                             "pooled_window_rows": TAPS, "hidden_window_rows": TAPS,
                             "pooled_slots": POOLED_SLOTS, "hidden_slots": HIDDEN_SLOTS,
                             "gate_banks": self.gate_banks,
                             # the operations on strips 0, 1, 2 (as every later one but the
                             # last) and the last
                             "ops": {str(s): [list(op) for op in self.ops(s)]
                                     for s in sorted({0, 1, 2, self.ty - 1}
                                                     & set(range(self.ty)))}},
                "widths": {"acc_bits": self.acc_bits, "mult_bits": self.mult_bits,
                           "shift_bits": self.shift_bits},
                "roms": {name: {"bits": rom.width, "depth": rom.depth}
                         for name, rom in self.rom_images.items()},
                "memory_bits": self.memory_bits(), "ports": self.port_widths()}
