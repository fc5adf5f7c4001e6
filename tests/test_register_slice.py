"""The input's register slice (tse.rtl.register_slice, issue 16) in Amaranth's simulator:
every beat once and in order under random valid and ready, a registered ready (the same
cycle's take does not reach it), one beat per clock with one cycle of latency, and cycle for
cycle the streaming model's InputSlice (which beats are taken when); the same for the unit's
chain of plan.INPUT_SLICE_STAGES slices (SliceChain) against the model's slices and
slice_stage."""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from tse.ref_model import plan
from tse.ref_model.streaming import InputSlice, slice_stage
from tse.rtl.register_slice import RegisterSlice, SliceChain


def run_slice(n_beats: int, offer, take, cycles: int, stages: int = 0):
    """Drive a 16-bit slice (stages > 0: a SliceChain of that many): offer(c) / take(c) say
    whether the source offers its next beat and the sink is ready in cycle c. Returns
    (accepted cycles, delivered (cycle, beat)s, cycles whose ready changed when the sink's
    ready did)."""
    dut = SliceChain(16, stages) if stages else RegisterSlice(16)
    accepted, delivered, comb_ready = [], [], []

    async def tb(ctx):
        i = 0
        for c in range(cycles):
            valid = i < n_beats and offer(c)
            ctx.set(dut.i.valid, valid)
            ctx.set(dut.i.payload, (7919 * i + 13) & 0xFFFF)
            ctx.set(dut.o.ready, 0)
            ready_low = ctx.get(dut.i.ready)
            ctx.set(dut.o.ready, take(c))
            if ctx.get(dut.i.ready) != ready_low:
                comb_ready.append(c)
            if ctx.get(dut.o.valid) and take(c):
                delivered.append((c, ctx.get(dut.o.payload)))
            if valid and ctx.get(dut.i.ready):
                accepted.append(c)
                i += 1
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return accepted, delivered, comb_ready


@pytest.mark.parametrize("stages, latency", [(0, 1), (plan.INPUT_SLICE_STAGES, 2)],
                         ids=["slice", "chain"])
def test_full_throughput_a_cycle_later_per_slice(stages, latency):
    assert plan.INPUT_SLICE_CYCLES == 2       # the unit's chain: two slices
    acc, out, comb = run_slice(50, lambda c: True, lambda c: True, 60, stages)
    assert acc == list(range(50))
    assert [c for c, _ in out] == [c + latency for c in range(50)]
    assert [b for _, b in out] == [(7919 * i + 13) & 0xFFFF for i in range(50)]
    assert comb == []


@pytest.mark.parametrize("stages, beats", [(0, 2), (plan.INPUT_SLICE_STAGES, 4)],
                         ids=["slice", "chain"])
@pytest.mark.parametrize("seed", [0, 1])
def test_backpressure_loses_nothing_and_ready_is_registered(seed, stages, beats):
    rng = np.random.default_rng(seed)
    gaps, stalls = rng.random(3000) < 0.3, rng.random(3000) < 0.5
    acc, out, comb = run_slice(1000, lambda c: not gaps[c], lambda c: not stalls[c], 3000,
                               stages)
    assert len(acc) == 1000
    assert [b for _, b in out] == [(7919 * i + 13) & 0xFFFF for i in range(1000)]
    assert comb == []                     # s_axis_tready never follows the take combinationally
    # never more than the slices' beats held between acceptance and delivery
    held = np.zeros(3001, int)
    for c in acc:
        held[c + 1:] += 1
    for c, _ in out:
        held[c + 1:] -= 1
    assert held.max() == beats


def model_accepts(n_beats: int, offer, take, cycles: int, stages: int = 1):
    """The streaming model's InputSlices (stages of them, slice_stage between them) under the
    same offers and takes: the cycles the first takes a beat (downstream steps first within a
    cycle, as in tse.ref_model.streaming.run)."""
    slices, accepted, i = [InputSlice() for _ in range(stages)], [], 0
    moves = [slice_stage(a, b) for a, b in reversed(list(zip(slices, slices[1:])))]
    for c in range(cycles):
        for s in slices:
            s.tick()
        if take(c) and slices[-1].can_pop():
            slices[-1].pop()
        for mv in moves:
            next(mv)
        if i < n_beats and offer(c) and slices[0].can_push():
            slices[0].push(i)
            accepted.append(c)
            i += 1
    return accepted


@pytest.mark.parametrize("stages", [0, plan.INPUT_SLICE_STAGES], ids=["slice", "chain"])
@pytest.mark.parametrize("seed", [3, 4])
def test_model_takes_the_same_beats_in_the_same_cycles(seed, stages):
    rng = np.random.default_rng(seed)
    gaps, stalls = rng.random(2000) < 0.2, rng.random(2000) < 0.6
    # a beat reaches the sink a cycle per slice after it is taken, in the RTL and the model
    acc, _, _ = run_slice(600, lambda c: not gaps[c], lambda c: not stalls[c], 2000, stages)
    assert acc == model_accepts(600, lambda c: not gaps[c], lambda c: not stalls[c], 2000,
                                max(1, stages))
