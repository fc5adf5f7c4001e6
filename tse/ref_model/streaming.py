"""The streaming model of the TSE unit: the executable specification the RTL follows.

Written like an HLS dataflow design: four processes exchange beats and messages through
bounded FIFOs, one step per clock cycle.

    input beats --> InputSlice --> line_accumulator --(strip sums)--> excite_mac --(gates)-->
                                         |                                        GateMemory
                                         |                                            |
                                         +--> StripBuffer (FIFO) --> tile_broadcaster --> output

A beat is P channel codes of one pixel ("lanes") and a last flag (TLAST, the last beat of a
frame); beats come in raster order, channels innermost: for each row, for each pixel, its C
channels P at a time. Every process keeps its own position counters, as the RTL does, and
checks the last flag against them.

  InputSlice        the input's register slice (tse/rtl/register_slice.py): takes a beat
                    when it held fewer than plan.INPUT_SLICE_BEATS at the start of the cycle
                    (a registered ready: the same cycle's take does not count); a beat taken
                    in cycle t reaches the next slice or the line accumulator in t + 1.
                    plan.INPUT_SLICE_STAGES of them in a row (slice_stage moves a beat from
                    one to the next); the input stalls only when the first is full.
  line_accumulator  takes one beat per cycle from the slice when the strip buffer has room
                    (and, on a beat that completes a tile, when the excite MAC can take the
                    strip's sums); adds (x - zero point) of each lane into the sum of (tile column,
                    channel);
                    pushes the beat into the strip buffer; on a strip's last beat hands the
                    strip's sums and tile element counts to the excite MAC and clears them.
  excite_mac        per strip: squeeze, fc1 + ReLU, fc2, sigmoid for each of its tiles
                    (numerics.excite_tile); the gates are written to the gate memory
                    excite_latency_cycles after the strip's last beat (tse.ref_model.plan's timing
                    model, the MAC being free), into the bank of the strip's parity once the
                    tile broadcaster has finished with the strip two before.
  tile_broadcaster  pops one beat per cycle from the strip buffer once its strip's gates are
                    written, multiplies each lane by its tile's gate (numerics.scale) and
                    emits the output beat (the output side never stalls; the RTL's beat
                    leaves plan.BROADCAST_LATENCY_CYCLES after the same pop).
  StripBuffer       a FIFO of `depth` beats; its peak occupancy is recorded.

Within a cycle the processes step downstream first (tile_broadcaster, excite_mac,
line_accumulator, slice_stage, input_slice), so a value written in cycle t is seen by its
consumer in cycle t + 1 and a beat popped from a full FIFO frees its slot for a push in the
same cycle (the input slices alone count their occupancy at the cycle's start). With that, the
strip buffer's peak occupancy at full throughput is the strip plus the excite latency
(plan.full_throughput_depth), and a shallower buffer stalls the input.

The arithmetic is tse.ref_model.numerics (shared with the numba kernels, which must agree bit for
bit); this model is plain Python and slow: use it on small frames.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from . import numerics as nm
from . import plan
from .config import TSEConfig
from .edge_tiles import kind_table
from .errors import ConfigError, InputError


@dataclass
class Beat:
    """P lanes of one pixel's channels, and TLAST (the frame's last beat)."""
    lanes: np.ndarray
    last: bool


@dataclass
class StripSums:
    """What the line accumulator hands the excite MAC for one strip."""
    frame: int
    strip: int                 # strip index in the frame (tile row)
    sums: np.ndarray           # int64 [tiles_x, C]
    counts: np.ndarray         # int64 [tiles_x]: elements per tile (pixels x 1)
    saturated: np.ndarray      # bool [tiles_x, C]
    last_beat_cycle: int


class Fifo:
    """A bounded FIFO: push when not full, pop when not empty; records peak occupancy."""

    def __init__(self, name: str, depth: int):
        self.name, self.depth = name, depth
        self.items: deque = deque()
        self.peak = 0

    def can_push(self) -> bool:
        return len(self.items) < self.depth

    def push(self, item) -> None:
        assert self.can_push(), f"{self.name}: push while full"
        self.items.append(item)
        self.peak = max(self.peak, len(self.items))

    def can_pop(self) -> bool:
        return bool(self.items)

    def pop(self):
        return self.items.popleft()

    def __len__(self) -> int:
        return len(self.items)


class StripBuffer(Fifo):
    """The strip buffer: a FIFO of input beats, `depth` beats deep."""

    def __init__(self, depth: int):
        super().__init__("strip buffer", depth)


class InputSlice(Fifo):
    """The input's register slice: a FIFO of plan.INPUT_SLICE_BEATS whose ready is the
    occupancy at the start of the cycle (tick), as the RTL's registered s_axis_tready."""

    def __init__(self):
        super().__init__("input slice", plan.INPUT_SLICE_BEATS)
        self.held = 0

    def tick(self) -> None:
        self.held = len(self.items)

    def can_push(self) -> bool:
        return self.held < self.depth


