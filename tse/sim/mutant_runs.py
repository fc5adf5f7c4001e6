"""Running mutants of the campaign's Verilator model on vectors (tse mutate): the
testbench's runs (RUNS) of one mutant, and the extra vector sets survivors get.

The sets, each golden from the bit-accurate model, each refused unless the original passes
it: targeted sums (targeted_run: the mean-unit check's sums put into their lanes), targeted
pooled codes (pooled_run: a parameter set that carries one lane's pooled code to a gate),
targeted words (requant_run: the requantizer check's operands put into a neuron) and fine
words (fine_run: accumulators shown to their last bit). The parameter sets themselves are
tse.sim.targeted_params's; a set must leave the unit's Verilog as it is (the mutants' model
is built from it). A mutant a set kills is marked killed, with killed_by naming the set and
the run.
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

from . import mutation_vectors, selfcheck
from .netlist import MUTSEL, MutationError

POOLED_CHANNELS = 4
"""Channels of a lane a targeted pooled-code set tries (targeted_params.pooled), lowest
first: any one that works will do."""
RUNS = (
    ("no pauses", ()),
    ("pauses 30 % on both sides", ("+pause_in=30", "+pause_out=30", "+seed=7")),
    ("sink pauses 60 %", ("+pause_out=60", "+seed=11")),
    ("source pauses 60 %", ("+pause_in=60", "+seed=13")),
)
"""The testbench runs a mutant gets, in turn until one kills it: without pauses nothing
exercises backpressure (skid buffers, ready logic, stalls)."""


def simulate(program: Path, vectors_dir, index: int, *, blind: bool = False,
             timeout: float = 600, extra=()) -> dict:
    """Run the testbench on mutant `index` (0: the original) with extra plusargs (a RUNS
    entry's); {"passed", "reason", "wall_s"}."""
    plusargs = [f"+{MUTSEL}={index}", "+stop_on_mismatch", *extra] + \
        (["+blind"] if blind else [])
    cmd = selfcheck.command(program, "verilator", vectors_dir, plusargs=plusargs)
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"passed": False, "reason": f"ran over {timeout:.0f} s",
                "wall_s": round(time.perf_counter() - t0, 3)}
    res = selfcheck.parse(r.stdout + r.stderr)
    passed = res["passed"] and r.returncode == 0
    reason = None if passed else (res.get("first_mismatch") or res.get("line")
                                  or f"exit status {r.returncode}")
    return {"passed": passed, "reason": reason, "wall_s": round(time.perf_counter() - t0, 3)}


def targeted_run(program: Path, told: list[dict], cfg, sets: int, root: Path, frames: int,
                 blind: bool, limit: float) -> None:
    """Run each mutant of `told` (mean-unit check: "distinguished", with its sum) on vectors
    that hand all their sums to their lanes (targeted_vectors, every parameter set), every
    RUNS entry, until one kills it; marks the killed ones (killed_by "targeted ...")."""
    hits = sorted({(r["formal"]["lane"], r["formal"]["kind"], r["formal"]["sum"])
                   for r in told})
    dirs = mutation_vectors.targeted_vectors(cfg, hits, sets, root, frames)
    runs = [(f"targeted sums, {name}" + (f", parameter set {k}" if k else ""), vdir, extra)
            for k, vdir in enumerate(dirs) for name, extra in RUNS]
    for name, vdir, extra in runs:
        original = simulate(program, vdir, 0, blind=blind, extra=extra)
        if not original.get("passed"):
            raise MutationError(f"the original unit fails its own testbench ({name}): "
                                f"{original['reason']}")
    for r in told:
        for name, vdir, extra in runs:
            res = simulate(program, vdir, r["index"], blind=blind, timeout=limit, extra=extra)
            if not res["passed"]:
                r.update(killed=True, killed_by=name, reason=res["reason"])
                break


def requant_run(program: Path, told: list[dict], cfg, plan, verilog: Path, root: Path,
                frames: int, blind: bool, limit: float) -> None:
    """Run each mutant of `told` (requantizer check: "distinguished", with its operands) on
    a parameter set of its own that puts them into a neuron (targeted_params.requantizer)
    over stress frames, every RUNS entry, until one kills it; marks the killed ones
    (killed_by "targeted words ..."). A mutant no such set shows keeps its verdict, noted."""
    import numpy as np

    from . import targeted_params

    ref = mutation_vectors.block_reference(cfg, frames)
    x = mutation_vectors.stress_frames(cfg, mutation_vectors.TARGETED_MIN_FRAMES, cfg.seed,
                                       np.uint8, int(ref.params.zero_points["input"]))
    for r in told:
        ip = targeted_params.requantizer(plan.ip, r["formal"])
        if ip is None:
            r["formal"]["note"] += "; no parameter set of one neuron shows it at the outputs"
            continue
        out = root / f"mutant{r['index']}"
        mutation_vectors.write_vectors(cfg, ref, x, 0, out, {"targeted_words": {
            k: r["formal"][k] for k in ("layer", "acc", "mult", "shift")}}, ip=ip)
        run_set(program, [r], out, verilog, "targeted words", blind, limit)


