"""`tse vectors`: golden vectors of a configuration for verifying a unit without Python.

Builds the quantized PyTorch reference (for its parameters and input codes), runs the integer
model of the chosen profile over the frames, and writes every stage as .npy and $readmemh hex
plus the unit's ROM images and a manifest (docs/formats.md, "Vectors directories"),
and beside them the unit's
Verilog (tse_unit.v, when rtl/ is available) and a self-checking testbench (tb_tse_unit.v)
that runs under Icarus or Verilator with one command (docs/cosim.md). The torch profile must
equal quantized PyTorch on every stage; any mismatch is reported and the exit status is 1.
The hw profile's distance from quantized PyTorch is reported per stage.

With --model FILE (a .py with build_model(), a torch.save'd model or a .onnx file) and
--calibration IMAGES.npy (the model's input), every SE block of the model gets its own
vectors directory DIR/<block>/, calibrated on the activations that reach it, with a
manifest.json of every block and every skipped block's reason (tse/model_vectors.py,
docs/models.md); the tile is clamped to each block's map.

With --block eca|srm: the hw profile's vectors of the seeded block
(tse.ref_model.attention_vectors) with the unit's Verilog, ROM images and the self-checking
testbench with its scripts, as for SE (`tse cosim --block eca|srm` co-simulates them).

With --excite-kernel 3x1 (block se, the paper's Appendix B excite across rows of tiles): the hw
profile's vectors of the seeded 3x1-excite block (input, tile sums, pooled, hidden, excite,
gate, output from attention_kernels.excite3x1_frames) with the 3x1 unit's Verilog
(tse/rtl/excite3x1.py), as ECA's and SRM's.
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
    p.add_argument("--model", metavar="FILE",
                   help="a whole model (.py with build_model(), torch.save'd module, or .onnx): "
                        "vectors of every SE block, calibrated on --calibration images (the "
                        "model's input) (runs the file's code: use only files you trust)")
    p.add_argument("--json", action="store_true", help="print a one-line JSON summary")
    p.set_defaults(run=run)


MODEL_FIELDS = ("tile", "lanes", "excite_multipliers", "buffer_depth", "profile", "engine",
                "seed")
"""Configuration flags that apply to every block of --model (the rest come from the blocks)."""


def run_model(args):
    from tse.ref_model.errors import ConfigError

    from . import model_vectors

    given = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    fixed = sorted(set(given) - set(MODEL_FIELDS))
    if fixed or args.config or args.weights or args.input:
        bad = ([f"--{f.replace('_', '-')}" for f in fixed]
               + [f for f, v in (("--config", args.config), ("--weights", args.weights),
                                 ("--input", args.input)) if v])
        raise ConfigError(f"model: {', '.join(bad)} cannot be given with --model (each block's "
                          "shape, dialect, weights and input come from the model); allowed: "
                          + ", ".join(f"--{f.replace('_', '-')}" for f in MODEL_FIELDS))
    if not args.calibration:
        raise ConfigError("calibration: --model needs --calibration IMAGES.npy (float images "
                          "[N, C, H, W], the model's input); allowed: a .npy file")
    import argparse

    from tse.ref_model.cli_args import config_from_args
    per_block = ("tile", "lanes")           # clamped per block, so not checked on the default
    typed = config_from_args(argparse.Namespace(
        **{f"cfg_{k}": v for k, v in given.items() if k not in per_block}))
    options = {k: getattr(typed, k) for k in given if k not in per_block}
    lanes = given.get("lanes", "8")
    if not str(lanes).isdigit() or int(lanes) < 1:
        raise ConfigError(f"lanes (--lanes): {lanes!r} is not allowed; allowed: a positive "
                          "integer (clamped per block to a divisor of its C)")
    images = model_vectors.load_images(args.calibration)
    log = None if args.json else (lambda m: print(f"  {m}"))
    manifest = model_vectors.write(
        args.model, args.out, images, tile=given.get("tile", "7xW"),
        frames=args.frames, lanes=int(lanes),
        allow_bad_calibration=args.allow_bad_calibration, log=log, **options)
    if args.json:
        print(json.dumps({k: manifest[k] for k in ("model", "tile", "blocks", "skipped")}))
    else:
        print(f"network vectors -> {args.out}: {len(manifest['blocks'])} block(s), "
              f"{len(manifest['skipped'])} skipped")
        for b in manifest["skipped"]:
            print(f"  skipped {b['reason']}")
    bad = {b["name"]: m for b in manifest["blocks"]
           for m in [{s: n for s, n in b["vs_quantized_pytorch"].items() if n}] if m}
    if bad and manifest["blocks"][0]["config"]["profile"] == "torch":
        print(f"tse: error: the torch profile differs from quantized PyTorch: {bad}")
        return 1
    return 0


def run(args):
    from tse.quant import reference
    from tse.sim import selfcheck

    from . import golden

    if args.model:
        return run_model(args)
    from tse.ref_model.cli_args import config_from_args
    from tse.ref_model.config import BLOCKS
    cfg = config_from_args(args, blocks=BLOCKS, excite_kernels=("1x1", "3x1"))
    if cfg.block != "se" or cfg.excite_kernel != "1x1":
        return run_attention(args, cfg)
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


def run_attention(args, cfg):
    """`tse vectors --block eca|srm`: the hw profile's vectors of the seeded block
    (tse.ref_model.attention_vectors) with the unit's Verilog NAME.v and its ROM images
    (tse.sim.cosim.write_attention_vectors), and the self-checking testbench.
    `--block se --excite-kernel 3x1` likewise, with the 3x1 excite's unit."""
    from tse.ref_model.errors import ConfigError, InputError
    from tse.rtl.export import check_name

    excite3x1 = cfg.excite_kernel == "3x1"
    what_block = "excite_kernel = '3x1'" if excite3x1 else f"block = {cfg.block!r}"
    given = [f for f, v in (("--weights", args.weights), ("--calibration", args.calibration),
                            ("--input", args.input)) if v]
    if given or cfg.profile != "hw":
        what = ", ".join(given) if given else f"profile {cfg.profile!r}"
        raise ConfigError(f"{what}: not supported with {what_block} yet; allowed: "
                          "the hw profile on seeded weights and synthetic frames")
    if args.frames < 1:
        raise InputError(f"frames: {args.frames} is not allowed; allowed: a positive integer")
    check_name(args.name)
    preflight.replaceable_out(args.out)
    preflight.memory(cfg, args.frames, "tse vectors")
    from tse.sim.cosim import write_attention_vectors
    r = write_attention_vectors(cfg, args.frames, args.out, name=args.name, probes=args.probes)
    unit = str(Path(args.out) / f"{args.name}.v")
    vs_torch = r["vs_quantized_pytorch"]
    block = "se, excite 3x1" if excite3x1 else cfg.block
    if args.json:
        print(json.dumps({"out": args.out, "block": cfg.block,
                          "excite_kernel": cfg.excite_kernel, "profile": "hw",
                          "engine": cfg.engine, "frames": r["frames"], "unit": unit,
                          "vs_quantized_pytorch": vs_torch}))
        return 0
    print(f"golden vectors ({block}, hw profile, engine {cfg.engine}) -> {args.out}: "
          f"{r['frames']} frame(s), "
          + f"unit {unit}")
    for stage, d in vs_torch.items():
        print(f"  {stage:7s} vs quantized PyTorch: {d['mismatches']} of {d['values']} codes "
              f"differ ({100 * d['mismatch_rate']:.4f} %), largest {d['max_err_lsb']} LSB")
    return 0
