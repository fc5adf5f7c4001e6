"""Each RTL component in Amaranth's simulator against the streaming model's stage of the same
name: line_accumulator (tile sums and the beats it forwards), excite_mac (gates, and its
timing: a strip's gates commit exactly excite_latency_cycles after its last beat),
tile_broadcaster (output beats, TLAST, bank release), StripBuffer (a FIFO) and GateMemory
(its banks). Handshakes are randomly stalled on every side."""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from tse.ref_model import numerics as nm
from tse.ref_model import plan, streaming
from tse.ref_model.config import TSEConfig
from tse.ref_model.hw_profile import DEFAULT_HW
from tse.rtl.excite_mac import ExciteMac
from tse.rtl.gate_memory import GateMemory
from tse.rtl.line_accumulator import LineAccumulator
from tse.rtl.params import rtl_params
from tse.rtl.strip_buffer import StripBuffer
from tse.rtl.tile_broadcaster import TileBroadcaster

from rtl_helpers import (drive_excite_stage, frame_beats, pack_lanes, small_case,
                         unpack_lanes)

PATCH = TSEConfig(channels=8, height=7, width=8, tile="3x3", reduction=2, lanes=8,
                  excite_multipliers=8)
COLUMN = TSEConfig(channels=6, height=5, width=7, tile="Hx2", reduction=3, lanes=1,
                   excite_multipliers=3)
SATURATING = TSEConfig(channels=4, height=6, width=6, tile="3x4", reduction=2, lanes=2,
                       excite_multipliers=2,
                       hw=DEFAULT_HW.replace(saturate=True, sum_bits=8, fc1_acc_bits=12,
                                             fc2_acc_bits=11, bias_frac_bits=3))


def simulate(dut, tb):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()


def _sums_array(cfg, chunks, frames):
    """Finished-sum chunks (tile, group, strip, sums) in arrival order -> [N, ty, tx, C]."""
    out = np.zeros((frames, cfg.tiles_y, cfg.tiles_x, cfg.channels), np.int64)
    frame = 0
    for tile, group, strip, kind, strip_end, sums in chunks:
        assert kind == nm.tile_kind(strip, tile, cfg)
        out[frame, strip, tile, group * cfg.lanes:(group + 1) * cfg.lanes] = sums
        if strip_end and strip == cfg.tiles_y - 1:
            frame += 1
    return out


@pytest.mark.parametrize("cfg", [PATCH, COLUMN, SATURATING], ids=["patch", "column", "sat"])
def test_line_accumulator_matches_model(cfg):
    cfg, ip, x = small_case(cfg, seed=3, frames=2)
    p = rtl_params(cfg, ip)
    dut = LineAccumulator(p)
    beats = frame_beats(x, cfg.lanes)
    rng = np.random.default_rng(1)
    stall = rng.random((3, 50 * len(beats))) < 0.3
    got_beats, chunks = [], []

    async def tb(ctx):
        i = cycle = 0
        while len(got_beats) < len(beats):
            offer = i < len(beats) and not stall[0, cycle]
            ctx.set(dut.i_beat.valid, offer)
            if offer:
                ctx.set(dut.i_beat.payload.data, beats[i][0])
                ctx.set(dut.i_beat.payload.last, beats[i][1])
            ctx.set(dut.o_beat.ready, not stall[1, cycle])
            ctx.set(dut.o_sums.ready, not stall[2, cycle])
            # the takers' lookahead: their ready of the next cycle
            ctx.set(dut.o_beat_ready_next, not stall[1, cycle + 1])
            ctx.set(dut.o_sums_ready_next, not stall[2, cycle + 1])
            if offer and ctx.get(dut.i_beat.ready):
                i += 1
            if ctx.get(dut.o_beat.valid) and ctx.get(dut.o_beat.ready):
                got_beats.append(ctx.get(dut.o_beat.payload))
            if ctx.get(dut.o_sums.valid) and ctx.get(dut.o_sums.ready):
                s = ctx.get(dut.o_sums.payload)
                chunks.append((s.tile, s.group, s.strip, s.kind, s.strip_end,
                               [s.sums[lane] for lane in range(cfg.lanes)]))
            assert ctx.get(dut.error) == 0
            await ctx.tick()
            cycle += 1

    simulate(dut, tb)
    assert got_beats == [d for d, _ in beats]              # every beat forwarded, in order
    model = streaming.run(cfg, ip, x, profile="hw")
    np.testing.assert_array_equal(_sums_array(cfg, chunks, x.shape[0]), model["tile_sums"])


