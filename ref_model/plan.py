"""What a row-streaming TSE unit costs: strip-buffer depth, excite latency, multipliers.

These formulas are the single source for every place that sizes the unit: the configuration's
default buffer depth, the RTL's FIFO, the testbench's expectations and the buffer planner.
They take plain integers so a planner can apply them to any layer of any network.

Timing model of the excite MAC (the RTL implements exactly this schedule):
  - squeeze: the C means of a tile, Q at a time            -> ceil(C / Q) cycles
  - fc1: Q hidden neurons in parallel, one input a cycle   -> C * ceil(hidden / Q) cycles
  - fc2: Q output neurons in parallel, one input a cycle   -> hidden * ceil(C / Q) cycles
  - a fixed pipeline overhead per tile (ROM reads, requantization, sigmoid lookup, gate write)
A strip's tiles are excited one after another once the strip's last beat has arrived.

At one beat per clock the input of strip i+1 keeps arriving while strip i waits for its gates,
so the strip buffer must hold a whole strip plus the excite latency in beats; a shallower one
works but stalls the input. The excite MAC keeps up only if a strip's excite latency fits in
one strip time (th * W * C / P cycles).
"""
from __future__ import annotations

import math

EXCITE_PIPELINE_CYCLES = 8
"""Fixed cycles per tile around the MAC loops (ROM latency, requantizers, sigmoid, write)."""


def strip_beats(tile_rows: int, width: int, channels: int, lanes: int) -> int:
    """Beats in one full strip of tile_rows rows."""
    return tile_rows * width * channels // lanes


def excite_cycles_per_tile(channels: int, hidden: int, multipliers: int) -> int:
    squeeze = math.ceil(channels / multipliers)
    fc1 = channels * math.ceil(hidden / multipliers)
    fc2 = hidden * math.ceil(channels / multipliers)
    return squeeze + fc1 + fc2 + EXCITE_PIPELINE_CYCLES


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
