"""The sweep's hardware cost of one point: the cost of the unit the RTL builds for that
point's widths (tse.ref_model.unit_plan: the same plan rtl/ elaborates and `tse rtl` reports),
and Yosys cells where rtl/ and Yosys are installed (rtl_cost). COST_KEY (tse.quant.sweep_grid)
names the one-number cost column. ECA and SRM get an estimate from their hw profile's
widths (attention_cost).
"""
from __future__ import annotations

import math

from tse.ref_model.config import TSEConfig
from tse.ref_model.unit_plan import GATE_BANKS, POOLED_BANKS, plan_unit

from .sweep_grid import COST_KEY

FIXED_MEMORIES = ("strip_buffer_bits", "pooled_buffer_bits", "hidden_buffer_bits",
                  "pooled_window_bits", "hidden_window_bits")
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
                         FIXED_ROMS).
    ECA and SRM: attention_cost's estimate; the 3x1 excite (params: attention_numerics
    .Excite3x1Params): its Excite3x1UnitPlan."""
    if cfg.block != "se":
        return attention_cost(cfg)
    if cfg.excite_kernel == "3x1":
        from tse.ref_model.attention_kernels import excite3x1_hw_params
        from tse.ref_model.excite3x1_unit_plan import Excite3x1UnitPlan
        plan = Excite3x1UnitPlan(cfg, excite3x1_hw_params(params, cfg))
    else:
        plan = plan_unit(cfg, params)
    memory = plan.memory_bits()
    rom_bits = memory.pop("rom_bits")
    cost = plan.cost()
    mults = plan.multipliers()
    out = {"storage_bits": cost["memory_bits"], "multiplier_cells": cost["multiplier_bits"],
           COST_KEY: cost["memory_bits"] + cost["multiplier_bits"],
           "fixed_storage_bits": (sum(memory.get(k, 0) for k in FIXED_MEMORIES)
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


def attention_cost(cfg: TSEConfig) -> dict:
    """The estimated cost of an ECA or SRM unit with cfg's widths, in hardware_cost's columns:
    storage_bits (line accumulator, SRM's square sums, pooled and gate banks, the reciprocal,
    sigmoid and parameter ROMs; no strip buffer), multiplier_cells (count x a_bits x b_bits)
    and cost_bits = their sum. Not from an RTL unit plan (SRM has none; ECA's EcaUnitPlan is
    not wired in here yet): counted from the datapath tse.ref_model.attention_hw describes,
    with SE's unit plan's banking for the shared stages. The widths and the shape decide."""
    from tse.ref_model.attention_widths import (STD_FRAC_BITS, excite_acc_bits,
                                                square_sum_bits, variance_numerator_bits)
    from tse.ref_model.hw_profile import tile_counts
    hw, c, tx, p = cfg.hw, cfg.channels, cfg.tiles_x, cfg.lanes
    n = max(tile_counts(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols))
    acc = excite_acc_bits(cfg.block, cfg.eca_taps)
    memory = {
        "accumulator_bits": tx * c * hw.sum_bits,
        "pooled_buffer_bits": POOLED_BANKS * tx * c * 8,
        "gate_memory_bits": GATE_BANKS * tx * c * hw.gate_bits,
        "reciprocal_rom_bits": 4 * hw.reciprocal_bits,
        "sigmoid_rom_bits": 256 * hw.gate_bits,
    }
    mults = [("mean: tile sum x reciprocal", p, hw.sum_bits, hw.reciprocal_bits),
             ("broadcaster: (x - zx) x gate", p, 9, hw.gate_bits),
             ("broadcaster: product x output multiplier", p, 9 + hw.gate_bits,
              hw.mul_multiplier_bits)]
    if cfg.block == "eca":
        memory["taps_rom_bits"] = cfg.eca_taps * 8
        memory["excite_params_bits"] = hw.fc2_multiplier_bits
        mults += [("excite: (pooled - zx) x tap", 1, 9, 8),
                  ("excite requantizer: acc x M", 1, acc, hw.fc2_multiplier_bits)]
    else:
        d_bits = variance_numerator_bits(n)
        root_bits = math.ceil((d_bits + 2 * STD_FRAC_BITS) / 2) + 1
        memory["square_sum_bits"] = tx * c * square_sum_bits(n)
        memory["variance_rom_bits"] = 4 * hw.reciprocal_bits
        memory["fc_params_bits"] = c * (2 * 8 + acc + hw.bias_frac_bits
                                        + hw.fc2_multiplier_bits)
        mults += [("line accumulator: d x d", p, 9, 9),
                  ("variance: n x S2", 1, square_sum_bits(n), n.bit_length()),
                  ("variance: S1 x S1", 1, hw.sum_bits, hw.sum_bits),
                  ("variance: D x reciprocal of n (n - 1)", 1, d_bits, hw.reciprocal_bits),
                  ("std requantizer: root x M", 1, root_bits, hw.fc1_multiplier_bits),
                  ("style requantizers: mean, std x M", 2, 9, hw.fc1_multiplier_bits),
                  ("excite: style x weight", 2, 9, 8),
                  ("excite requantizer: acc x M", 1, acc + hw.bias_frac_bits,
                   hw.fc2_multiplier_bits)]
    storage = sum(memory.values())
    cells = sum(k * a * b for _, k, a, b in mults)
    return {"storage_bits": storage, "multiplier_cells": cells, COST_KEY: storage + cells,
            "multipliers": sum(k for _, k, _, _ in mults),
            "multiplier_widths": "; ".join(f"{what} {a}x{b}" + (f" x{k}" if k > 1 else "")
                                           for what, k, a, b in mults),
            **memory}
