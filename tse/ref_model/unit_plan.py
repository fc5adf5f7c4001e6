"""The plan of one TSE unit: every fact derived from (TSEConfig, IntParams), computed once.

UnitPlan = plan_unit(cfg, ip) is what the unit IS, below rtl/ and sim/ (no Amaranth, no
torch): the RTL's components are elaborated from it (tse.rtl.params.RtlParams is this class),
the resource report and the sweep's hardware cost read its cost, and it travels in the
vectors manifest (to_dict / from_dict, key "unit") so the testbenches read geometry, beat
counts and port widths instead of working them out again. Its parts:

  geometry  frame, tiles, beats per frame and per strip, the edge-tile-kind table
            (tse.ref_model.edge_tiles) and locate(beat) -> frame, row, column, channel;
  schedule  the excite MAC's cycles per tile and per strip (tse.ref_model.plan's formulas, the
            schedule tse/rtl/excite_mac.py runs: fc1 = hidden*K1, fc2 = C*K2, K1 = ceil(C/Q),
            K2 = ceil(hidden/Q)), its two pooled banks and three gate banks;
  numbers   zero points, hw widths, the mean's reciprocals, the broadcaster's multiply;
  roms      the ROM images (tse.ref_model.roms: words and word layouts);
  storage   memory bits of every buffer and ROM, every multiplier with its operand widths;
  ports     the widths of the unit's ports as the RTL builds them;
  cost      the totals: memory bits, multipliers, multiplier bits.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from . import numerics as nm
from . import plan, roms
from .config import TSEConfig
from .edge_tiles import kind_table
from .errors import ConfigError, InputError
from .geometry import Geometry, describe
from .hw_profile import CODE_SPAN, HwProfile
from .roms import bits_for

ROUNDING = nm.ROUNDING_CODES
GATE_BANKS = 3
"""Gate memory banks: the strip being excited, the strip being broadcast, and the one
between (tse/rtl/gate_memory.py); a strip's gates commit once the strip two before is released."""
POOLED_BANKS = 2
"""Pooled-code banks of the excite MAC: the strip whose sums arrive and the one excited."""


def signed_bits(lo: int, hi: int) -> int:
    """Bits of a two's complement register holding lo..hi."""
    return max(lo.bit_length() if lo < 0 else 0, hi.bit_length()) + 1


def field(n: int) -> int:
    """Bits of an unsigned field holding 0..n-1 (at least one bit)."""
    return max(1, (n - 1).bit_length())


