"""What a row-streaming TSE unit costs: strip-buffer depth, excite latency, multipliers.

These formulas are the single source for every place that sizes the unit: the configuration's
default buffer depth, the RTL's FIFO, the testbench's expectations and the buffer planner.
They take plain integers so a planner can apply them to any layer of any network.

Timing model of the excite MAC, the schedule tse/rtl/excite_mac.py runs (K1 = ceil(C / Q),
K2 = ceil(hidden / Q); tse.ref_model.unit_plan.UnitPlan holds it for one unit). The MAC is a
pipeline that never stalls, so a strip's excite latency is three fixed parts:
  - lead-in: P mean units take each tile's means as its last beat's sums arrive, in
    MEAN_STAGES register stages; the first issue waits for the strip's last sums' means
    (EXCITE_LEAD_CYCLES, once a strip)
  - tiles, back to back, each excite_cycles_per_tile: fc1 issues one hidden neuron at a time,
    Q of its C inputs a cycle (hidden * K1 cycles), a wait until the last hidden code is
    written, then fc2 one output channel at a time (C * K2 cycles)
  - drain: the last gate leaves the pipeline (operands, products, adder tree, accumulator,
    requantizer, sigmoid ROM, gate write), excite_drain_cycles after the last issue.
A strip's tiles are excited one after another once the strip's last beat has arrived; its
gates go to one of three gate banks (strip number mod 3) and commit once the broadcaster has
released the strip two before. (The streaming model, tse.ref_model.streaming, holds two gate
banks; tse/rtl/gate_memory.py says why the RTL keeps a third.)

Pipeline of one issue, in cycles after it (tse/rtl/excite_mac.py): +1 operands (pooled or
hidden codes, weight ROM words), +2 the layer's weights, +3 Q products, then one adder-tree
level a cycle, the accumulator, the requantizer's multiplier word, its multiply (limb products
and their adder tree), rounding shift, zero point, clamp; the code is written ISSUE_TO_TREE +
tree levels + ACCUMULATE_TO_CODE cycles after the issue, and the gate CODE_TO_GATE cycles later
(the code's register, the sigmoid ROM).

At one beat per clock the input of strip i+1 keeps arriving while strip i waits for its gates,
so the strip buffer must hold a whole strip plus the excite latency in beats; a shallower one
works but stalls the input. The excite MAC keeps up only if a strip's excite latency fits in
one strip time (th * W * C / P cycles).
"""
from __future__ import annotations

import math

MEAN_STAGES = 20
"""Registers of a mean unit in its deepest form (tse/rtl/pipeline.mean: float32 rounding of a sum
wider than 24 bits, 5 + 4 + 5 + 5, then the rounding to the code before its clamp); shallower
forms are padded to it, so the schedule is one."""
EXCITE_LEAD_CYCLES = MEAN_STAGES + 1
"""Cycles from a strip's last sums to its first issue: the means, and the pooled register."""
ISSUE_TO_TREE = 4
"""Cycles from an issue to the adder tree's first level (operand registers, the layer's
weights picked, products)."""
ACCUMULATE_TO_CODE = 8
"""Cycles from the accumulator to the written code: the multiplier's ROM word, the multiply
by M (tse/rtl/pipeline.MUL_STAGES), the rounding shift, the zero point, the clamp."""
CODE_TO_GATE = 2
"""Cycles from a written code to its gate's write: the code's register, the sigmoid ROM."""
HIDDEN_CODE_CYCLES = 1
"""Cycles from fc1's code to its hidden code being written (ReLU): the code's register. The
clamp and the hidden word's lane enables in one cycle were the out-of-context critical path
(10.3 ns at 97.1 MHz), so fc2 starts one cycle later (excite_fc2_start)."""
HIDDEN_TABLE_CYCLES = 2
"""With a hidden activation that is a table (SiLU, tse.ref_model.roms' silu ROM): cycles from
fc1's code to its hidden code being written (the code's register, the ROM read), so fc2 starts
that much later (excite_fc2_start's hidden_table)."""
INPUT_SLICE_STAGES = 2
"""Register slices in a row at the input (tse/rtl/register_slice.py's SliceChain): the first
sits by the pads, the second by the line accumulator, so the line accumulator's ready (from
the strip buffer's level) reaches a register near it, not across the die (with one slice
that route was the default unit's critical path on the pins: 12.2 of 14 ns routing)."""
INPUT_SLICE_BEATS = 2
"""Beats one input register slice holds (tse/rtl/register_slice.py): its output register and
its skid slot. Its ready is "the skid slot is empty", a register, so it does not see the
same cycle's take downstream; s_axis_tready is the first slice's."""
INPUT_SLICE_CYCLES = INPUT_SLICE_STAGES
"""Cycles from a beat's acceptance on s_axis to the line accumulator's take of it, unstalled:
each slice's output register. It delays everything after the input; the strip buffer's
occupancy and the excite latency, counted from the line accumulator, keep theirs."""
BROADCAST_LATENCY_CYCLES = 8
"""Cycles from a beat's pop off the strip buffer to its output beat on m_axis, unstalled
(tse/rtl/tile_broadcaster.py): the beat beside its gate read, (x - zx), (x - zx) * g, the
products with M's chunks, their sum, the rounding shift, + zo, and the clamp into the output
register. It delays the output only: pops, and so the strip-buffer occupancy, keep the
model's timing."""


