"""Co-simulation of every SE block of a whole model (`tse cosim --model`; docs/models.md).

The network's vectors directory is written as `tse vectors --model` writes it
(tse.model_vectors.write, hw profile: the numerics the unit computes), then each block's
directory is co-simulated on its own unit by tse.sim.cosim's entry point (cocotb on Icarus or
Verilator, every output beat compared bit-exactly). A block whose simulation fails to run is
reported failed with its one-line reason; the other blocks still run.
"""
from __future__ import annotations

from pathlib import Path


def run(model_file, out, images, sim: str, *, tile: str = "7xW", frames: int = 1,
        lanes: int = 8, kinds=("stream",), pause_in: float = 0.0, pause_out: float = 0.0,
        seed: int = 0, log=None, **options) -> dict:
    """Write the vectors of every block of the model to out, co-simulate each; returns
    {"model", "out", "sim", "ok", "blocks": [{name, directory, ok, mismatches, beats,
    cycles, problems}], "skipped"}."""
    from tse import model_vectors
    from tse.sim import cosim, runner

    runner.check_simulator(sim)
    scs = cosim.scenarios(kinds, None, pause_in, pause_out, seed)
    manifest = model_vectors.write(model_file, out, images, tile=tile, frames=frames,
                                   lanes=lanes, log=log, profile="hw", **options)
    blocks = []
    for b in manifest["blocks"]:
        row = {"name": b["name"], "directory": b["directory"], "unit": b["unit"]}
        try:
            rep = cosim.cosimulate(Path(out) / b["directory"], sim, scs)
        except runner.SimulationError as e:
            row.update(ok=False, mismatches=None, beats=0, cycles=0, problems=[str(e)])
        else:
            row.update(ok=bool(rep["ok"]),
                       mismatches=sum(s["mismatches"] for s in rep["scenarios"]),
                       beats=sum(s["beats_out"] for s in rep["scenarios"]),
                       cycles=rep["cycles"],
                       problems=[p for s in rep["scenarios"] for p in s["problems"]])
        blocks.append(row)
        if log:
            log(f"{b['name']}: {'PASS' if row['ok'] else 'FAIL'} ({row['beats']} beats, "
                f"{row['mismatches']} mismatches)")
    return {"model": str(model_file), "out": str(out), "sim": sim, "frames": frames,
            "tile": tile, "ok": all(r["ok"] for r in blocks), "blocks": blocks,
            "skipped": [s["reason"] for s in manifest["skipped"]]}


def format_report(rep: dict) -> str:
    lines = [f"co-simulation of every SE block on {rep['sim']}, {rep['frames']} frame(s) each, "
             f"vectors in {rep['out']}: {'PASS' if rep['ok'] else 'FAIL'}"]
    for r in rep["blocks"]:
        lines.append(f"  {r['name']:24s} {'PASS' if r['ok'] else 'FAIL'}  {r['beats']} beats, "
                     f"{r['mismatches']} mismatches, {r['cycles']} cycles"
                     + "".join(f"\n    {p}" for p in r["problems"]))
    lines += [f"  skipped {s}" for s in rep["skipped"]]
    return "\n".join(lines)