@dataclass(frozen=True)
class UnitPlan:
    """Every derived fact of one unit (see the module docstring); build with plan_unit."""

    cfg: TSEConfig
    ip: nm.IntParams

    def __post_init__(self):
        ip = nm.int_params_for(self.cfg, self.ip)
        object.__setattr__(self, "ip", ip)
        if ip.hw != self.cfg.hw:
            raise ConfigError("unit plan: the integer parameters were derived for other hw "
                              "widths")

    # ================= geometry ======================================================
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
    def G(self): return self.C // self.P                        # noqa: E704
    @property
    def partial_rows(self): return self.H % self.th != 0        # noqa: E704
    @property
    def partial_cols(self): return self.W % self.tw != 0        # noqa: E704
    @property
    def beats_per_frame(self): return self.H * self.W * self.G  # noqa: E704
    @property
    def strip_beats(self): return self.cfg.strip_beats          # noqa: E704

    @cached_property
    def tile_kinds(self) -> np.ndarray:
        """int64 [tiles_y, tiles_x]: the edge-tile kind of every tile (tse.ref_model.edge_tiles)."""
        return kind_table(self.H, self.W, self.th, self.tw)

    @cached_property
    def geometry(self) -> Geometry:
        """Positions in the stream (tse.ref_model.geometry)."""
        return Geometry.of(self.cfg)

    def locate(self, beat: int) -> dict:
        """Where beat number `beat` of the stream lies: frame, row, column, and the channel of
        its lane 0 (beats in raster order, channels innermost, P lanes a beat)."""
        return self.geometry.locate(beat)

    # ================= schedule (the excite MAC, tse/rtl/excite_mac.py) ==================
    @property
    def Q(self):
        """Multiplier lanes built: Q, but no more than the widest layer's inputs (more would
        multiply zeros; the schedule, ceil(C/Q) and ceil(hidden/Q), is the same)."""
        return roms.excite_lanes(self.cfg)
    @property
    def K1(self): return math.ceil(self.C / self.Q)             # noqa: E704
    @property
    def K2(self): return math.ceil(self.hidden / self.Q)        # noqa: E704
    @property
    def tile_cycles(self):                                      # noqa: E704
        return plan.excite_cycles_per_tile(self.C, self.hidden, self.Q,
                                           hidden_table=self.cfg.hidden_table)
    @property
    def strip_latency(self): return self.cfg.excite_latency_cycles  # noqa: E704
    @property
    def depth(self): return self.cfg.strip_buffer_depth         # noqa: E704
    @property
    def gate_banks(self): return GATE_BANKS                     # noqa: E704
    @property
    def pooled_banks(self): return POOLED_BANKS                 # noqa: E704

    @property
    def lead_cycles(self): return plan.EXCITE_LEAD_CYCLES       # noqa: E704
    @property
    def tree_levels(self):                                      # noqa: E704
        return plan.excite_tree_levels(self.C, self.hidden, self.Q)
    @property
    def issue_to_code(self):                                    # noqa: E704
        return plan.excite_issue_to_code(self.C, self.hidden, self.Q)
    @property
    def drain_cycles(self):                                     # noqa: E704
        return plan.excite_drain_cycles(self.C, self.hidden, self.Q)

    @property
    def fc2_start(self) -> int:
        """A tile's first fc2 issue, in cycles from its first (fc1) issue."""
        return plan.excite_fc2_start(self.C, self.hidden, self.Q,
                                     hidden_table=self.cfg.hidden_table)

    def check_schedule(self) -> None:
        """The strip's parts add up to the plan's excite latency (kept as an
        elaboration-time assertion of the schedule)."""
        assert (self.lead_cycles + self.tx * self.tile_cycles + self.drain_cycles
                == self.strip_latency), (self.lead_cycles, self.tile_cycles, self.drain_cycles)

    # ================= numbers: zero points, hw widths, constants ====================
    @property
    def zx(self): return int(self.ip.zero_points["input"])      # noqa: E704
    @property
    def zh(self): return int(self.ip.zero_points["hidden"])     # noqa: E704
    @property
    def fc1_output(self) -> tuple[int, int]:
        """(zero point, lower clamp) of fc1's code: (zh, zh) with the fused ReLU, (SiLU's
        input zero point, 0) before the silu ROM (IntParams.fc1_output)."""
        return tuple(int(v) for v in self.ip.fc1_output())
    @property
    def ze(self): return int(self.ip.zero_points["excite"])     # noqa: E704
    @property
    def zo(self): return int(self.ip.zero_points["output"])     # noqa: E704
    @property
    def hw(self): return self.cfg.hw                            # noqa: E704
    @property
    def saturate(self): return bool(self.hw.saturate)           # noqa: E704
    @property
    def sum_bits(self): return self.hw.sum_bits                 # noqa: E704
    @property
    def frac_bits(self): return self.hw.bias_frac_bits          # noqa: E704
    @property
    def gate_bits(self): return roms.gate_bits(self.hw)         # noqa: E704
    @property
    def beat_bits(self): return 8 * self.P                      # noqa: E704

    @property
    def sum_value_bits(self) -> int:
        """Width that holds every tile sum the accumulator can produce: the register itself
        when it saturates, else the proven range 255 * n_max (the mean's multiplier input)."""
        if self.saturate:
            return self.sum_bits
        n = int(max(self.ip.tile_counts))
        return min(self.sum_bits, signed_bits(-CODE_SPAN * n, CODE_SPAN * n))

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
    def max_shift(self) -> int:
        return roms.max_shift(self.ip)

    @property
    def mean_rounding(self) -> int:
        return ROUNDING[self.hw.mean_rounding]

    def rounding(self, which: str) -> int:
        return ROUNDING[getattr(self.hw, f"{which}_rounding")]

    @property
    def recip(self) -> list[int]:
        """The mean's reciprocal R[n] by tile kind."""
        return [int(v) for v in self.ip.hw_recip]

    @property
    def recip_shift(self) -> list[int]:
        return [int(v) for v in self.ip.hw_recip_shift]

    @property
    def mean_shift_add(self) -> bool:
        """The mean's multiply is a shift-add tree, not DSP blocks: one reciprocal for every
        tile kind, a constant (tse/rtl/pipeline.const_mul)."""
        return len(set(self.recip)) == 1

    @property
    def recip_bits(self) -> int:
        return bits_for(max(self.recip))

    @property
    def recip_word_bits(self) -> int:
        return self.recip_bits + bits_for(max(self.recip_shift))

    @property
    def mul_mult(self) -> int:
        """The broadcaster's constant output multiplier."""
        return int(self.ip.hw_mul_mult[0])

    @property
    def mul_shift(self) -> tuple[int, int]:
        """(right shift, left shift) of (x - zx) * g_stored * M: the gate memory holds the
        table's codes >> (8 - gate_bits), so the product is 2**(8 - gate_bits) smaller and
        the right shift that much shorter (a left shift if it would go negative)."""
        s = int(self.ip.hw_mul_shift[0]) - (8 - self.gate_bits)
        return (s, 0) if s >= 0 else (0, -s)

    # ================= roms (tse.ref_model.roms) =========================================
    @cached_property
    def rom_images(self) -> dict:
        """The unit's ROMs, {name: tse.ref_model.roms.Rom}."""
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
        """The gate's table (sigmoid or hard sigmoid), in the ROM named sigmoid."""
        return list(self.rom_images["sigmoid"].words)

    @property
    def silu_rom(self) -> list[int] | None:
        """SiLU's table (fc1 code -> hidden code), or None with the fused ReLU."""
        rom = self.rom_images.get("silu")
        return None if rom is None else list(rom.words)

    # ================= storage =======================================================
    def memory_bits(self) -> dict:
        """Storage of every buffer and ROM, in bits, as the components build it."""
        return {
            "strip_buffer_bits": self.depth * self.beat_bits,
            "gate_memory_bits": GATE_BANKS * self.tx * self.C * self.gate_bits,
            "accumulator_bits": self.tx * self.C * self.sum_bits,
            "pooled_buffer_bits": POOLED_BANKS * self.tx * self.C * 8,
            "hidden_buffer_bits": self.hidden * 8,
            "rom_bits": {
                "w1": len(self.w1_rom) * 8 * self.Q,
                "w2": len(self.w2_rom) * 8 * self.Q,
                "fc1_params": self.hidden * self.fc_word_bits,
                "fc2_params": self.C * self.fc_word_bits,
                "reciprocal": 4 * self.recip_word_bits,
                "sigmoid": 256 * self.gate_bits,
                **({"silu": 256 * 8} if self.cfg.hidden_table else {}),
            },
        }

    def multipliers(self) -> list[dict]:
        """Every multiplier of the unit: where, how many, operand widths (a signed, b
        unsigned unless noted)."""
        _, left = self.mul_shift
        return [
            {"unit": "excite_mac", "what": "MAC product (code - zp) x int8 weight",
             "count": self.Q, "a_bits": 9, "b_bits": 8, "signed": "both"},
            {"unit": "excite_mac", "what": "mean: tile sum x reciprocal R[n]" + (
                " (one R for every tile kind: a shift-add tree, no DSP block)"
                if self.mean_shift_add else ""),
             "count": self.P, "a_bits": self.sum_value_bits, "b_bits": self.recip_bits,
             "signed": "a"},
            {"unit": "excite_mac", "what": "requantizer: fc accumulator x multiplier M",
             "count": 1, "a_bits": self.acc_bits, "b_bits": self.mult_bits, "signed": "a"},
            {"unit": "tile_broadcaster", "what": "(x - zx) x gate", "count": self.P,
             "a_bits": 9, "b_bits": self.gate_bits, "signed": "a"},
            {"unit": "tile_broadcaster", "what": "product x constant output multiplier",
             "count": self.P, "a_bits": 9 + self.gate_bits + left,
             "b_bits": bits_for(self.mul_mult), "signed": "a"},
        ]

    # ================= ports =========================================================
    def port_widths(self) -> dict:
        """Width of every port of tse_unit as tse/rtl/unit.py builds it."""
        return {"s_axis_tdata": self.beat_bits, "m_axis_tdata": self.beat_bits,
                "s_axis_tvalid": 1, "s_axis_tready": 1, "s_axis_tlast": 1,
                "m_axis_tvalid": 1, "m_axis_tready": 1, "m_axis_tlast": 1, "error": 1,
                "probe_gate_valid": 1, "probe_gate_tile": field(self.tx * self.ty),
                "probe_gate_channel": field(self.C), "probe_gate_data": 8,
                # Amaranth's range(depth + 2): 0..depth+1 (the buffer and the stage register)
                "probe_strip_level": bits_for(self.depth + 1)}

    # ================= cost ==========================================================
    def cost(self) -> dict:
        """The hardware cost: total memory bits, multipliers, and multiplier bits (sum of
        count x a_bits x b_bits, a proxy for multiplier area)."""
        mem = self.memory_bits()
        mults = self.multipliers()
        return {"memory_bits": (sum(v for k, v in mem.items() if k != "rom_bits")
                                + sum(mem["rom_bits"].values())),
                "multipliers": sum(m["count"] for m in mults),
                "multiplier_bits": sum(m["count"] * m["a_bits"] * m["b_bits"] for m in mults),
                "rom_bits": sum(mem["rom_bits"].values()),
                "strip_buffer_bits": mem["strip_buffer_bits"],
                "gate_banks": GATE_BANKS}

    # ================= serialization =================================================
    def facts(self) -> dict:
        """The derived facts (JSON-able), as readers without the model take them."""
        return {
            "geometry": geometry(self.cfg),
            "schedule": {"excite_multipliers": self.Q, "K1": self.K1, "K2": self.K2,
                         "tile_cycles": self.tile_cycles,
                         "strip_latency_cycles": self.strip_latency,
                         "fc2_start": self.fc2_start, "strip_buffer_depth": self.depth,
                         "gate_banks": GATE_BANKS, "pooled_banks": POOLED_BANKS},
            "roms": {name: {"bits": rom.width, "depth": rom.depth}
                     for name, rom in self.rom_images.items()},
            "memory_bits": self.memory_bits(),
            "multipliers": self.multipliers(),
            "ports": self.port_widths(),
            "cost": self.cost(),
        }

    def to_dict(self) -> dict:
        """JSON-able: the configuration, the integer parameters and the derived facts."""
        ip = self.ip
        return {"kind": "unit-plan", "config": self.cfg.to_dict(),
                "int_params": {**ip.manifest(),
                               "arrays": {n: {"dtype": str(a.dtype), "shape": list(a.shape),
                                              "values": a.reshape(-1).tolist()}
                                          for n, a in ip.arrays().items()}},
                **self.facts()}

    @classmethod
    def from_dict(cls, d: dict) -> "UnitPlan":
        """The plan to_dict wrote; its facts must be what this code derives (else the dict
        was written by other code: InputError)."""
        try:
            ipd = d["int_params"]
            arrays = {n: np.array(a["values"], dtype=a["dtype"]).reshape(a["shape"])
                      for n, a in ipd["arrays"].items()}
            ip = nm.IntParams(engine=ipd["engine"], hw=HwProfile.from_dict(ipd["hw"]),
                              zero_points={k: int(v) for k, v in ipd["zero_points"].items()},
                              pair_saturation=bool(ipd.get("int16_pair_saturation", False)),
                              **arrays)
            p = cls(TSEConfig.from_dict(d["config"]), ip)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"unit plan: not a UnitPlan.to_dict() ({e})") from None
        stale = [k for k, v in p.facts().items() if d.get(k) != v]
        if stale:
            raise InputError(f"unit plan: {', '.join(stale)} differ from what this code "
                             "derives; write the vectors again")
        return p


def geometry(cfg: TSEConfig) -> dict:
    """The geometry part of a plan (JSON-able), which needs no parameters
    (tse.ref_model.geometry.describe)."""
    return describe(cfg)


def plan_unit(cfg: TSEConfig, ip) -> UnitPlan:
    """The UnitPlan of a configuration and IntParams (or QuantParams, derived here)."""
    return UnitPlan(cfg, nm.int_params_for(cfg, ip))
