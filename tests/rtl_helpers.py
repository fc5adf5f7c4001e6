"""Shared helpers of the RTL tests: evaluating combinational Amaranth logic on vectors,
small configurations with random integer parameters, and beat packing."""
from __future__ import annotations

import numpy as np
from amaranth import Module, Signal
from amaranth.sim import Simulator


def eval_comb(inputs: dict, build, vectors) -> list[int]:
    """Evaluate the expression build(m, **signals) for every vector (a dict of input
    values)."""
    sigs = {name: Signal(shape, name=name) for name, shape in inputs.items()}
    m = Module()
    expr = build(m, **sigs)
    out = Signal(expr.shape(), name="out")
    m.d.comb += out.eq(expr)
    results = []

    async def tb(ctx):
        for vec in vectors:
            for name, value in vec.items():
                ctx.set(sigs[name], int(value))
            results.append(ctx.get(out))

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()
    return results


def eval_pipe(inputs: dict, build, vectors) -> list[int]:
    """Like eval_comb for a pipeline that never stalls: build(m, **signals) returns (expr,
    stages); one vector enters per clock and its result is read `stages` clocks later."""
    sigs = {name: Signal(shape, name=name) for name, shape in inputs.items()}
    m = Module()
    expr, stages = build(m, **sigs)
    out = Signal(expr.shape(), name="out")
    m.d.comb += out.eq(expr)
    vectors = list(vectors)
    results = []

    async def tb(ctx):
        for i in range(len(vectors) + stages):
            if i < len(vectors):
                for name, value in vectors[i].items():
                    ctx.set(sigs[name], int(value))
            if i >= stages:
                results.append(ctx.get(out))
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return results


def pack_lanes(lanes) -> int:
    """P 8-bit codes as one beat, lane 0 in the least significant bits."""
    return sum(int(v) << (8 * i) for i, v in enumerate(lanes))


def unpack_lanes(word: int, lanes: int) -> list[int]:
    return [(word >> (8 * i)) & 0xFF for i in range(lanes)]


def frame_beats(x: np.ndarray, lanes: int) -> list[tuple[int, bool]]:
    """The input stream of frames x [N, H, W, C]: (data, last) per beat."""
    beats = []
    for n in range(x.shape[0]):
        flat = x[n].reshape(-1)
        total = flat.size // lanes
        for b in range(total):
            beats.append((pack_lanes(flat[b * lanes:(b + 1) * lanes]), b == total - 1))
    return beats


def small_case(cfg, seed: int = 0, frames: int = 2, zp_mode: str = "random", engine=None):
    """(cfg, IntParams, x) with random integer parameters (random zero points) and random
    frames: no PyTorch run, so a test costs only its simulation."""
    from tse.ref_model import numerics as nm
    from test_numerics import random_quant_params
    engine = engine or cfg.engine
    cfg = cfg.replace(engine=engine)
    qp = random_quant_params(seed, cfg.channels, cfg.hidden, engine, True, zp_mode)
    ip = nm.derive(qp, cfg)
    rng = np.random.default_rng(seed + 100)
    x = rng.integers(0, 256, (frames, cfg.height, cfg.width, cfg.channels)).astype(np.uint8)
    return cfg, ip, x


