"""The streaming model of tiled ECA and tiled SRM (issue 18), hw profile: the dataflow a unit for
these blocks follows, beat by beat, in the style of tse.ref_model.streaming (whose Beat, Fifo
and input order it uses).

    input beats --> line_accumulator --(strip sums [+ sums of squares])--> excite --(gates)-->
                         |                                                        |
                         +--> strip buffer (Fifo) ------------------------> tile_broadcaster

  line_accumulator  one beat per cycle when the strip buffer has room: adds d = x - zx of each
                    lane into the sum of (tile column, channel), and for SRM d^2 into the sum
                    of squares (attention_widths: 255^2 n fits square_sum_bits); its own
                    row / pixel / channel counters, checked against TLAST; on a strip's last
                    beat hands the strip's sums to the excite process and clears them.
  excite            per strip, per tile: attention_hw.eca_excite_tile / srm_excite_tile (the
                    kernels' functions), the gates written to the gate memory of the strip.
  tile_broadcaster  pops one beat per cycle once its strip's gates are written; each lane times
                    its tile's gate (mul_hw).

Timing is not the unit's (no excite latency is modelled: these blocks have no RTL yet); the
order of the work and the arithmetic are. Plain Python and slow: use small frames.
"""
from __future__ import annotations

import numpy as np

from .attention_hw import (EcaHw, SrmHw, eca_excite_tile, eca_tile_args, srm_excite_tile,
                           srm_tile_args)
from .config import TSEConfig
from .edge_tiles import kind_table
from .errors import InputError
from .hw_numerics import mul_hw
from .numerics import check_frames
from .streaming import Fifo, beats_of