class GateMemory:
    """Two banks of [tiles_x, C] gates: strip s is written to bank s % 2 and read from it
    while strip s + 1 is written to the other bank."""

    def __init__(self, tiles_x: int, channels: int):
        self.gates = np.zeros((2, tiles_x, channels), np.uint8)
        self.holds = [None, None]          # which strip (sequence number) a bank holds

    def can_write(self, seq: int) -> bool:
        return self.holds[seq % 2] is None

    def write(self, seq: int, gates: np.ndarray) -> None:
        assert self.can_write(seq)
        self.gates[seq % 2] = gates
        self.holds[seq % 2] = seq

    def ready(self, seq: int) -> bool:
        return self.holds[seq % 2] == seq

    def release(self, seq: int) -> None:
        assert self.holds[seq % 2] == seq
        self.holds[seq % 2] = None


class Clock:
    def __init__(self):
        self.cycle = 0


class Stats:
    def __init__(self):
        self.input_stall_cycles = 0


class StreamError(InputError):
    """The stream broke the protocol (TLAST where the position counters disagree)."""


# ---- the three processes ---------------------------------------------------------------

def input_slice(source, slice_: InputSlice, stats: Stats):
    """Offer the source's beats one per cycle; each waits while the slice is full."""
    for beat in source:
        while not slice_.can_push():
            stats.input_stall_cycles += 1          # the beat waits: input not ready
            yield
        slice_.push(beat)
        yield


def slice_stage(upstream: InputSlice, downstream: InputSlice):
    """Move a beat from one input slice to the next, one a cycle, when the next has room."""
    while True:
        if upstream.can_pop() and downstream.can_push():
            downstream.push(upstream.pop())
        yield


def line_accumulator(cfg: TSEConfig, T, profile: int, clock: Clock, slice_: Fifo,
                     strip_buffer: StripBuffer, to_excite: Fifo):
    """Accumulate the beats of slice_ (the input slice) into per-(tile column, channel) sums;
    forward every beat."""
    P, C, W, H = cfg.lanes, cfg.channels, cfg.width, cfg.height
    th, tw, tx = cfg.tile_rows, cfg.tile_cols, cfg.tiles_x
    groups = C // P
    sums = np.zeros((tx, C), np.int64)
    saturated = np.zeros((tx, C), np.bool_)
    counts = np.zeros(tx, np.int64)
    frame = row = col = grp = 0
    while True:
        last_row = row % th == th - 1 or row == H - 1
        end_of_strip = grp == groups - 1 and col == W - 1 and last_row
        # a beat that completes a tile hands its sums to the excite MAC's pooled bank (the
        # RTL's mean units take them as they come), so it waits until the MAC can take the
        # strip: the bank is free once the strip two before is committed
        completes_tile = last_row and (col % tw == tw - 1 or col == W - 1)
        while not (slice_.can_pop() and strip_buffer.can_push()
                   and (not completes_tile or to_excite.can_push())):
            yield                                  # the slice holds the beat
        beat = slice_.pop()
        expect_last = grp == groups - 1 and col == W - 1 and row == H - 1
        if beat.last != expect_last:
            raise StreamError(f"line_accumulator: last flag {beat.last} on beat "
                              f"(row {row}, col {col}, group {grp}) of frame {frame}; "
                              f"allowed: last only on the frame's final beat")
        strip_buffer.push(beat)
        j = col // tw
        nm.accumulate_beat(sums[j], saturated[j], grp * P, beat.lanes, T, profile)
        if grp == 0:
            counts[j] += 1
        if end_of_strip:
            to_excite.push(StripSums(frame, row // th, sums.copy(), counts.copy(),
                                     saturated.copy(), clock.cycle))
            sums[:] = 0
            saturated[:] = False
            counts[:] = 0
        # advance the position: channel group, then column, then row, then frame
        grp += 1
        if grp == groups:
            grp, col = 0, col + 1
            if col == W:
                col, row = 0, row + 1
                if row == H:
                    row, frame = 0, frame + 1
        yield