@pytest.mark.parametrize("fault", ["early", "late"])
def test_line_accumulator_pads_or_drops_a_misframed_frame(fault):
    cfg, ip, x = small_case(PATCH, seed=4, frames=2)
    p = rtl_params(cfg, ip)
    dut = LineAccumulator(p)
    good = frame_beats(x, cfg.lanes)
    n = cfg.beats_per_frame
    if fault == "early":
        stream_in = good[:n - 6] + [(good[n - 6][0], True)] + good[n:]
    else:
        stream_in = good[:n - 1] + [(good[n - 1][0], False), (1, False), (2, True)] + good[n:]
    got, errors = [], []

    async def tb(ctx):
        i = 0
        for ready in (dut.o_beat.ready, dut.o_sums.ready, dut.o_beat_ready_next,
                      dut.o_sums_ready_next):
            ctx.set(ready, 1)
        while len(got) < 2 * n:
            offer = i < len(stream_in)
            ctx.set(dut.i_beat.valid, offer)
            if offer:
                ctx.set(dut.i_beat.payload.data, stream_in[i][0])
                ctx.set(dut.i_beat.payload.last, stream_in[i][1])
                if ctx.get(dut.i_beat.ready):
                    i += 1
            if ctx.get(dut.o_beat.valid):
                got.append(ctx.get(dut.o_beat.payload))
            errors.append(ctx.get(dut.error))
            await ctx.tick()

    simulate(dut, tb)
    pad = pack_lanes([p.zx] * cfg.lanes)
    if fault == "early":
        assert got[:n] == [d for d, _ in good[:n - 5]] + [pad] * 5
    else:
        assert got[:n] == [d for d, _ in good[:n]]
    assert got[n:] == [d for d, _ in good[n:]]              # the next frame is intact
    first = errors.index(1)
    assert all(errors[first:])                              # sticky


def test_excite_mac_matches_model_and_its_latency():
    """Random tile sums (the whole range) in the line accumulator's order, strips arriving
    faster and slower than the excite latency, gate banks released late: the gates equal
    numerics.excite_tile's (the model's excite_mac), one write per gate, and every strip
    commits when the model's excite_mac writes it (excite_latency_cycles after it could
    start, not before the strip two before is released)."""
    cfg, ip, _ = small_case(TSEConfig(channels=8, height=5, width=7, tile="2x3", reduction=2,
                                      lanes=4, excite_multipliers=3), seed=9, zp_mode="natural")
    p = rtl_params(cfg, ip)
    T = ip.tables()
    rng = np.random.default_rng(2)
    strips = 2 * cfg.tiles_y
    sums = np.zeros((strips, cfg.tiles_x, cfg.channels), np.int64)
    want = np.zeros_like(sums)
    for s in range(strips):
        for j in range(cfg.tiles_x):
            kind = nm.tile_kind(s % cfg.tiles_y, j, cfg)
            n = int(ip.tile_counts[kind])
            sums[s, j] = rng.integers(-p.zx * n, (255 - p.zx) * n + 1, cfg.channels)
            bufs = [np.zeros(k, np.uint8) for k in (cfg.channels, cfg.hidden, cfg.channels,
                                                     cfg.channels)]
            nm.excite_tile(sums[s, j], kind, T, nm.HW, *bufs)
            want[s, j] = bufs[3]
    gaps = [0, 5, 3 * cfg.excite_latency_cycles, 0, 40, 2]
    dut = ExciteMac(p)
    L = cfg.excite_latency_cycles
    writes, commits, ends, released = drive_excite_stage(
        dut, p, sums, lambda s, j: nm.tile_kind(s, j, cfg), gaps, L, rng)
    per_strip = cfg.tiles_x * cfg.channels
    assert len(writes) == strips * per_strip
    got = np.zeros_like(want)
    for k, (bank, tile, group, lane, channel, frame_tile, g) in enumerate(writes):
        s = k // per_strip
        assert bank == s % 3 and channel == group * cfg.lanes + lane
        assert frame_tile == (s % cfg.tiles_y) * cfg.tiles_x + tile
        got[s, tile, channel] = g
    np.testing.assert_array_equal(got, want)
    assert commits[0] == ends[0] + L - 1          # idle MAC: the model's latency exactly
    assert all(b - a >= L for a, b in zip(commits, commits[1:]))
    assert any(b - a == L for a, b in zip(commits, commits[1:]))   # a back-to-back strip
    # the model's timing: a strip commits excite_latency_cycles after it could start (its
    # last sums in, the previous strip committed), or in the cycle after strip s - 2's
    # release, whichever is later
    for s, c in enumerate(commits):      # the MAC's cycle 0 is the last sums' cycle
        ready = max(ends[s], commits[s - 1] + 1 if s else 0)
        release = released[s - 2] if s >= 2 else 0
        assert c == max(ready + L - 1, release), (s, c, ready, release)
    assert any(c == released[s - 2] for s, c in enumerate(commits) if s >= 2)


