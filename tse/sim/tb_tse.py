"""cocotb test module: golden vectors through `tse_cosim_top`, checked beat by beat.

It reads a job (JSON, path in $TSE_COSIM_JOB; written by tse/sim/runner.py) naming the vectors
directory, what the output should equal ("output": the vectors' output; "input": a
pass-through, for the development stub only) and a list of scenarios, runs them one after
another in one simulation (each starts with a reset) and writes the results (JSON) where the
job says. Scenarios:

  stream       the job's frames back to back, no gap, with seeded pauses on each side;
               measures throughput, latency, input stalls, peak strip-buffer occupancy;
  reset        part of a frame, a reset in the middle of it, then a clean frame;
  tlast_early  a frame cut short by an early TLAST, then a correct frame;
  tlast_late   a frame whose last beat lacks TLAST (TLAST comes a few beats later), then
               a correct frame.

After a wrong TLAST the error output must rise and stay high, and the next frame must come
out bit-exact; in the other scenarios error must stay low. A broken frame is checked against
the contract (docs/cosim.md): the unit emits exactly one whole frame for it, TLAST on its last
beat only, equal to the vectors' frame wherever the input defines it (every tile before an
early TLAST, with the 3x1 excite those whose two strips below are complete too; the whole
frame when TLAST comes late). The correct frame is sent only on a
positive signal that the broken one is done: all of its beats emitted, every beat sent
accepted, and then a quiet window (excite latency + a strip + slack) with no further beat, so
a late beat of the broken frame is charged to it, never to the next frame.

Every scenario reports the pauses actually applied: input_pause_cycles (the source held back
a queued beat) and output_pause_cycles (the sink refused a valid beat by a pause).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import Timer

from tse.ref_model.config import TSEConfig
from tse.sim import harness as hz
from tse.sim import scoreboard as sb
from tse.sim.axis import AxisSink, AxisSource, GateProbe, PauseGenerator, StreamLoop

SCENARIOS = ("stream", "reset", "tlast_early", "tlast_late")


class Bench:
    """The job's data and the drivers, shared by every scenario of one simulation."""

    def __init__(self, dut, job: dict):
        self.job = job
        self.shape = sb.Shape.from_geometry(job["geometry"])
        self.layout = hz.Layout(**job["layout"])
        vdir = Path(job["vectors"])
        self.inputs = np.load(vdir / "input.npy")
        if job["expect"] == "input":
            self.expected, self.gates = self.inputs, None
        else:
            self.expected = np.load(vdir / "output.npy")
            self.gates = np.load(vdir / "gate.npy")
        self.table = None        # the model's products, for a stage verdict without probes
        self.quiet = int(job["quiet_cycles"])
        self.source = AxisSource(self.shape.lanes)
        self.sink = AxisSink(self.layout)
        self.probe = GateProbe(self.layout)
        self.loop = StreamLoop(dut, self.layout, self.source, self.sink, self.probe)

    def gate_pulses(self):
        """The probed gates, or None when the unit has no probes (or there are no gates)."""
        return self.probe.pulses() if self.gates is not None and self.layout.probes else None

    def product_table(self, data, frames) -> np.ndarray | None:
        """The model's tile-broadcaster table, built only when it can matter: no probes and
        some beat differs (scoreboard.stage_from_model)."""
        if self.layout.probes or self.gates is None or self.table is not None:
            return self.table
        want = self.expected[frames].reshape(-1, self.shape.lanes)
        n = min(len(want), len(data))
        if n and np.array_equal(want[:n], np.asarray(data, np.uint8).reshape(-1,
                                                                      self.shape.lanes)[:n]):
            return None
        from tse.ref_model import fastpath
        from tse.ref_model import numerics as nm
        from tse.ref_model.unit_plan import UnitPlan
        manifest = json.loads((Path(self.job["vectors"]) / "manifest.json").read_text())
        plan = UnitPlan.from_dict(manifest["unit"])
        self.table = fastpath.broadcast_table(plan.ip.tables(),
                                              nm.profile_code(manifest["profile"]))
        return self.table

    def frame_beats(self, f: int) -> np.ndarray:
        return self.inputs[f].reshape(-1, self.shape.lanes)

    def budget(self, beats: int, sc: dict) -> int:
        """A cycle limit no working unit reaches: 4x the paused stream plus slack."""
        rate = (1 - sc.get("pause_in", 0.0)) * (1 - sc.get("pause_out", 0.0))
        return int(4 * beats / rate) + 8 * self.quiet + 1000

    async def start(self, sc: dict) -> None:
        """Reset, fresh pause patterns and statistics for a scenario."""
        seed = int(sc.get("seed", 0))
        self.loop.set_pauses(PauseGenerator(sc.get("pause_in", 0.0), seed),
                             PauseGenerator(sc.get("pause_out", 0.0), seed + 1_000_003))
        await self.loop.reset()
        await self.loop.clear_peak()
        self.fresh_phase()

    def pauses(self) -> dict:
        """Pauses applied since the scenario started."""
        return {"input_pause_cycles": self.loop.in_pauses,
                "output_pause_cycles": self.loop.out_pauses}

    def fresh_phase(self) -> None:
        """Forget what was received so far (a new frame to check from here on)."""
        self.sink.clear()
        self.probe.clear()
        self.source.clear_stats()

    async def expect_frames(self, frames: list[int], sc: dict) -> dict:
        """Send frames back to back, receive, compare; returns the scenario's numbers."""
        total = len(frames) * self.shape.beats_per_frame
        for f in frames:
            self.source.send(self.frame_beats(f))
        c0, t0 = self.loop.cycle, time.perf_counter()
        busy0 = (self.loop.busy_cycles, self.loop.busy_s)
        reason = await self.loop.run(until_beats=total, max_cycles=self.budget(total, sc))
        cycles = self.loop.cycle - c0
        if reason == "beats":    # anything more would be an extra beat
            await self.loop.run(cycles=self.quiet)
        data, last = self.sink.beats()
        report = sb.compare(self.shape, self.expected, frames, data, last, inputs=self.inputs,
                            gate_pulses=self.gate_pulses(), expected_gates=self.gates,
                            beats_accepted=self.source.beats,
                            product_table=self.product_table(data, frames))
        src, snk = self.source, self.sink
        span = (snk.last_cycle - snk.first_cycle + 1) if snk.first_cycle is not None else 0
        busy_c = self.loop.busy_cycles - busy0[0]
        busy_s = self.loop.busy_s - busy0[1]
        return {
            "frames": frames, "beats": total, "beats_in": src.beats,
            "beats_out": len(snk), "mismatches": report["mismatches"],
            "first_mismatch": report["first"], "stage": report["stage"],
            "gates": report["gates"], "report": report["message"],
            "timed_out": reason == "timeout", "cycles": cycles,
            "throughput": round(len(snk) / span, 6) if span else 0.0,
            "latency_cycles": (snk.first_cycle - src.first_cycle)
            if snk.first_cycle is not None and src.first_cycle is not None else None,
            "input_stall_cycles": src.stall_cycles,
            "max_buffer_occupancy": self.loop.peak_level() if self.layout.probes else None,
            "wall_s": round(time.perf_counter() - t0, 3),
            "cycles_per_s": round(busy_c / busy_s) if busy_s > 0 else None,
        }