def pooled_run(program: Path, told: list[dict], cfg, plan, verilog: Path, root: Path,
               frames: int, blind: bool, limit: float) -> None:
    """Run each mutant of `told` (mean-unit check: "distinguished", with its sum and both
    pooled codes; targeted sums left it alive) on a parameter set that carries that pooled
    code alone to a gate (targeted_params.pooled) with frames that put the sum into the
    set's channel, every RUNS entry, until one kills it; marks the killed ones (killed_by
    "targeted pooled codes ..."). A mutant no such set shows keeps its verdict, noted."""
    import numpy as np

    from . import targeted_params

    ref = mutation_vectors.block_reference(cfg, frames)
    zp = int(ref.params.zero_points["input"])
    for r in told:
        f = r["formal"]
        if f.get("gold") is None or f.get("gold") == f.get("gate"):
            continue
        ip = channel = None
        for channel in range(f["lane"], cfg.channels, cfg.lanes)[:POOLED_CHANNELS]:
            ip = targeted_params.pooled(plan.ip, channel, f["gold"], f["gate"])
            if ip is not None:
                break
        if ip is None:
            f["note"] += "; no parameter set of one fc1 neuron shows its pooled code"
            continue
        x = mutation_vectors.targeted_frames(cfg, [(f["lane"], f["kind"], f["sum"])],
                                             np.uint8, zp, cfg.seed, channel=channel)
        out = root / f"mutant{r['index']}"
        mutation_vectors.write_vectors(cfg, ref, x, 0, out, {"targeted_pooled": {
            "channel": channel, **{k: f[k] for k in ("lane", "kind", "sum", "gold", "gate")}}},
            ip=ip)
        run_set(program, [r], out, verilog, "targeted pooled codes", blind, limit)


def fine_run(program: Path, told: list[dict], cfg, plan, verilog: Path, root: Path,
             frames: int, blind: bool, limit: float) -> None:
    """Run each mutant of `told` (survivors no check cleared) on the fine-words sets
    (targeted_params.fine_words: fc1's, then fc2's accumulators shown to their last bit)
    over stress frames, every RUNS entry, until one kills it; marks the killed ones
    (killed_by "fine words fcN ...")."""
    import numpy as np

    from . import targeted_params

    ref = mutation_vectors.block_reference(cfg, frames)
    x = mutation_vectors.stress_frames(cfg, mutation_vectors.TARGETED_MIN_FRAMES, cfg.seed,
                                       np.uint8, int(ref.params.zero_points["input"]))
    for layer in targeted_params.FINE_LAYERS:
        ip = targeted_params.fine_words(plan.ip, layer, cfg.seed)
        if ip is None:
            continue
        out = root / f"fc{layer + 1}"
        mutation_vectors.write_vectors(cfg, ref, x, 0, out, {"fine_words": f"fc{layer + 1}"},
                                       ip=ip)
        run_set(program, told, out, verilog, f"fine words fc{layer + 1}", blind, limit)


def run_set(program: Path, told: list[dict], out: Path, verilog: Path, label: str,
             blind: bool, limit: float) -> None:
    """Run the mutants of `told` not yet killed on the targeted vectors directory `out`,
    every RUNS entry, until one kills each (killed_by f"{label}, <run>"). The set must leave
    the unit's Verilog (`verilog`, the mutants' base) as it is (else each keeps its verdict,
    noted), and the original must pass it."""
    told = [r for r in told if not r["killed"]]
    if not told:
        return
    if selfcheck.unit_verilog_of(out).read_bytes() != Path(verilog).read_bytes():
        for r in told:
            r["formal"]["note"] += f"; the {label} set changes the unit's Verilog"
        return
    for name, extra in RUNS:
        original = simulate(program, out, 0, blind=blind, extra=extra)
        if not original.get("passed"):
            raise MutationError(f"the original unit fails its own testbench ({label}, "
                                f"{name}): {original['reason']}")
    for r in told:
        for name, extra in RUNS:
            res = simulate(program, out, r["index"], blind=blind, timeout=limit, extra=extra)
            if not res["passed"]:
                r.update(killed=True, killed_by=f"{label}, {name}", reason=res["reason"])
                break