def excite_mac(cfg: TSEConfig, T, profile: int, clock: Clock, from_accumulator: Fifo,
               gates: GateMemory, latency: int, results: dict):
    """Squeeze and excite every tile of a strip; write the strip's gates after `latency`."""
    C, hid, tx = cfg.channels, cfg.hidden, cfg.tiles_x
    # the reciprocal tables are indexed by the edge-tile kind
    kinds = kind_table(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols)
    seq = 0
    while True:
        while not from_accumulator.can_pop():
            yield
        msg = from_accumulator.pop()
        # the work of `latency` cycles, from the cycle after the strip's last beat
        pooled = np.zeros((tx, C), np.uint8)
        hidden = np.zeros((tx, hid), np.uint8)
        excite = np.zeros((tx, C), np.uint8)
        gate = np.zeros((tx, C), np.uint8)
        sat1 = sat2 = 0
        for j in range(tx):
            kind = int(kinds[msg.strip, j])
            s1, s2 = nm.excite_tile(msg.sums[j], kind, T, profile, pooled[j], hidden[j],
                                    excite[j], gate[j])
            sat1, sat2 = sat1 + s1, sat2 + s2
        for _ in range(latency - 1):
            yield
        while not gates.can_write(seq):            # the broadcaster still reads strip seq-2
            yield
        gates.write(seq, gate)
        results["strips"].append((msg, pooled, hidden, excite, gate, sat1, sat2))
        seq += 1
        yield