def problems_of(r: dict, error_expected: bool) -> list[str]:
    out = list(r.get("bad_frame_problems", []))
    if r["timed_out"]:
        out.append(f"timeout: {r['beats_out']} of {r['beats']} output beats")
    if r["mismatches"] or r["stage"]:
        out.append(r["report"])
    if error_expected and not r["error_seen"]:
        out.append("error did not rise after the wrong TLAST")
    if error_expected and not r["error_final"]:
        out.append("error did not stay high (it is sticky until reset)")
    if not error_expected and r["error_seen"]:
        out.append(f"error rose at cycle {r['error_cycle']} on a correct stream")
    return out


async def run_stream(bench: Bench, sc: dict) -> dict:
    await bench.start(sc)
    frames = sc.get("frames") or list(range(bench.inputs.shape[0]))
    r = await bench.expect_frames(frames, sc)
    return {**r, **error_state(bench), **bench.pauses()}


async def run_reset(bench: Bench, sc: dict) -> dict:
    """Part of frame 0, a reset in the middle of it, then a clean frame."""
    await bench.start(sc)
    bpf = bench.shape.beats_per_frame
    cut = int(sc.get("cut", bpf // 2 + 1))
    bench.source.send(bench.frame_beats(0)[:cut], last=np.zeros(cut, bool))
    await bench.loop.run(until_drained=True, max_cycles=bench.budget(cut, sc))
    await bench.loop.run(cycles=int(sc.get("cycles_before_reset", 3)))
    partial_out = len(bench.sink)
    await bench.loop.reset(int(sc.get("reset_cycles", 2)))
    bench.fresh_phase()
    frame = min(1, bench.inputs.shape[0] - 1)
    r = await bench.expect_frames([frame], sc)
    return {**r, **error_state(bench), **bench.pauses(), "cut_at_beat": cut,
            "partial_output_beats": partial_out}


async def run_tlast(bench: Bench, sc: dict, early: bool) -> dict:
    """A frame with a wrong TLAST, checked against the contract until it is positively done,
    then a correct frame."""
    await bench.start(sc)
    bpf = bench.shape.beats_per_frame
    beats = bench.frame_beats(0)
    if early:
        n = int(sc.get("cut", max(1, bpf // 2)))
        data = beats[:n]
        defined = bench.shape.tiles_defined_within(
            n, TSEConfig.from_dict(bench.job["config"]).lookahead_strips)
    else:
        extra = int(sc.get("extra", max(1, bpf // 3)))
        data = np.concatenate([beats, beats[:extra]])
        defined = None                 # the first bpf beats are the whole frame
    last = np.zeros(len(data), bool)
    last[-1] = True
    bench.source.send(data, last=last)
    broken = await finish_broken(bench, data, last, defined, sc)
    error_after_bad = bench.loop.error_cycle is not None
    bench.fresh_phase()
    frame = min(1, bench.inputs.shape[0] - 1)
    r = await bench.expect_frames([frame], sc)
    return {**r, **error_state(bench), **bench.pauses(), "error_seen": error_after_bad,
            **broken}


async def finish_broken(bench: Bench, data, last, defined, sc: dict) -> dict:
    """Wait until the broken frame is done (the beats the contract promises are out and every
    beat sent was taken), then `quiet` cycles in which no beat may follow; check it."""
    bpf = bench.shape.beats_per_frame
    stub = bench.gates is None         # the pass-through stub echoes what it was sent
    promised = len(data) if stub else bpf
    budget = bench.budget(promised + len(data), sc)
    in0, out0 = bench.loop.in_pauses, bench.loop.out_pauses
    reason = await bench.loop.run(until_beats=promised, max_cycles=budget)
    if reason != "timeout":
        reason = await bench.loop.run(until_drained=True, max_cycles=budget)
    if reason != "timeout":
        await bench.loop.run(cycles=bench.quiet)
    got, got_last = bench.sink.beats()
    out = {"bad_frame_output_beats": len(got), "bad_frame_beats_sent": len(data),
           "bad_frame_beats_in": bench.source.beats,
           "bad_frame_input_pause_cycles": bench.loop.in_pauses - in0,
           "bad_frame_output_pause_cycles": bench.loop.out_pauses - out0}
    if stub:
        ok = len(got) == len(data) and np.array_equal(got, np.asarray(data, np.uint8)) \
            and np.array_equal(got_last, last)
        report = {"mismatches": 0 if ok else 1, "stage": None, "first": None,
                  "message": f"pass-through: {len(got)} beats, {'as' if ok else 'not as'} sent"}
    else:
        report = sb.compare(bench.shape, bench.expected, [0], got, got_last,
                            inputs=bench.inputs, gate_pulses=bench.gate_pulses(),
                            expected_gates=bench.gates, defined_tiles=defined,
                            product_table=bench.product_table(got, [0]))
        if bench.source.beats < len(data):
            report["stage"] = "line_accumulator"
    problems = []
    if reason == "timeout":
        problems.append(f"timeout: {len(got)} of {promised} output beats, "
                        f"{bench.source.beats} of {len(data)} input beats taken")
    if report["mismatches"] or report["stage"]:
        problems.append(report["message"])
    out["bad_frame_problems"] = [f"broken frame: {p}" for p in problems]
    out["bad_frame_stage"] = report["stage"]
    out["bad_frame_first_mismatch"] = report["first"]
    return out


def error_state(bench: Bench) -> dict:
    return {"error_seen": bench.loop.error_cycle is not None,
            "error_cycle": bench.loop.error_cycle, "error_final": bench.loop.error}


@cocotb.test()
async def cosim(dut):
    """Run the job's scenarios; fail on any mismatch, timeout or wrong error output."""
    job = json.loads(Path(os.environ["TSE_COSIM_JOB"]).read_text())
    t0 = time.perf_counter()
    # Defined inputs before the first clock edge: started at time 0, the clock's first edge
    # would come before these writes land and register X (memories are not reset).
    dut.rst.value = 1
    dut.drv.value = 0
    dut.peak_clear.value = 0
    await Timer(1, unit="ns")
    Clock(dut.clk, 10, unit="ns").start()
    bench = Bench(dut, job)
    results = []
    try:
        for sc in job["scenarios"]:
            kind = sc["kind"]
            if kind == "stream":
                r = await run_stream(bench, sc)
            elif kind == "reset":
                r = await run_reset(bench, sc)
            elif kind in ("tlast_early", "tlast_late"):
                r = await run_tlast(bench, sc, early=kind == "tlast_early")
            else:
                raise ValueError(f"scenario {kind!r}; allowed: {', '.join(SCENARIOS)}")
            r = {"kind": kind, "pause_in": sc.get("pause_in", 0.0),
                 "pause_out": sc.get("pause_out", 0.0), "seed": sc.get("seed", 0), **r}
            r["problems"] = problems_of(r, error_expected=kind.startswith("tlast"))
            r["ok"] = not r["problems"]
            dut._log.info("%s: %s", kind, "ok" if r["ok"] else "; ".join(r["problems"]))
            results.append(r)
    finally:
        out = {"sim": cocotb.SIM_NAME, "sim_version": cocotb.SIM_VERSION,
               "scenarios": results, "unknown_reads": bench.loop.unknown_reads,
               "cycles": bench.loop.cycle, "busy_cycles": bench.loop.busy_cycles,
               "busy_s": round(bench.loop.busy_s, 3),
               "wall_s": round(time.perf_counter() - t0, 3)}
        Path(job["result"]).write_text(json.dumps(out))
    bad = [f"{r['kind']}: {'; '.join(r['problems'])}" for r in results if not r["ok"]]
    assert not bad, " | ".join(bad)
