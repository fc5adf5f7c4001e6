"""The streaming model of TSE with the paper's 3x1 excite (Appendix B; block "se",
excite_kernel "3x1"), hw profile: the dataflow a unit for this block follows, beat by beat, in
the style of tse.ref_model.attention_streaming (whose line accumulator it uses) and
tse.ref_model.streaming (Beat, Fifo, the input order).

    input beats --> line_accumulator --(strip sums)--> excite --(gates of strip i-2)-->
                         |                                                       |
                         +--> strip buffer (Fifo) -----------------------> tile_broadcaster

  line_accumulator  attention_streaming's: one beat per cycle when the strip buffer has room,
                    d = x - zx into the sum of (tile column, channel), TLAST checked; on a
                    strip's last beat hands the strip's sums to the excite and clears them.
  excite            pools strip s (attention_hw.squeeze_hw) into a window of pooled rows,
                    computes hidden row s-1 (fc1 over pooled rows s-2, s-1, s) into a window
                    of hidden rows, then the excite and gates of strip s-2 (fc2 over hidden
                    rows s-3, s-2, s-1): attention_kernels.conv_tile, the kernel's function.
                    A strip's gates therefore wait for the pooled values of the two strips
                    after it (plan.lookahead_strips(3) = 2). On the frame's last strip the
                    remaining hidden and excite rows follow at once, the rows beyond the
                    frame's bottom (and above its top) zero padding, as excite3x1_hw_stages.
                    Each window holds at most `taps` rows (stats: pooled_window_rows,
                    hidden_window_rows): never a frame.
  tile_broadcaster  pops one beat per cycle once its strip's gates are written; each lane
                    times its tile's gate (mul_hw).

Timing. excite_latency L (cycles, >= 1; default the plan's for this configuration,
plan.excite_latency_cycles(C, hidden, tiles_x, Q, taps=3), the figure buffers.py adds): the
gates of the k-th strip a handoff completes are written L*k cycles after the cycle its last
input beat was pushed, and are read from the next cycle (a frame's last strip completes three:
strips ty-3, ty-2 and ty-1, one after another). No other latency is modelled; the order of the
work and the arithmetic are the unit's.

The strip buffer's real occupancy. Strip i's beats stay until strip i+2 is complete and its
gates are written, so a beat waits in the buffer for the two strips after its own and then
for the excite latency; in a unit that keeps up (L no more than a strip time, buffers.py's
keeps_up) the peak is

    peak = min(3 x strip_beats, beats_per_frame) + L        (no_stall_depth below)

beats, and a FIFO of that depth never stalls the input (stats: input_stall_cycles 0; one beat
less and it stalls). buffers.py / plan.full_throughput_depth(..., taps=3) size it as
3 x strip_beats + L: the same number whenever the frame holds three full strips
(H >= 3 th; tests/test_attention_hw.py checks peak == buffers.plan_layer(...).tse_stream_beats
on such a shape). With less (tiles_y = 1 or 2, e.g. a 7xW strip on a 7- or 14-row map or plain
SE; or tiles_y = 3 with a short last strip) the frame's own end supplies the lookahead (zero
padding), so the real peak is the frame plus L, and buffers.py's figure is larger than needed
by 3 x strip_beats - beats_per_frame. A short last strip in a taller frame does not raise the
peak: any three consecutive strips hold at most 3 x strip_beats beats. When L exceeds a strip
time the input stalls whatever the depth (the excite does not keep up), as in buffers.py.

Plain Python and slow: use small frames.
"""
from __future__ import annotations

import numpy as np

from . import plan
from .attention_hw import squeeze_hw
from .attention_kernels import Excite3x1Hw, check_excite3x1, conv_args, conv_tile
from .attention_streaming import line_accumulator, tile_broadcaster
from .config import TSEConfig
from .edge_tiles import kind_table
from .errors import InputError
from .numerics import check_frames
from .streaming import Fifo, beats_of


def lookahead_strips(h: Excite3x1Hw) -> int:
    """Strips after strip i whose pooled values its gates need (plan.lookahead_strips)."""
    return plan.lookahead_strips(h.taps)


