"""The input's register slice (tse.rtl.register_slice, issue 16) in Amaranth's simulator:
every beat once and in order under random valid and ready, a registered ready (the same
cycle's take does not reach it), one beat per clock with plan.INPUT_SLICE_CYCLES of latency,
and cycle for cycle the streaming model's InputSlice (which beats are taken when)."""
from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from tse.ref_model import plan
from tse.ref_model.streaming import InputSlice
from tse.rtl.register_slice import RegisterSlice


def run_slice(n_beats: int, offer, take, cycles: int):
    """Drive a 16-bit slice: offer(c) / take(c) say whether the source offers its next beat
    and the sink is ready in cycle c. Returns (accepted cycles, delivered (cycle, beat)s,
    cycles whose ready changed when the sink's ready did)."""
    dut = RegisterSlice(16)
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


def test_full_throughput_one_cycle_later():
    acc, out, comb = run_slice(50, lambda c: True, lambda c: True, 60)
    assert acc == list(range(50))
    assert [c for c, _ in out] == [c + plan.INPUT_SLICE_CYCLES for c in range(50)]
    assert [b for _, b in out] == [(7919 * i + 13) & 0xFFFF for i in range(50)]
    assert comb == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_backpressure_loses_nothing_and_ready_is_registered(seed):
    rng = np.random.default_rng(seed)
    gaps, stalls = rng.random(3000) < 0.3, rng.random(3000) < 0.5
    acc, out, comb = run_slice(1000, lambda c: not gaps[c], lambda c: not stalls[c], 3000)
    assert len(acc) == 1000
    assert [b for _, b in out] == [(7919 * i + 13) & 0xFFFF for i in range(1000)]
    assert comb == []                     # s_axis_tready never follows the take combinationally
    # never more than the slice's beats held between acceptance and delivery
    held = np.zeros(3001, int)
    for c in acc:
        held[c + 1:] += 1
    for c, _ in out:
        held[c + 1:] -= 1
    assert held.max() == plan.INPUT_SLICE_BEATS


def model_accepts(n_beats: int, offer, take, cycles: int):
    """The streaming model's InputSlice under the same offers and takes: the cycles it takes
    a beat (the sink steps first within a cycle, as in tse.ref_model.streaming.run)."""
    s, accepted, i = InputSlice(), [], 0
    for c in range(cycles):
        s.tick()
        if take(c) and s.can_pop():
            s.pop()
        if i < n_beats and offer(c) and s.can_push():
            s.push(i)
            accepted.append(c)
            i += 1
    return accepted


@pytest.mark.parametrize("seed", [3, 4])
def test_model_takes_the_same_beats_in_the_same_cycles(seed):
    rng = np.random.default_rng(seed)
    gaps, stalls = rng.random(2000) < 0.2, rng.random(2000) < 0.6
    # a beat reaches the sink a cycle after it is taken, in the RTL and in the model
    acc, _, _ = run_slice(600, lambda c: not gaps[c], lambda c: not stalls[c], 2000)
    assert acc == model_accepts(600, lambda c: not gaps[c], lambda c: not stalls[c], 2000)