def tile_broadcaster(cfg: TSEConfig, T, profile: int, clock: Clock,
                     strip_buffer: StripBuffer, gates: GateMemory, out: list):
    """Multiply every buffered beat by its tile's gates once they are written."""
    P, C, W, H = cfg.lanes, cfg.channels, cfg.width, cfg.height
    th, tw = cfg.tile_rows, cfg.tile_cols
    groups = C // P
    row = col = grp = seq = 0
    while True:
        while not (strip_buffer.can_pop() and gates.ready(seq)):
            yield
        beat = strip_buffer.pop()
        lanes = np.zeros(P, np.uint8)
        nm.scale_beat(beat.lanes, gates.gates[seq % 2][col // tw], grp * P, T, profile, lanes)
        out.append(Beat(lanes, beat.last))
        end_of_strip = (grp == groups - 1 and col == W - 1
                        and (row % th == th - 1 or row == H - 1))
        grp += 1
        if grp == groups:
            grp, col = 0, col + 1
            if col == W:
                col, row = 0, row + 1
                if row == H:
                    row = 0
        if end_of_strip:
            gates.release(seq)
            seq += 1
        yield


# ---- the unit ----------------------------------------------------------------------------

def beats_of(cfg: TSEConfig, x: np.ndarray):
    """The input stream of frames x [N, H, W, C]: raster order, channels innermost."""
    P = cfg.lanes
    for n in range(x.shape[0]):
        flat = x[n].reshape(-1)
        total = flat.size // P
        for b in range(total):
            yield Beat(flat[b * P:(b + 1) * P], b == total - 1)


def run(cfg: TSEConfig, params, x, depth: int | None = None,
        profile: str | None = None) -> dict:
    """Stream frames x (uint8 [N, H, W, C]) through the unit, cycle by cycle.

    params: IntParams or QuantParams; depth: strip-buffer depth in beats (default: the
    full-throughput depth, cfg.full_throughput_depth); profile: "torch" or "hw" (default
    cfg.profile). Returns the stage arrays of numerics.STAGES (as kernels.run does), the
    per-stage "saturated" counts and "stats": peak_strip_buffer_occupancy,
    excite_latency_cycles, input_stall_cycles, stalls, cycles, depth,
    full_throughput_depth."""
    profile = cfg.profile if profile is None else profile
    code = nm.profile_code(profile)
    ip = nm.int_params_for(cfg, params)
    x = nm.check_frames(cfg, x)
    T = ip.tables()
    strip = cfg.strip_beats
    depth = cfg.full_throughput_depth if depth is None else depth
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < strip:
        raise ConfigError(f"depth: {depth!r} is not allowed; allowed: an integer >= {strip} "
                          f"(one strip of {cfg.tile_rows} rows is {strip} beats: the gates "
                          "of a strip need all of it, so a smaller buffer deadlocks)")
    latency = cfg.excite_latency_cycles     # tse.ref_model.plan's, the dialect's included
    clock, stats = Clock(), Stats()
    strip_buffer = StripBuffer(depth)
    sums_fifo = Fifo("strip sums", 1)
    slices = [InputSlice() for _ in range(plan.INPUT_SLICE_STAGES)]
    gates = GateMemory(cfg.tiles_x, cfg.channels)
    results = {"strips": []}
    out_beats: list = []
    total = x.shape[0] * cfg.beats_per_frame
    processes = [  # downstream first: see the module docstring
        tile_broadcaster(cfg, T, code, clock, strip_buffer, gates, out_beats),
        excite_mac(cfg, T, code, clock, sums_fifo, gates, latency, results),
        line_accumulator(cfg, T, code, clock, slices[-1], strip_buffer, sums_fifo),
        *[slice_stage(a, b) for a, b in reversed(list(zip(slices, slices[1:])))],
        input_slice(beats_of(cfg, x), slices[0], stats),
    ]
    limit = (4 * total + (x.shape[0] * cfg.tiles_y + 2) * (latency + 2) + 100
             + plan.INPUT_SLICE_CYCLES)
    while len(out_beats) < total:
        clock.cycle += 1
        if clock.cycle > limit:
            raise RuntimeError(f"streaming model: no progress after {limit} cycles "
                               f"({len(out_beats)} of {total} output beats)")
        for s in slices:
            s.tick()
        for p in processes:
            next(p, None)
    return _collect(cfg, x, results, out_beats, stats, strip_buffer, latency, depth,
                    clock.cycle)


def _collect(cfg, x, results, out_beats, stats, strip_buffer, latency, depth, cycles):
    n = x.shape[0]
    ty, tx, C, hid = cfg.tiles_y, cfg.tiles_x, cfg.channels, cfg.hidden
    out = {"tile_sums": np.zeros((n, ty, tx, C), np.int64),
           "pooled": np.zeros((n, ty, tx, C), np.uint8),
           "hidden": np.zeros((n, ty, tx, hid), np.uint8),
           "excite": np.zeros((n, ty, tx, C), np.uint8),
           "gate": np.zeros((n, ty, tx, C), np.uint8)}
    saturated = {"tile_sums": 0, "hidden": 0, "excite": 0}
    for msg, pooled, hidden, excite, gate, s1, s2 in results["strips"]:
        f, i = msg.frame, msg.strip
        out["tile_sums"][f, i] = msg.sums
        out["pooled"][f, i], out["hidden"][f, i] = pooled, hidden
        out["excite"][f, i], out["gate"][f, i] = excite, gate
        saturated["tile_sums"] += int(msg.saturated.sum())
        saturated["hidden"] += s1
        saturated["excite"] += s2
    if out_beats and not out_beats[-1].last:
        raise StreamError("tile_broadcaster: the last output beat has no last flag")
    out["output"] = np.concatenate([b.lanes for b in out_beats]).reshape(x.shape)
    out["saturated"] = saturated
    ftd = cfg.full_throughput_depth
    out["stats"] = {"peak_strip_buffer_occupancy": strip_buffer.peak,
                    "excite_latency_cycles": latency,
                    "input_stall_cycles": stats.input_stall_cycles,
                    "stalls": stats.input_stall_cycles > 0,
                    "cycles": cycles, "depth": depth, "full_throughput_depth": ftd}
    return out