@pytest.mark.parametrize("stalls", [True, False], ids=["stalled", "unstalled"])
@pytest.mark.parametrize("cfg", [PATCH, COLUMN], ids=["patch", "column"])
def test_tile_broadcaster_matches_model(cfg, stalls):
    """Output beats, TLAST and bank releases against the model, with the gate memory's
    synchronous read emulated (the word addressed in a cycle with gate_en arrives the next
    and is held while gate_en is low); unstalled, every beat leaves exactly
    plan.BROADCAST_LATENCY_CYCLES after its pop, one beat per clock."""
    cfg, ip, x = small_case(cfg, seed=11, frames=2, zp_mode="natural")
    p = rtl_params(cfg, ip)
    model = streaming.run(cfg, ip, x, profile="hw")
    gates = model["gate"] >> (8 - p.gate_bits)
    strips = x.shape[0] * cfg.tiles_y
    dut = TileBroadcaster(p)
    beats = frame_beats(x, cfg.lanes)
    rng = np.random.default_rng(3)
    stall = (rng.random((2, 40 * len(beats))) < 0.35) & stalls
    out, releases, pops, out_cycles = [], [], [], []

    async def tb(ctx):
        full, bank_strip = [False] * 3, [None] * 3
        i = cycle = committed = 0
        while len(out) < len(beats):
            if committed < strips and not full[committed % 3] and \
                    (rng.random() < 0.05 or not stalls):
                full[committed % 3], bank_strip[committed % 3] = True, committed
                committed += 1
            ctx.set(dut.bank_full, sum(f << b for b, f in enumerate(full)))
            offer = i < len(beats) and not stall[0, cycle]
            ctx.set(dut.i_beat.valid, offer)
            if offer:
                ctx.set(dut.i_beat.payload, beats[i][0])
            ctx.set(dut.o_beat.ready, not stall[1, cycle])
            # the gate memory's sync read of word (bank * tiles_x + tile) * C/P + group
            b, rest = divmod(ctx.get(dut.gate_addr), cfg.tiles_x * p.G)
            tile, g0 = divmod(rest, p.G)
            read = None
            if ctx.get(dut.gate_en) and bank_strip[b] is not None:
                f, si = divmod(bank_strip[b], cfg.tiles_y)
                read = gates[f, si, tile, g0 * cfg.lanes:(g0 + 1) * cfg.lanes]
            if offer and ctx.get(dut.i_beat.ready):
                assert full[b]
                pops.append(cycle)
                i += 1
            if ctx.get(dut.o_beat.valid) and ctx.get(dut.o_beat.ready):
                out.append((ctx.get(dut.o_beat.payload.data), ctx.get(dut.o_beat.payload.last)))
                out_cycles.append(cycle)
            if ctx.get(dut.release):
                rb = ctx.get(dut.release_bank)
                releases.append(bank_strip[rb])
                full[rb], bank_strip[rb] = False, None
            await ctx.tick()
            if read is not None:
                for lane in range(cfg.lanes):
                    ctx.set(dut.gate_data[lane], int(read[lane]))
            cycle += 1

    simulate(dut, tb)
    lanes = np.array([unpack_lanes(d, cfg.lanes) for d, _ in out], np.uint8)
    np.testing.assert_array_equal(lanes.reshape(x.shape), model["output"])
    assert [k for k, (_, last) in enumerate(out) if last] == \
        [cfg.beats_per_frame * (n + 1) - 1 for n in range(x.shape[0])]
    assert releases == list(range(strips))
    if not stalls:
        assert [c - q for c, q in zip(out_cycles, pops)] == \
            [plan.BROADCAST_LATENCY_CYCLES] * len(beats)
        assert np.all(np.diff(pops)[:cfg.strip_beats - 1] == 1)   # gates there: no bubble