EXCITE_KERNEL_TAPS = {"1x1": 1, "3x1": 3}
"""Excite kernels (the paper's Appendix B): rows of tiles each excite convolution reads."""


def strip_beats(tile_rows: int, width: int, channels: int, lanes: int) -> int:
    """Beats in one full strip of tile_rows rows."""
    return tile_rows * width * channels // lanes


def excite_lanes(channels: int, hidden: int, multipliers: int) -> int:
    """Multipliers built: no more than the widest layer's inputs (more would multiply zeros;
    the chunk counts ceil(C/Q) and ceil(hidden/Q) are the same)."""
    return min(multipliers, max(channels, hidden))


def excite_tree_levels(channels: int, hidden: int, multipliers: int) -> int:
    """Levels of the excite MAC's adder tree over its products (one register stage each)."""
    return max(0, (excite_lanes(channels, hidden, multipliers) - 1).bit_length())


def excite_issue_to_code(channels: int, hidden: int, multipliers: int) -> int:
    """Cycles from an issue of a neuron's last chunk to the cycle its code is written."""
    return (ISSUE_TO_TREE + excite_tree_levels(channels, hidden, multipliers)
            + ACCUMULATE_TO_CODE)


def excite_fc2_start(channels: int, hidden: int, multipliers: int, taps: int = 1, *,
                     hidden_table: bool = False) -> int:
    """A tile's first fc2 issue, in cycles from its first fc1 issue: after fc1's issues, and
    late enough that fc2's read of the last hidden chunk (a cycle after its issue, K2 - 1
    issues in) comes after the last hidden code is written. taps: inputs per neuron are
    taps x the layer's width (the paper's 3x1 excite: 3). hidden_table: the hidden code
    comes out of a table (SiLU), HIDDEN_TABLE_CYCLES after fc1's code; else (ReLU) it is
    the code's register, HIDDEN_CODE_CYCLES after."""
    k1 = math.ceil(taps * channels / multipliers)
    k2 = math.ceil(taps * hidden / multipliers)
    last1 = hidden * k1 - 1
    written = (last1 + excite_issue_to_code(channels, hidden, multipliers)
               + (HIDDEN_TABLE_CYCLES if hidden_table else HIDDEN_CODE_CYCLES))
    return max(last1 + 1, written + 1 - k2)


def excite_cycles_per_tile(channels: int, hidden: int, multipliers: int, taps: int = 1, *,
                           hidden_table: bool = False) -> int:
    """Issue cycles of one tile (the module docstring's schedule); tiles follow each other."""
    k2 = math.ceil(taps * hidden / multipliers)
    return (excite_fc2_start(channels, hidden, multipliers, taps, hidden_table=hidden_table)
            + channels * k2)


def excite_drain_cycles(channels: int, hidden: int, multipliers: int) -> int:
    """Cycles after a strip's last issue until its last gate is written (inclusive)."""
    return excite_issue_to_code(channels, hidden, multipliers) + CODE_TO_GATE