def run_unit(dut, beats, *, expect_out=None, in_valid=None, out_ready=None, max_cycles=None,
             reset_after=None):
    """Drive beats [(data, last)] into a TSEUnit's s_axis and collect m_axis, cycle by cycle.

    in_valid(cycle) / out_ready(cycle): whether the source offers / the sink takes a beat
    this cycle (default: always). expect_out: output beats to wait for (default: as many as
    input beats). reset_after: pulse rst for one cycle once that many beats were accepted;
    what came out before it is discarded. Returns a dict: out [(data, last)], out_cycles
    (when each output beat left), gates [(tile, channel, data)] from the probes, levels
    (probe_strip_level per cycle), in_stalls (cycles a valid input beat was not taken),
    cycles, error."""
    from amaranth import ClockDomain, Module
    from amaranth.sim import Simulator
    res = {"out": [], "out_cycles": [], "gates": [], "levels": [], "in_stalls": 0,
           "cycles": 0, "error": 0}
    in_valid = in_valid or (lambda c: True)
    out_ready = out_ready or (lambda c: True)
    expect = len(beats) if expect_out is None else expect_out
    limit = max_cycles or 40 * len(beats) + 3000
    top = Module()
    top.domains.sync = cd = ClockDomain()
    top.submodules.dut = dut

    pending_reset = [reset_after]

    async def tb(ctx):
        i = cycle = 0
        while cycle < limit:
            if pending_reset[0] is not None and i == pending_reset[0]:
                ctx.set(cd.rst, 1)
                ctx.set(dut.s_axis_tvalid, 0)
                await ctx.tick()
                ctx.set(cd.rst, 0)
                for key in ("out", "out_cycles", "gates"):
                    res[key] = []
                pending_reset[0] = None
                cycle += 1
                continue
            offer = i < len(beats) and in_valid(cycle)
            if offer:
                ctx.set(dut.s_axis_tdata, beats[i][0])
                ctx.set(dut.s_axis_tlast, int(beats[i][1]))
            ctx.set(dut.s_axis_tvalid, int(offer))
            take_out = out_ready(cycle)
            ctx.set(dut.m_axis_tready, int(take_out))
            if offer:
                if ctx.get(dut.s_axis_tready):
                    i += 1
                else:
                    res["in_stalls"] += 1
            if take_out and ctx.get(dut.m_axis_tvalid):
                res["out"].append((ctx.get(dut.m_axis_tdata), bool(ctx.get(dut.m_axis_tlast))))
                res["out_cycles"].append(cycle)
            if ctx.get(dut.probe_gate_valid):
                res["gates"].append((ctx.get(dut.probe_gate_tile),
                                     ctx.get(dut.probe_gate_channel),
                                     ctx.get(dut.probe_gate_data)))
            res["levels"].append(ctx.get(dut.probe_strip_level))
            await ctx.tick()
            cycle += 1
            if i >= len(beats) and len(res["out"]) >= expect:
                break
        res["cycles"] = cycle
        res["error"] = ctx.get(dut.error)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return res


def outputs_of(res, cfg) -> np.ndarray:
    """The collected output beats as frames [N, H, W, C]."""
    lanes = np.array([unpack_lanes(d, cfg.lanes) for d, _ in res["out"]], np.uint8)
    return lanes.reshape(-1, cfg.height, cfg.width, cfg.channels)


