"""The sweep's hardware cost of one point: the cost of the unit the RTL builds for that
point's widths (tse.ref_model.unit_plan: the same plan rtl/ elaborates and `tse rtl` reports),
and Yosys cells where rtl/ and Yosys are installed (rtl_cost). COST_KEY (tse.quant.sweep_grid)
names the one-number cost column.
"""
from __future__ import annotations

from tse.ref_model.config import TSEConfig
from tse.ref_model.unit_plan import plan_unit

from .sweep_grid import COST_KEY

FIXED_MEMORIES = ("strip_buffer_bits", "pooled_buffer_bits", "hidden_buffer_bits")
FIXED_ROMS = ("w1", "w2", "silu")
"""Storage that does not depend on the hw widths: the strip buffer, the 8-bit pooled and
hidden codes, the weight ROMs and a SiLU unit's table of 256 8-bit codes
(fixed_storage_bits; a ROM the unit does not build counts 0)."""


def hardware_cost(cfg: TSEConfig, params) -> dict:
    """Hardware cost of the unit for cfg (its [hw] widths) and params (QuantParams, or the
    IntParams already derived for cfg), from its UnitPlan:
      storage_bits       every buffer and ROM the RTL builds (UnitPlan.memory_bits), the
                         breakdown in the *_bits and *_rom_bits columns
      multiplier_cells   sum of count x a_bits x b_bits over the RTL's multipliers
                         (UnitPlan.multipliers; multiplier_widths lists them)
      cost_bits          storage_bits + multiplier_cells: a one-number area proxy (a
                         flip-flop and a full adder are of similar size in standard cells)
      fixed_storage_bits the part of storage_bits no width changes (FIXED_MEMORIES,
                         FIXED_ROMS)."""
    plan = plan_unit(cfg, params)
    memory = plan.memory_bits()
    rom_bits = memory.pop("rom_bits")
    cost = plan.cost()
    mults = plan.multipliers()
    out = {"storage_bits": cost["memory_bits"], "multiplier_cells": cost["multiplier_bits"],
           COST_KEY: cost["memory_bits"] + cost["multiplier_bits"],
           "fixed_storage_bits": (sum(memory[k] for k in FIXED_MEMORIES)
                                  + sum(rom_bits.get(k, 0) for k in FIXED_ROMS)),
           "multipliers": cost["multipliers"],
           "multiplier_widths": "; ".join(f"{m['unit']} {m['a_bits']}x{m['b_bits']}"
                                          + (f" x{m['count']}" if m["count"] > 1 else "")
                                          for m in mults)}
    out.update(memory)
    out.update({f"{name}_rom_bits": bits for name, bits in rom_bits.items()})
    return out


def rtl_cost(cfg: TSEConfig, params) -> dict | None:
    """Yosys cells of the unit's RTL synthesized for cfg (tse.rtl.resources.yosys_cells, iCE40),
    when rtl/ and Yosys are available; None otherwise."""
    from tse.ref_model import numerics
    try:
        from tse.rtl import resources            # optional: the RTL and a Yosys install
    except ImportError:
        return None
    cells = resources.yosys_cells(cfg, numerics.derive(params, cfg))
    return None if cells is None else {"yosys_cells": cells}
