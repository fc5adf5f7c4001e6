"""`tse vectors`: golden vectors of a configuration for verifying a unit without Python.

Builds the quantized PyTorch reference (for its parameters and input codes), runs the integer
model of the chosen profile over the frames, and writes every stage as .npy and $readmemh hex
plus the unit's ROM images and a manifest (docs/formats.md, "Vectors directories"),
and beside them the unit's
Verilog (tse_unit.v, when rtl/ is available) and a self-checking testbench (tb_tse_unit.v)
that runs under Icarus or Verilator with one command (docs/cosim.md). The torch profile must
equal quantized PyTorch on every stage; any mismatch is reported and the exit status is 1.
The hw profile's distance from quantized PyTorch is reported per stage.
"""
from __future__ import annotations

import json
from pathlib import Path

from tse.ref_model.cli_args import add_config_arguments
from tse.rtl.export import add_unit_arguments

from . import preflight
from .cmd_reference import add_source_arguments, build_reference


def register(sub):
    p = sub.add_parser("vectors", help="write golden vectors (.npy + hex + ROM images)",
                       description=__doc__)
    add_config_arguments(p)
    add_source_arguments(p)
    add_unit_arguments(p)
    p.add_argument("--json", action="store_true", help="print a one-line JSON summary")
    p.set_defaults(run=run)


def run(args):
    from tse.quant import reference
    from tse.sim import selfcheck

    from . import golden

    from tse.rtl.export import check_name
    check_name(args.name)
    cfg, ref = build_reference(args)
    # quantized PyTorch's codes piece by piece, channels last: no float stage of the frames
    torch_codes = reference.channels_last_codes(ref)
    x = torch_codes["input"]
    v = golden.write(golden.build(cfg, ref.params, x, torch_codes, cfg.profile, ref.sources),
                     args.out, name=args.name, probes=args.probes)
    result, vs_torch, files = v.result, v.vs_quantized_pytorch, v.files
    out = Path(args.out)
    bundle = {"testbench": str(out / selfcheck.TB_FILE),
              "unit": str(out / f"{args.name}.v") if f"{args.name}.v" in files else None,
              "commands": selfcheck.COMMANDS}
    mismatched = {s: d["mismatches"] for s, d in vs_torch.items() if d["mismatches"]}
    summary = {"out": args.out, "profile": cfg.profile, "engine": cfg.engine,
               "frames": int(x.shape[0]), "beats": int(x.size // cfg.lanes),
               "vs_quantized_pytorch": vs_torch, "saturated": result["saturated"],
               "selfcheck": bundle,
               "calibration": preflight.calibration_fit(ref.x, ref.params)}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"golden vectors ({cfg.profile} profile, engine {cfg.engine}) -> {args.out}: "
              f"{summary['frames']} frame(s), {summary['beats']} input beats of {cfg.lanes} lanes")
        print(f"  {preflight.format_fit(summary['calibration'])}")
        for stage, d in vs_torch.items():
            print(f"  {stage:7s} vs quantized PyTorch: {d['mismatches']} of {d['values']} codes "
                  f"differ ({100 * d['mismatch_rate']:.4f} %), largest {d['max_err_lsb']} LSB")
        print(f"  self-checking testbench {bundle['testbench']}"
              + ("" if bundle["unit"] else f" (no {args.name}.v: rtl/ is not available)")
              + "; run in that directory (docs/cosim.md):")
        for sim, command in bundle["commands"].items():
            print(f"    {sim:9s} {command}")
    if cfg.profile == "torch" and mismatched:
        print(f"tse: error: the torch profile differs from quantized PyTorch: {mismatched}")
        return 1
    return 0
