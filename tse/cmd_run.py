"""`tse run`: the main job on a configuration (the README's first command runs it on the
built-in default), the whole chain: the quantized PyTorch reference, the golden vectors of the
hw profile (the numerics the RTL implements) with the unit's Verilog and a self-checking
testbench, co-simulation of that Verilog on Icarus (cocotb), and one summary: bit-exact against
the vectors, the hw profile's distance from quantized PyTorch, throughput, latency, and the
strip buffer against plain SE's whole-frame buffer. Exit status 1 if co-simulation fails."""
from __future__ import annotations

import json
import sys

from tse.ref_model.cli_args import add_config_arguments, config_from_args
from tse.rtl.export import add_unit_arguments


RUN_PARTS = ("reference", "vectors", "cosim")
"""What a run writes in its directory (a directory of only these is an earlier run's)."""


def register(sub):
    p = sub.add_parser("run", help="the main job: the whole chain on a configuration",
                       description=__doc__)
    add_config_arguments(p)
    p.add_argument("--out", default="out/default", metavar="DIR",
                   help="output directory (default out/default)")
    p.add_argument("--frames", type=int, default=3, metavar="N",
                   help="synthetic input frames (default 3)")
    p.add_argument("--sim", default="icarus", choices=("icarus", "verilator", "none"),
                   help="simulator for the co-simulation (default icarus; none skips it)")
    add_unit_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args):
    from tse.quant import calibration_check, reference
    from tse.ref_model import kernels, vectors
    from tse.ref_model.artifacts import claim_dir
    from tse.ref_model.errors import InputError
    from tse.sim import cosim, runner

    from . import golden, preflight

    # the chain runs the hw numerics whatever --profile: its widths are checked as such
    from tse.rtl.export import check_name
    check_name(args.name)
    cfg = config_from_args(args).replace(profile="hw")
    if args.frames < 1:
        raise InputError(f"frames: {args.frames} is not allowed; allowed: a positive integer")
    preflight.memory(cfg, args.frames, "tse run")
    out = claim_dir(args.out, "run", legacy_names=RUN_PARTS)
    for part in ("reference", "vectors"):
        preflight.replaceable_out(out / part)
    ref = reference.build(cfg, frames=args.frames)
    calib = preflight.calibration_fit(ref.input_float, ref.params)
    calibration_check.check(calib)            # synthetic calibration: a guard, never expected
    reference.write(ref, out / "reference")
    torch_codes = {s: kernels.nhwc(ref.codes[s]) for s in vectors.COMPARED}
    v = golden.build(cfg, ref.params, kernels.nhwc(ref.codes["input"]), torch_codes, "hw",
                     ref.sources)
    vs_torch = golden.write(v, out / "vectors", name=args.name,
                            probes=args.probes).vs_quantized_pytorch
    summary = {"config": cfg.to_dict(), "calibration": calib,
               "excite_multipliers_built": cfg.excite_multipliers_built,
               "reference": reference.summary(ref, out / "reference"),
               "vectors": {"out": str(out / "vectors"), "profile": "hw",
                           "hw_vs_quantized_pytorch": vs_torch},
               "buffer": {"strip_buffer_beats": cfg.full_throughput_depth,
                          "strip_buffer_bits": cfg.full_throughput_depth * cfg.lanes * 8,
                          "paper_minimum_bits": cfg.tile_rows * cfg.width * cfg.channels * 8,
                          "se_buffer_bits": cfg.height * cfg.width * cfg.channels * 8}}
    ok = True
    if args.sim != "none":
        if not args.json:
            print(f"co-simulating {out / 'vectors' / (args.name + '.v')}"
                  f"{'' if args.probes else ' (with probe ports for the strip level)'} on "
                  f"{args.sim} ...", flush=True)
        try:
            # without --probes the same unit plus its probe ports measures the strip buffer
            twin = None if args.probes else cosim.probed_twin(out / "vectors")
            report = cosim.cosimulate(
                out / "vectors", args.sim,
                cosim.scenarios(("stream",), args.frames, 0.0, 0.0, cfg.seed),
                unit_verilog=twin, run_dir=out / "cosim")
        except runner.SimulationError as e:
            print(f"tse: error: co-simulation failed: {e}", file=sys.stderr)
            return 1
        summary["cosim"] = {k: report[k] for k in (
            "sim", "frames", "beats", "mismatches", "cycles", "throughput", "latency_cycles",
            "max_buffer_occupancy", "input_stall_cycles", "cycles_per_s", "wall_s", "ok",
            "problems", "first_mismatch", "stage")}
        ok = bool(report["ok"])
    if args.json:
        print(json.dumps(summary))
        return 0 if ok else 1
    print(reference.format_summary(summary["reference"]))
    note = preflight.excite_multipliers_note(cfg)
    if note:
        print(f"  note: {note}")
    print(f"golden vectors (hw profile) -> {out / 'vectors'}")
    for stage, d in vs_torch.items():
        print(f"  hw vs quantized PyTorch, {stage:7s}: {d['mismatches']} of {d['values']} codes "
              f"differ, largest {d['max_err_lsb']} LSB")
    b = summary["buffer"]
    print(f"strip buffer at full throughput: {b['strip_buffer_beats']} beats = "
          f"{b['strip_buffer_bits']} bits ({b['strip_buffer_bits'] / b['paper_minimum_bits']:.3f}"
          f" x the paper's minimum {b['paper_minimum_bits']}); plain SE: {b['se_buffer_bits']} bits")
    if "cosim" in summary:
        c = summary["cosim"]
        peak = c["max_buffer_occupancy"]
        print(f"co-simulation ({c['sim']}, {c['frames']} frames back to back, no pauses): "
              f"{'bit-exact' if c['mismatches'] == 0 else str(c['mismatches']) + ' MISMATCHES'}"
              f" on {c['beats']} output beats; throughput {c['throughput']:.4f}, latency "
              f"{c['latency_cycles']} cycles, peak strip buffer "
              f"{'n/a (no probes)' if peak is None else peak} "
              f"beats, {c['cycles_per_s']} cycles/s{'' if c['ok'] else '; FAILED'}")
    return 0 if ok else 1