def test_strip_buffer_is_the_models_fifo():
    cfg = PATCH.replace(buffer_depth=PATCH.strip_beats + 3)
    cfg, ip, _ = small_case(cfg, seed=1)
    p = rtl_params(cfg, ip)
    dut = StripBuffer(p)
    model = streaming.StripBuffer(p.depth)
    rng = np.random.default_rng(4)
    pushed = popped = 0

    async def tb(ctx):
        nonlocal pushed, popped
        promised = None
        for cycle in range(6 * p.depth):
            filling = (cycle // (2 * p.depth)) % 2 == 0  # fill, drain, fill again
            push = rng.random() < (0.9 if filling else 0.2)
            pop = rng.random() < (0.1 if filling else 0.9)
            ctx.set(dut.i_beat.valid, push)
            ctx.set(dut.i_beat.payload, pushed)
            ctx.set(dut.o_beat.ready, pop)
            # the lookahead the line accumulator's take is set from: the ready it promised
            # a cycle ago
            assert promised is None or ctx.get(dut.i_beat.ready) == promised
            promised = ctx.get(dut.ready_next)
            level = ctx.get(dut.level)
            assert level == len(model) <= p.depth
            if pop and ctx.get(dut.o_beat.valid):
                assert ctx.get(dut.o_beat.payload) == model.pop() == popped
                popped += 1
            if push and ctx.get(dut.i_beat.ready):
                model.push(pushed)
                pushed += 1
            else:   # refused only when full (unlike the model, a pop in the same cycle
                # does not make room: the line accumulator's stage register makes up for it)
                assert not push or level == p.depth
            await ctx.tick()

    simulate(dut, tb)
    assert model.peak == p.depth and popped > p.depth


def test_gate_memory_banks():
    """Strips written gate by gate into bank s % 3, committed, read back word by word, and
    released: the model's GateMemory (two banks) plus the strip its excite_mac holds."""
    cfg, ip, _ = small_case(PATCH.replace(lanes=4), seed=2)
    p = rtl_params(cfg, ip)
    dut = GateMemory(p)
    model = streaming.GateMemory(p.tx, p.C)
    rng = np.random.default_rng(5)
    data = rng.integers(0, 256, (3, p.tx, p.C))

    async def tb(ctx):
        for seq in range(3):                 # strips 0 and 1 in the model's banks, 2 held
            assert not (ctx.get(dut.full) >> seq) & 1
            for t in range(p.tx):
                for c in range(p.C):
                    ctx.set(dut.w_en, 1)
                    ctx.set(dut.w_bank, seq)
                    ctx.set(dut.w_tile, t)
                    ctx.set(dut.w_group, c // p.P)
                    ctx.set(dut.w_lane, c % p.P)
                    ctx.set(dut.w_data, int(data[seq, t, c]))
                    await ctx.tick()
            ctx.set(dut.w_en, 0)
            if seq < 2:
                ctx.set(dut.commit, 1)
                ctx.set(dut.commit_bank, seq)
                await ctx.tick()
                ctx.set(dut.commit, 0)
                model.write(seq, data[seq].astype(np.uint8))
        assert ctx.get(dut.full) == 0b011 and model.ready(0) and model.ready(1)
        assert not model.can_write(2)        # the model's excite_mac holds strip 2 here
        expect = [model.gates[0], model.gates[1], data[2]]
        for bank in range(3):                # read back every word of every bank
            for t in range(p.tx):
                for g in range(p.G):
                    ctx.set(dut.r_en, 1)
                    ctx.set(dut.r_addr, (bank * p.tx + t) * p.G + g)
                    await ctx.tick()             # a synchronous read: the word a cycle later
                    ctx.set(dut.r_en, 0)         # and held while r_en is low
                    ctx.set(dut.r_addr, ((bank * p.tx + t) * p.G + g + 1) % (3 * p.tx * p.G))
                    await ctx.tick()
                    got = [ctx.get(dut.r_data[lane]) for lane in range(p.P)]
                    assert got == [int(v) for v in expect[bank][t][g * p.P:(g + 1) * p.P]]
        ctx.set(dut.release, 1)              # strip 0 released: strip 2 may commit
        ctx.set(dut.release_bank, 0)
        ctx.set(dut.commit, 1)
        ctx.set(dut.commit_bank, 2)
        await ctx.tick()
        ctx.set(dut.release, 0)
        ctx.set(dut.commit, 0)
        model.release(0)
        model.write(2, data[2].astype(np.uint8))
        assert ctx.get(dut.full) == 0b110 and model.ready(2) and not model.can_write(3)

    simulate(dut, tb)