def plan_latency(cfg: TSEConfig, h: Excite3x1Hw) -> int:
    """The excite latency of this configuration's unit (cfg.excite_latency_cycles:
    plan.excite_latency_cycles with taps = 3 and the multipliers the unit builds, as
    Excite3x1UnitPlan and buffers.plan_layer)."""
    assert h.taps == 3, h.taps
    return cfg.excite_latency_cycles


def no_stall_depth(cfg: TSEConfig, h: Excite3x1Hw, excite_latency: int) -> int:
    """Strip-buffer depth in beats at which this model's input never stalls (its peak
    occupancy): the strip, the strips it looks ahead to (no more than the frame) and L."""
    held = min((1 + lookahead_strips(h)) * cfg.strip_beats, cfg.beats_per_frame)
    return held + excite_latency


class _Clock:
    cycle = 0


def _excite(cfg, h: Excite3x1Hw, kinds, from_accumulator, gates, stages, clock, latency,
            windows):
    ty, tx, C = cfg.tiles_y, cfg.tiles_x, cfg.channels
    taps = h.taps
    half = (taps - 1) // 2
    hid = h.fc1.weights.shape[0]
    pooled_rows: dict = {}          # row -> [tx, C]: the window of pooled rows
    hidden_rows: dict = {}          # row -> [tx, hidden]
    next_hidden = next_excite = 0
    slots = np.arange(taps, dtype=np.int64)

    def conv(rows, r, layer, out_width):
        window = np.zeros((taps, tx, rows[next(iter(rows))].shape[1]), np.uint8)
        for t in range(taps):
            i = r + t - half
            slots[t] = t if 0 <= i < ty else -1        # beyond the frame: zero padding
            if slots[t] >= 0:
                window[t] = rows[i]
        out = np.empty((tx, out_width), np.uint8)
        for j in range(tx):
            conv_tile(window, slots, j, *conv_args(layer), h.frac_bits, out[j])
        return out

    while True:
        if not from_accumulator.can_pop():
            yield
            continue
        frame, strip, sums, _ = from_accumulator.pop()
        pushed = clock.cycle - 1            # the cycle the strip's last beat was pushed
        pooled = np.empty((tx, C), np.uint8)
        for j in range(tx):
            for c in range(C):
                pooled[j, c] = squeeze_hw(sums[j, c], kinds[strip, j], h.zx, h.mean.recip,
                                          h.mean.shift, h.mean.rounding)
        pooled_rows[strip] = pooled
        windows["pooled"] = max(windows["pooled"], len(pooled_rows))
        stages["tile_sums"].append((frame, strip, sums))
        stages["pooled"].append((frame, strip, pooled))
        last = strip == ty - 1
        written = 0
        # hidden rows whose lookahead is in: up to strip - half (every row at the frame's end);
        # after each, the excite rows whose hidden lookahead is in
        for r in range(next_hidden, (ty - 1 if last else strip - half) + 1):
            hidden_rows[r] = conv(pooled_rows, r, h.fc1, hid)
            windows["hidden"] = max(windows["hidden"], len(hidden_rows))
            stages["hidden"].append((frame, r, hidden_rows[r]))
            next_hidden = r + 1
            for old in [k for k in pooled_rows if k < r + 1 - half]:
                del pooled_rows[old]        # no later hidden row reads it
            for e in range(next_excite, (ty - 1 if r == ty - 1 else r - half) + 1):
                excite = conv(hidden_rows, e, h.fc2, C)
                gate = h.gate_lut[excite].astype(np.uint8)
                written += 1
                gates[(frame, e)] = (pushed + written * latency + 1, gate)
                stages["excite"].append((frame, e, excite))
                stages["gate"].append((frame, e, gate))
                next_excite = e + 1
                for old in [k for k in hidden_rows if k < e + 1 - half]:
                    del hidden_rows[old]    # no later excite row reads it
        if last:
            pooled_rows.clear()
            hidden_rows.clear()
            next_hidden = next_excite = 0
        yield