def excite_latency_cycles(channels: int, hidden: int, tiles_per_strip: int,
                          multipliers: int, taps: int = 1, *,
                          hidden_table: bool = False) -> int:
    """Cycles from a strip's last input beat (with taps > 1: the last beat of the last strip
    it looks ahead to) until all its gates are written."""
    tile = excite_cycles_per_tile(channels, hidden, multipliers, taps, hidden_table=hidden_table)
    return (EXCITE_LEAD_CYCLES + tiles_per_strip * tile
            + excite_drain_cycles(channels, hidden, multipliers))


def lookahead_strips(taps: int) -> int:
    """Strips after strip i whose pooled values its gates need: each of the two excite
    convolutions with taps rows of tiles reaches taps // 2 strips down (the paper's 3x1
    excite: 2; a 1x1 excite: 0)."""
    return 2 * (taps // 2)


def full_throughput_depth(tile_rows: int, width: int, channels: int, hidden: int,
                          tiles_per_strip: int, lanes: int, multipliers: int,
                          taps: int = 1, *, hidden_table: bool = False) -> int:
    """Strip-buffer depth in beats that never stalls the input: the strip, the strips its
    excite looks ahead to, and the excite latency."""
    return ((1 + lookahead_strips(taps)) * strip_beats(tile_rows, width, channels, lanes)
            + excite_latency_cycles(channels, hidden, tiles_per_strip, multipliers, taps,
                                    hidden_table=hidden_table))


def multipliers_for_full_throughput(tile_rows: int, width: int, channels: int, hidden: int,
                                    tiles_per_strip: int, lanes: int, taps: int = 1) -> int:
    """Fewest excite multipliers whose strip latency fits in one strip time; at most
    max(channels, hidden), the most a unit builds (excite_lanes), with any taps."""
    budget = strip_beats(tile_rows, width, channels, lanes)
    for q in range(1, max(channels, hidden) + 1):
        if excite_latency_cycles(channels, hidden, tiles_per_strip, q, taps) <= budget:
            return q
    # Even one multiplier per neuron is too slow: the fixed per-tile overhead dominates
    # (tiny strips with many tiles). Report the widest MAC a unit builds; the input will stall.
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


# ---- ECA's excite stage (issue 18: tse/rtl/eca_excite.py) ----------------------------------
#
# The squeeze is SE's (P mean units into two pooled banks, MEAN_STAGES); then, per tile, a
# window register of the tile's C pooled codes with (k-1)/2 zero-point codes at each end (the
# zero padding: a padded tap adds 0) slides one channel a cycle, and each cycle issues one
# output channel: k products of (code - zx) and the constant taps, an adder tree with a
# register on every level, acc x M, the rounding shift and zero point, the code's register,
# the sigmoid ROM, the gate write. A pipeline that never stalls, as SE's excite MAC: a strip
# is a fixed number of cycles, lead-in + tiles_x * C + drain.

ECA_LEAD_CYCLES = EXCITE_LEAD_CYCLES + 2
"""Cycles from a strip's last sums to its first ECA issue: SE's lead-in (the means and the
pooled register), the pooled bank read a cycle later, and the window register's load."""
ECA_ISSUE_TO_TREE = 1
"""Cycles from an ECA issue (its window on the register) to the adder tree's first level:
the k products on registers."""
ECA_TREE_TO_GATE = 8
"""Cycles from the ECA accumulator (the tree's last level) to the gate's write: acc x M
(tse/rtl/pipeline.MUL_STAGES = 4), the rounding shift and the zero point (REQUANT_STAGES = 2),
the code's register, the sigmoid ROM's read."""


def eca_tree_levels(taps: int) -> int:
    """Levels of the ECA excite's adder tree over its k products (one register each)."""
    return max(0, (taps - 1).bit_length())


def eca_cycles_per_tile(channels: int) -> int:
    """ECA issue cycles of one tile: one output channel a cycle, all k taps at once."""
    return channels


def eca_drain_cycles(taps: int) -> int:
    """Cycles after a strip's last ECA issue until its last gate is written (inclusive)."""
    return ECA_ISSUE_TO_TREE + eca_tree_levels(taps) + ECA_TREE_TO_GATE


def eca_latency_cycles(channels: int, taps: int, tiles_per_strip: int) -> int:
    """Cycles from a strip's last input beat until all its ECA gates are written."""
    return (ECA_LEAD_CYCLES + tiles_per_strip * eca_cycles_per_tile(channels)
            + eca_drain_cycles(taps))


def eca_full_throughput_depth(tile_rows: int, width: int, channels: int, taps: int,
                              tiles_per_strip: int, lanes: int) -> int:
    """Strip-buffer depth in beats of the ECA unit that never stalls the input: the strip and
    the ECA excite latency."""
    return (strip_beats(tile_rows, width, channels, lanes)
            + eca_latency_cycles(channels, taps, tiles_per_strip))


# ---- SRM's excite stage (issue 18: tse/rtl/srm_excite.py) ----------------------------------
#
# The squeeze is SE's (P mean units into two pooled banks), and beside it P deviation units
# turn the P (S1, S2) pairs of each completing beat into std codes, SRM_DEV_STAGES later,
# into two std banks: D = n S2 - S1^2, V = round_half_up(D R[n] / 2^s[n]), the non-restoring
# integer square root (a register per result bit), its rounding to nearest, the std
# requantizer. Then, per tile, two window registers of the tile's C pooled and C std codes
# slide one channel a cycle, and each cycle issues one channel: the style requantizers of
# the mean and the deviation, the channel's two weights and folded bias (a ROM word), the
# two products, their sum and the bias, acc x M[c], the rounding shift by s[c] and the zero
# point, the code's register, the sigmoid ROM, the gate write. A pipeline that never stalls:
# a strip is lead-in + tiles_x * C + drain cycles.

SRM_ROOT_BITS = 20
"""Bits of the square root of SRM's variance V (24 fractional bits): V < 2**40, since the
unbiased variance of codes spanning 255 is at most 255**2 / 2 < 2**15 (and R[n] / 2**s[n]
is within a factor 2 of 1 / (n (n - 1)))."""
SRM_DEV_STAGES = 40
"""Registers of a deviation unit from the accepted sums to its std code (tse/rtl/srm_excite
.deviation): the operands (S1, S2, n), n S2 and S1^2 (MUL_STAGES = 4), D, D x R[n] (4), the
variance's rounding shift (2), the root (SRM_ROOT_BITS, one per result bit), the remainder's
correction and the rounding to nearest (2), r x M_std (4), the requantizer (2): 40."""
SRM_LEAD_CYCLES = SRM_DEV_STAGES + 3
"""Cycles from a strip's last sums to its first SRM issue: the deviation units (deeper than
the means), the std bank's register, the bank read a cycle later and the windows' load (as
ECA_LEAD_CYCLES after the means)."""
SRM_ISSUE_TO_GATE = 18
"""Cycles from an SRM issue (its channel's codes on the windows) to the gate's write: the
style requantizers ((code - z) x m: MUL_STAGES = 4, REQUANT_STAGES = 2, the style codes'
register), the two products, their sum, the bias, acc x M[c] (4), the rounding shift and
zero point (2), the code's register, the sigmoid ROM's read."""


def srm_cycles_per_tile(channels: int) -> int:
    """SRM issue cycles of one tile: one channel a cycle."""
    return channels


def srm_drain_cycles() -> int:
    """Cycles after a strip's last SRM issue until its last gate is written (inclusive)."""
    return SRM_ISSUE_TO_GATE


def srm_latency_cycles(channels: int, tiles_per_strip: int) -> int:
    """Cycles from a strip's last input beat until all its SRM gates are written."""
    return (SRM_LEAD_CYCLES + tiles_per_strip * srm_cycles_per_tile(channels)
            + srm_drain_cycles())


def srm_full_throughput_depth(tile_rows: int, width: int, channels: int,
                              tiles_per_strip: int, lanes: int) -> int:
    """Strip-buffer depth in beats of the SRM unit that never stalls the input: the strip and
    the SRM excite latency."""
    return (strip_beats(tile_rows, width, channels, lanes)
            + srm_latency_cycles(channels, tiles_per_strip))
