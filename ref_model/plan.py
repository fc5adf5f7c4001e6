"""What a row-streaming TSE unit costs: strip-buffer depth, excite latency, multipliers.

These formulas are the single source for every place that sizes the unit: the configuration's
default buffer depth, the RTL's FIFO, the testbench's expectations and the buffer planner.
They take plain integers so a planner can apply them to any layer of any network.

Timing model of the excite MAC, the schedule rtl/excite_mac.py runs (K1 = ceil(C / Q),
K2 = ceil(hidden / Q); the schedule part of
ref_model.unit_plan.UnitPlan holds it for one unit):
  - squeeze: P mean units take each tile's means as its last beat's sums arrive, so the
    means cost no MAC cycles (2 cycles at the tile's start for the last beat's)
  - fc1: one hidden neuron at a time, Q of its C inputs a cycle -> hidden * K1 cycles
  - fc2: one output channel at a time, Q of its hidden inputs a cycle -> C * K2 cycles
  - a fixed budget per tile of K1 + EXCITE_PIPELINE_CYCLES cycles: the means, the pipeline
    (weight ROM read, adder tree, requantizer, sigmoid, gate write) draining after fc1 and
    after fc2, and idle cycles; the budget keeps every tile the same length, so
    per tile: hidden * K1 + C * K2 + K1 + EXCITE_PIPELINE_CYCLES cycles.
A strip's tiles are excited one after another once the strip's last beat has arrived; its
gates go to one of three gate banks (strip number mod 3) and commit once the broadcaster has
released the strip two before. (The streaming model, ref_model.streaming, holds two gate
banks; rtl/gate_memory.py says why the RTL keeps a third.)

At one beat per clock the input of strip i+1 keeps arriving while strip i waits for its gates,
so the strip buffer must hold a whole strip plus the excite latency in beats; a shallower one
works but stalls the input. The excite MAC keeps up only if a strip's excite latency fits in
one strip time (th * W * C / P cycles).
"""
from __future__ import annotations

import math

EXCITE_PIPELINE_CYCLES = 8
"""Fixed cycles per tile besides the MAC loops and K1 (ROM latency, requantizer, sigmoid,
write)."""
BROADCAST_LATENCY_CYCLES = 7
"""Cycles from a beat's pop off the strip buffer to its output beat on m_axis, unstalled
(rtl/tile_broadcaster.py): the gate read with (x - zx), (x - zx) * g, the products with M's
chunks, their sum, the rounding shift, + zo, and the clamp into the output register. It
delays the output only: pops, and so the strip-buffer occupancy, keep the model's timing."""


def strip_beats(tile_rows: int, width: int, channels: int, lanes: int) -> int:
    """Beats in one full strip of tile_rows rows."""
    return tile_rows * width * channels // lanes


def excite_cycles_per_tile(channels: int, hidden: int, multipliers: int) -> int:
    """Cycles the excite MAC spends on one tile (the module docstring's schedule)."""
    k1 = math.ceil(channels / multipliers)
    k2 = math.ceil(hidden / multipliers)
    fc1 = hidden * k1
    fc2 = channels * k2
    return fc1 + fc2 + k1 + EXCITE_PIPELINE_CYCLES


def excite_latency_cycles(channels: int, hidden: int, tiles_per_strip: int,
                          multipliers: int) -> int:
    """Cycles from a strip's last input beat until all its gates are written."""
    return tiles_per_strip * excite_cycles_per_tile(channels, hidden, multipliers)


def full_throughput_depth(tile_rows: int, width: int, channels: int, hidden: int,
                          tiles_per_strip: int, lanes: int, multipliers: int) -> int:
    """Strip-buffer depth in beats that never stalls the input: strip + excite latency."""
    return (strip_beats(tile_rows, width, channels, lanes)
            + excite_latency_cycles(channels, hidden, tiles_per_strip, multipliers))


def multipliers_for_full_throughput(tile_rows: int, width: int, channels: int, hidden: int,
                                    tiles_per_strip: int, lanes: int) -> int:
    """Fewest excite multipliers whose strip latency fits in one strip time."""
    budget = strip_beats(tile_rows, width, channels, lanes)
    for q in range(1, max(channels, hidden) + 1):
        if excite_latency_cycles(channels, hidden, tiles_per_strip, q) <= budget:
            return q
    # Even one multiplier per neuron is too slow: the fixed per-tile overhead dominates
    # (tiny strips with many tiles). Report the widest useful MAC; the input will stall.
    return max(channels, hidden)


def multipliers_for_buffer_ratio(tile_rows: int, width: int, channels: int, hidden: int,
                                 tiles_per_strip: int, lanes: int, ratio: float) -> int | None:
    """Fewest multipliers whose full-throughput depth is at most ratio x the bare strip."""
    budget = ratio * strip_beats(tile_rows, width, channels, lanes)
    for q in range(1, max(channels, hidden) + 1):
        if full_throughput_depth(tile_rows, width, channels, hidden, tiles_per_strip,
                                 lanes, q) <= budget:
            return q
    return None