def line_accumulator(cfg, zx, squares, source, strip_buffer, to_excite):
    """The line accumulator process (one beat per cycle; see the module docstring): also
    the 3x1 excite's (excite3x1_streaming). A generator that yields once per cycle."""
    C, P, W = cfg.channels, cfg.lanes, cfg.width
    shape = (cfg.tiles_x, C)
    sums, sq = np.zeros(shape, np.int64), np.zeros(shape, np.int64)
    row = col = c0 = frame = 0
    for beat in source:
        while not strip_buffer.can_push():
            yield
        d = beat.lanes.astype(np.int64) - zx
        j = col // cfg.tile_cols
        sums[j, c0:c0 + P] += d
        if squares:
            sq[j, c0:c0 + P] += d * d
        strip_buffer.push(beat)
        last_of_frame = row == cfg.height - 1 and col == W - 1 and c0 + P == C
        if beat.last != last_of_frame:
            raise InputError(f"stream: TLAST {beat.last} at frame {frame}, row {row}, "
                             f"column {col}, channel {c0}; allowed: TLAST on the frame's last "
                             "beat only")
        c0 += P
        if c0 == C:
            c0, col = 0, col + 1
            if col == W:
                col, row = 0, row + 1
                if row % cfg.tile_rows == 0 or row == cfg.height:
                    to_excite.push((frame, (row - 1) // cfg.tile_rows, sums.copy(), sq.copy()))
                    sums[:], sq[:] = 0, 0
                    if row == cfg.height:
                        row, frame = 0, frame + 1
        yield


def _excite(cfg, h, block, kinds, from_accumulator, gates, stages):
    while True:
        if not from_accumulator.can_pop():
            yield
            continue
        frame, strip, sums, sq = from_accumulator.pop()
        shape = sums.shape
        pooled, std, excite, gate = (np.empty(shape, np.uint8) for _ in range(4))
        for j in range(cfg.tiles_x):
            kind = kinds[strip, j]
            if block == "eca":
                eca_excite_tile(sums[j], kind, *eca_tile_args(h), pooled[j], excite[j],
                                gate[j])
            else:
                srm_excite_tile(sums[j], sq[j], kind, *srm_tile_args(h), pooled[j], std[j],
                                excite[j], gate[j])
        gates[(frame, strip)] = gate
        stages.append((frame, strip, sums, sq, pooled, std, excite, gate))
        yield


def tile_broadcaster(cfg, h, strip_buffer, gates, out_beats, clock=None):
    """The tile broadcaster process (see the module docstring), one beat a cycle once its
    strip's gates are in `gates` ({(frame, strip): gates [tiles_x, C]}); with a clock (the 3x1
    excite's, excite3x1_streaming), entries are (cycle written, gates) and a strip's gates
    are read from that cycle on. A generator that yields once per cycle."""
    C, P, W = cfg.channels, cfg.lanes, cfg.width
    row = col = c0 = frame = 0
    while True:
        key = (frame, row // cfg.tile_rows)
        entry = gates.get(key)
        if clock is not None and entry is not None:
            entry = entry[1] if clock.cycle >= entry[0] else None
        if not strip_buffer.can_pop() or entry is None:
            yield
            continue
        beat = strip_buffer.pop()
        g = entry[col // cfg.tile_cols, c0:c0 + P]
        out_beats.append(np.array([mul_hw(np.int64(x), h.zx, np.int64(gv), 0, h.mul_mult,
                                          h.mul_shift, h.zo, h.mul_rounding)
                                   for x, gv in zip(beat.lanes, g)], np.uint8))
        c0 += P
        if c0 == C:
            c0, col = 0, col + 1
            if col == W:
                col, row = 0, row + 1
                if row % cfg.tile_rows == 0 or row == cfg.height:
                    del gates[key]                 # the strip's gate bank is free again
                if row == cfg.height:
                    row, frame = 0, frame + 1
        yield


def run(cfg: TSEConfig, h, x, depth: int | None = None) -> dict:
    """Stream frames x (uint8 [N, H, W, C], channels last) through the ECA or SRM unit of
    cfg.block with hw parameters h (attention_hw.EcaHw / SrmHw). Returns the stage arrays as
    attention_kernels does, plus "stats": peak_strip_buffer_occupancy, cycles, depth."""
    block = cfg.block
    if block not in ("eca", "srm") or not isinstance(h, EcaHw if block == "eca" else SrmHw):
        raise InputError(f"params: {type(h).__name__} for block {block!r} is not allowed; "
                         "allowed: EcaHw with block 'eca', SrmHw with block 'srm'")
    x = check_frames(cfg, x)
    depth = cfg.strip_beats if depth is None else depth    # one strip: the least that flows
    strip_buffer = Fifo("strip buffer", depth)
    to_excite = Fifo("strip sums", 2)
    gates: dict = {}
    stages: list = []
    out_beats: list = []
    processes = [tile_broadcaster(cfg, h, strip_buffer, gates, out_beats),
                 _excite(cfg, h, block, kind_table(cfg.height, cfg.width, cfg.tile_rows,
                                                   cfg.tile_cols), to_excite, gates, stages),
                 line_accumulator(cfg, h.zx, block == "srm", beats_of(cfg, x), strip_buffer,
                                   to_excite)]
    total = x.shape[0] * cfg.beats_per_frame
    cycles, limit = 0, 4 * total + 4 * x.shape[0] * cfg.tiles_y + 100
    while len(out_beats) < total:
        cycles += 1
        if cycles > limit:
            raise RuntimeError(f"attention streaming model: no progress after {limit} cycles "
                               f"({len(out_beats)} of {total} output beats)")
        for p in processes:                        # downstream first, as streaming.run
            next(p, None)
    n = x.shape[0]
    shape = (n, cfg.tiles_y, cfg.tiles_x, cfg.channels)
    out = {"tile_sums": np.zeros(shape, np.int64), "pooled": np.zeros(shape, np.uint8),
           "excite": np.zeros(shape, np.uint8), "gate": np.zeros(shape, np.uint8)}
    if block == "srm":
        out["square_sums"] = np.zeros(shape, np.int64)
        out["std"] = np.zeros(shape, np.uint8)
    for frame, strip, sums, sq, pooled, std, excite, gate in stages:
        out["tile_sums"][frame, strip], out["pooled"][frame, strip] = sums, pooled
        out["excite"][frame, strip], out["gate"][frame, strip] = excite, gate
        if block == "srm":
            out["square_sums"][frame, strip], out["std"][frame, strip] = sq, std
    out["output"] = np.concatenate(out_beats).reshape(x.shape)
    out["stats"] = {"peak_strip_buffer_occupancy": strip_buffer.peak, "cycles": cycles,
                    "depth": depth}
    return out
