"""The sweep's hardware cost of one point: storage bits and multiplier cells from the widths
and the configuration (hardware_cost, no RTL needed), and Yosys cells where rtl/ and Yosys
are installed (rtl_cost). COST_KEY (quant.sweep_grid) names the one-number cost column.
"""
from __future__ import annotations

from ref_model.config import TSEConfig

from .sweep_grid import COST_KEY



SHIFT_BITS = 7
"""Width of a stored requantizer shift (shifts stay below 128)."""


def hardware_cost(cfg: TSEConfig) -> dict:
    """Hardware cost of the configuration's widths without RTL: storage bits and multiplier
    input widths (docs/sweeps.md). Width-dependent storage:
      reciprocal ROM   4 tile kinds x (reciprocal_bits + 1)   (R[n] <= 2**bits)
      bias ROMs        hidden x (fc1_acc_bits + f) + C x (fc2_acc_bits + f)
      multiplier ROMs  hidden x (fc1_multiplier_bits + 7) + C x (fc2_multiplier_bits + 7)
                       + mul_multiplier_bits + 7            (multiplier and shift)
      sigmoid ROM      256 x gate_bits
      tile sums        tiles_x x C x sum_bits               (line accumulator registers)
      accumulators     Q x (max(fc1_acc_bits, fc2_acc_bits) + f)   (excite MAC, Q MACs)
      gate memory      2 banks x tiles_x x C x gate_bits
    Multipliers (a x b input bits, instances): mean sum_bits x (reciprocal_bits + 1);
    fc1/fc2 requantizers (acc + f) x multiplier_bits; broadcaster, per lane, 9 x gate_bits
    and (9 + gate_bits) x mul_multiplier_bits; the excite MAC's Q 9 x 8 (fixed).
    cost_bits = storage_bits + multiplier_cells (sum of a x b over instances: the cells of
    array multipliers), a one-number area proxy: a flip-flop and a full adder are of
    similar size in standard cells. The weights and the strip buffer do not depend on the
    widths and are reported apart (fixed_storage_bits)."""
    hw, f = cfg.hw, cfg.hw.bias_frac_bits
    c, hid, p, q, tx = cfg.channels, cfg.hidden, cfg.lanes, cfg.excite_multipliers, cfg.tiles_x
    g = hw.gate_bits
    storage = {
        "reciprocal_rom_bits": 4 * (hw.reciprocal_bits + 1),
        "bias_rom_bits": hid * (hw.fc1_acc_bits + f) + c * (hw.fc2_acc_bits + f),
        "multiplier_rom_bits": (hid * (hw.fc1_multiplier_bits + SHIFT_BITS)
                                + c * (hw.fc2_multiplier_bits + SHIFT_BITS)
                                + hw.mul_multiplier_bits + SHIFT_BITS),
        "sigmoid_rom_bits": 256 * g,
        "tile_sum_bits": tx * c * hw.sum_bits,
        "accumulator_bits": q * (max(hw.fc1_acc_bits, hw.fc2_acc_bits) + f),
        "gate_memory_bits": 2 * tx * c * g,
    }
    mults = {   # name: (a, b, instances)
        "mean": (hw.sum_bits, hw.reciprocal_bits + 1, 1),
        "fc1_requant": (hw.fc1_acc_bits + f, hw.fc1_multiplier_bits, 1),
        "fc2_requant": (hw.fc2_acc_bits + f, hw.fc2_multiplier_bits, 1),
        "gate_mul": (9, g, p),
        "out_requant": (9 + g, hw.mul_multiplier_bits, p),
    }
    cells = sum(a * b * n for a, b, n in mults.values())
    storage_bits = sum(storage.values())
    fixed = 8 * 2 * c * hid + 8 * cfg.lanes * cfg.full_throughput_depth
    out = {"storage_bits": storage_bits, "multiplier_cells": cells,
           COST_KEY: storage_bits + cells, "fixed_storage_bits": fixed,
           "mac_multiplier_cells": 9 * 8 * q}
    out.update(storage)
    for name, (a, b, n) in mults.items():
        out[f"{name}_multiplier"] = f"{a}x{b}" + (f" x{n}" if n > 1 else "")
    return out


def rtl_cost(cfg: TSEConfig, params) -> dict | None:
    """Yosys cells of the unit's RTL synthesized for cfg (rtl.resources.yosys_cells, iCE40),
    when rtl/ and Yosys are available; None otherwise."""
    from ref_model import numerics
    try:
        from rtl import resources            # optional: the RTL and a Yosys install
    except ImportError:
        return None
    cells = resources.yosys_cells(cfg, numerics.derive(params, cfg))
    return None if cells is None else {"yosys_cells": cells}