def run(cfg: TSEConfig, h: Excite3x1Hw, x, depth: int | None = None,
        excite_latency: int | None = None) -> dict:
    """Stream frames x (uint8 [N, H, W, C], channels last) through the 3x1-excite unit of cfg
    with hw parameters h (attention_kernels.excite3x1_hw_params). depth: the strip buffer's
    beats (default no_stall_depth); excite_latency: L (default plan_latency). Returns the
    stage arrays as attention_kernels.excite3x1_frames does, plus "stats":
    peak_strip_buffer_occupancy, input_stall_cycles, cycles, depth, excite_latency,
    lookahead_strips, no_stall_depth, pooled_window_rows, hidden_window_rows."""
    check_excite3x1(cfg, h)
    x = check_frames(cfg, x)
    latency = plan_latency(cfg, h) if excite_latency is None else int(excite_latency)
    if latency < 1:
        raise InputError(f"excite_latency: {latency} is not allowed; allowed: 1 or more "
                         "cycles (the gates are written after the strip's last beat)")
    need = no_stall_depth(cfg, h, latency)
    depth = need if depth is None else depth
    least = min((1 + lookahead_strips(h)) * cfg.strip_beats, cfg.beats_per_frame)
    if depth < least:
        raise InputError(f"depth: {depth} beats is not allowed; allowed: {least} or more (a "
                         "strip and the strips its gates look ahead to, or the frame)")
    strip_buffer = Fifo("strip buffer", depth)
    to_excite = Fifo("strip sums", 2)
    clock = _Clock()
    gates: dict = {}
    stages: dict = {k: [] for k in ("tile_sums", "pooled", "hidden", "excite", "gate")}
    windows = {"pooled": 0, "hidden": 0}
    out_beats: list = []
    source = beats_of(cfg, x)
    processes = [tile_broadcaster(cfg, h, strip_buffer, gates, out_beats, clock),
                 _excite(cfg, h, kind_table(cfg.height, cfg.width, cfg.tile_rows,
                                            cfg.tile_cols), to_excite, gates, stages, clock,
                         latency, windows),
                 line_accumulator(cfg, h.zx, False, source, strip_buffer, to_excite)]
    total = x.shape[0] * cfg.beats_per_frame
    cycles, stalls, limit = 0, 0, 4 * total + 4 * x.shape[0] * cfg.tiles_y * (latency + 4) + 100
    pushed = 0
    while len(out_beats) < total:
        cycles += 1
        clock.cycle = cycles
        if cycles > limit:
            raise RuntimeError(f"3x1 excite streaming model: no progress after {limit} cycles "
                               f"({len(out_beats)} of {total} output beats)")
        for p in processes:                        # downstream first, as streaming.run
            before = len(strip_buffer)
            next(p, None)
        # the accumulator ran last: a cycle with input left and no push is an input stall
        if pushed < total and len(strip_buffer) == before:
            stalls += 1
        pushed += len(strip_buffer) - before
    n = x.shape[0]
    ty, tx, C = cfg.tiles_y, cfg.tiles_x, cfg.channels
    hid = h.fc1.weights.shape[0]
    out = {"tile_sums": np.zeros((n, ty, tx, C), np.int64),
           "pooled": np.zeros((n, ty, tx, C), np.uint8),
           "hidden": np.zeros((n, ty, tx, hid), np.uint8),
           "excite": np.zeros((n, ty, tx, C), np.uint8),
           "gate": np.zeros((n, ty, tx, C), np.uint8)}
    for role, rows in stages.items():
        for frame, row, value in rows:
            out[role][frame, row] = value
    out["output"] = np.concatenate(out_beats).reshape(x.shape)
    out["stats"] = {"peak_strip_buffer_occupancy": strip_buffer.peak,
                    "input_stall_cycles": stalls, "cycles": cycles, "depth": depth,
                    "excite_latency": latency, "lookahead_strips": lookahead_strips(h),
                    "no_stall_depth": need, "pooled_window_rows": windows["pooled"],
                    "hidden_window_rows": windows["hidden"]}
    return out
