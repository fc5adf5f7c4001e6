"""Extra parameter sets for a mutation campaign: the same unit, other ROM contents.

The unit's weights, biases, requantizer words and sigmoid table live in its ROMs; with one
parameter set the excite MAC sees a handful of fixed words (a few requantizer shifts, weights
far from the int8 ends, biases that never saturate a code), so a mutant of logic those words
never reach cannot be killed by any input. A campaign therefore also runs every mutant with
other parameter sets, loaded at run time into the same compiled model (tse.sim.mutate
replaces the netlist's constant ROM contents by $readmemh from +tse_rom_dir).

Each set is the block's QuantParams with the weights, biases, weight scales and the excite
scale redrawn (activation scales and zero points kept): the Verilog depends only on those
kept values, and variant() refuses a set whose unit text differs from the original's, so a
set never needs another netlist. Golden values come from the bit-accurate model like the
seeded ones (tse.ref_model.vectors.build), never from the RTL.

KINDS, one per set in turn:
  extreme  weights mostly at the int8 ends (-128, -127, 127) or 0, biases large either way:
           saturating sums, hidden codes clamped at 0 and 255, gates at both ends;
  shifts   weight scales spread over six decades per channel: the requantizer's shift and
           multiplier words take many values (the variable shift's other arms);
  random   uniform int8 weights, biases and scales of the original's order.
"""
from __future__ import annotations

import dataclasses

import numpy as np

KINDS = ("extreme", "shifts", "random")


def redraw(params, kind: str, rng):
    """A copy of QuantParams with the weights, biases, weight scales and excite scale of
    `kind` drawn from rng (see the module docstring)."""
    hidden, channels = params.w1.shape
    w1s, w2s = params.w1_scale.copy(), params.w2_scale.copy()
    if kind == "extreme":
        ends = np.array([-128, -127, 127, 127, 0, -1, 1], np.int64)
        w1 = rng.choice(ends, (hidden, channels))
        w2 = rng.choice(ends, (channels, hidden))
        spread = 64.0
    elif kind == "shifts":
        w1 = rng.integers(-128, 128, (hidden, channels))
        w2 = rng.integers(-128, 128, (channels, hidden))
        w1s = w1s * 10.0 ** rng.uniform(-4, 2, hidden)
        w2s = w2s * 10.0 ** rng.uniform(-4, 2, channels)
        spread = 4.0
    elif kind == "random":
        w1 = rng.integers(-128, 128, (hidden, channels))
        w2 = rng.integers(-128, 128, (channels, hidden))
        w1s = w1s * rng.uniform(0.5, 2.0, hidden)
        w2s = w2s * rng.uniform(0.5, 2.0, channels)
        spread = 4.0
    else:
        raise ValueError(f"kind: {kind!r} is not allowed; allowed: {', '.join(KINDS)}")
    if not params.per_channel:    # one scale for the tensor stays one scale
        w1s[:] = w1s[0]
        w2s[:] = w2s[0]
    sc = dict(params.scales)
    sc["excite"] = sc["excite"] * float(rng.uniform(0.25, 4.0))
    # biases in units of the outputs' scales: `spread` codes either way
    b1 = (rng.uniform(-spread, spread, hidden) * sc["hidden"]).astype(np.float32)
    b2 = (rng.uniform(-spread, spread, channels) * sc["excite"]).astype(np.float32)
    return dataclasses.replace(params, w1=w1.astype(np.int8), w2=w2.astype(np.int8),
                               w1_scale=w1s, w2_scale=w2s, b1=b1, b2=b2, scales=sc)


def variant(cfg, params, kind: str, seed: int):
    """(QuantParams, IntParams) of a set of `kind` whose unit Verilog equals that of
    params, or None when ten draws all changed it (or the parameter derivation refused
    them)."""
    from tse.ref_model import numerics
    from tse.ref_model.unit_plan import plan_unit
    from tse.rtl.export import verilog_text

    from .selfcheck_tb import UNIT

    def unit(p):
        return verilog_text(cfg, plan_unit(cfg, numerics.derive(p, cfg)), UNIT, False)

    unit_text = unit(params)
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    for _ in range(10):
        p = redraw(params, kind, rng)
        try:
            ip = numerics.derive(p, cfg)
        except ValueError:          # InputError, ConfigError: a set the unit cannot take
            continue
        if unit(p) == unit_text:
            return p, ip
    return None