def gates_of(res, cfg) -> np.ndarray:
    """The probed gate writes as [N, tiles_y, tiles_x, C] (strips are excited in order, so
    the k-th gate belongs to frame k // gates-per-frame); -1 where no gate was written."""
    per_frame = cfg.tiles_y * cfg.tiles_x * cfg.channels
    n = max(1, -(-len(res["gates"]) // per_frame))
    out = -np.ones((n, cfg.tiles_y, cfg.tiles_x, cfg.channels), np.int64)
    for k, (tile, c, g) in enumerate(res["gates"]):
        i, j = divmod(tile, cfg.tiles_x)
        out[k // per_frame, i, j, c] = g
    return out


def drive_excite_stage(dut, p, sums, kind, gaps, latency, rng, squares=None):
    """Feed an excite stage (SE's excite MAC, ECA's or SRM's) the tile sums sums[strip, tile,
    C] (and for SRM the sums of squares squares[strip, tile, C]) in the line accumulator's
    order, a gap of gaps[s % len(gaps)] cycles after strip s, and
    release each committed gate bank 1..3*latency cycles later (in strip order, as the
    broadcaster does). Checks on every cycle that i_sums.ready is the i_sums_ready_next of
    the cycle before (the lookahead the line accumulator's take is set from) and that a
    commit never lands on a full bank. Returns (writes, commits, ends, released): the gate
    writes (bank, tile, group, lane, channel, frame tile, gate), the commit cycles, the
    cycle of each strip's last sums and the release cycle of each strip."""
    strips, tx = sums.shape[0], sums.shape[1]
    writes, commits, ends, released = [], [], [], {}

    async def tb(ctx):
        full = [False] * 3
        release_at, held = [None] * 3, [None] * 3
        s = chunk = cycle = wait = 0
        per_strip = tx * p.G
        promised = None
        while len(commits) < strips:
            assert cycle < 200 * latency * strips, "no progress"
            for b in range(3):
                if release_at[b] is not None and release_at[b] <= cycle and \
                        (held[b] == 0 or held[b] - 1 in released):
                    full[b], release_at[b] = False, None
                    released[held[b]] = cycle
            ctx.set(dut.bank_free, sum((not f) << b for b, f in enumerate(full)))
            offer = s < strips and wait == 0
            ctx.set(dut.i_sums.valid, offer)
            assert promised is None or ctx.get(dut.i_sums.ready) == promised
            if offer:
                j, g = divmod(chunk, p.G)
                pl = dut.i_sums.payload
                ctx.set(pl.tile, j)
                ctx.set(pl.group, g)
                ctx.set(pl.strip, s % p.ty)
                ctx.set(pl.kind, int(kind(s % p.ty, j)))
                ctx.set(pl.strip_end, chunk == per_strip - 1)
                for lane in range(p.P):
                    ctx.set(pl.sums[lane], int(sums[s, j, g * p.P + lane]))
                    if squares is not None:
                        ctx.set(pl.squares[lane], int(squares[s, j, g * p.P + lane]))
                if ctx.get(dut.i_sums.ready):
                    chunk += 1
                    if chunk == per_strip:
                        ends.append(cycle)
                        s, chunk, wait = s + 1, 0, gaps[s % len(gaps)]
            elif wait:
                wait -= 1
            if ctx.get(dut.w_en):
                writes.append((ctx.get(dut.w_bank), ctx.get(dut.w_tile), ctx.get(dut.w_group),
                               ctx.get(dut.w_lane), ctx.get(dut.w_channel),
                               ctx.get(dut.w_frame_tile), ctx.get(dut.w_data)))
            if ctx.get(dut.commit):
                b = ctx.get(dut.commit_bank)
                assert not full[b] and not full[(b + 1) % 3]    # strip s - 2 released
                full[b], held[b] = True, len(commits)
                release_at[b] = cycle + 1 + int(rng.integers(1, 3 * latency))
                commits.append(cycle)
            promised = ctx.get(dut.i_sums_ready_next)
            await ctx.tick()
            cycle += 1

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return writes, commits, ends, released


def check_excite_run(cfg, want, run, latency):
    """The checks of an excite stage's run (drive_excite_stage's result `run`) against the
    model's gates want[strip, tile, C] (8-bit units): every gate written once, to its strip's
    bank, with its channel, group, lane and frame tile, equal to the model's; every strip
    committed exactly when the plan says (latency after it could start, not before the strip
    two before is released)."""
    writes, commits, ends, released = run
    C, P, tx, ty = cfg.channels, cfg.lanes, cfg.tiles_x, cfg.tiles_y
    strips, per = want.shape[0], tx * C
    assert len(writes) == strips * per
    got = -np.ones_like(want)
    drop = 8 - cfg.hw.gate_bits
    for n, (bank, tile, group, lane, channel, frame_tile, g) in enumerate(writes):
        s = n // per
        assert bank == s % 3 and channel == group * P + lane
        assert frame_tile == (s % ty) * tx + tile
        assert got[s, tile, channel] == -1                   # written once
        got[s, tile, channel] = g << drop
    np.testing.assert_array_equal(got, want)
    assert commits[0] == ends[0] + latency - 1       # idle: the plan's latency exactly
    assert all(b - a >= latency for a, b in zip(commits, commits[1:]))
    for s, c in enumerate(commits):
        ready = max(ends[s], commits[s - 1] + 1 if s else 0)
        release = released[s - 2] if s >= 2 else 0
        assert c == max(ready + latency - 1, release), (s, c, ready, release)
