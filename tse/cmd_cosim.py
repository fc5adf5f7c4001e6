"""`tse cosim`: the unit's Verilog driven with golden vectors under cocotb, checked beat by beat.

Builds the golden vectors and the unit's Verilog of the configuration (cached under
~/.cache/tse/cosim/), wraps the unit in the cocotb harness, and runs the scenarios on Icarus or
Verilator: AXI4-Stream source and sink with seeded random pauses, every output beat and TLAST
compared bit-exactly. Reports throughput (output beats over the cycles from the first to the
last output beat), latency (first input beat to first output beat), peak strip-buffer
occupancy, input stall cycles and simulated cycles per second; on a mismatch, the first one by
frame, row, column and channel and the stage that first differs. Exit status 1 on any
mismatch or failed check (docs/cosim.md).
"""
from __future__ import annotations

import json
import sys

from pathlib import Path

from tse.ref_model.cli_args import add_config_arguments, config_from_args
from tse.ref_model.errors import InputError

from . import preflight

RUN_DIR_FILES = ("job.json", "result.json", "results.xml", "sim.log")
"""What a co-simulation writes in its run directory (tse.sim.runner)."""


def register(sub):
    p = sub.add_parser("cosim", help="co-simulate the unit's Verilog with golden vectors "
                                     "(cocotb on Icarus or Verilator)", description=__doc__)
    add_config_arguments(p)
    g = p.add_argument_group("co-simulation")
    g.add_argument("--sim", required=True, choices=("icarus", "verilator"),
                   help="simulator")
    g.add_argument("--frames", type=int, default=3, metavar="N",
                   help="frames streamed back to back (default 3)")
    g.add_argument("--pause", type=float, default=0.0, metavar="P",
                   help="pause probability per cycle on both sides, 0 <= P < 1 (default 0)")
    g.add_argument("--pause-in", type=float, metavar="P", help="source pause probability "
                   "(default --pause)")
    g.add_argument("--pause-out", type=float, metavar="P", help="sink pause probability "
                   "(default --pause)")
    g.add_argument("--scenarios", default="stream", metavar="LIST",
                   help="comma-separated: stream, reset, tlast_early, tlast_late, or all "
                        "(default stream)")
    g.add_argument("--vectors", metavar="DIR", help="use this `tse vectors` directory (with "
                   "its NAME.v) instead of generating vectors for the configuration")
    g.add_argument("--run-dir", metavar="DIR", help="where the job, results and simulator "
                   "log go (default under ~/.cache/tse/cosim/runs)")
    g.add_argument("--json", action="store_true", help="print one JSON object on one line")
    m = p.add_argument_group("whole model (docs/models.md)")
    m.add_argument("--model", metavar="FILE|NAME",
                   help="co-simulate every SE block of a model (.py with build_model(), "
                        "torch.save'd or .onnx; or a cached Fashion-MNIST net: senet, "
                        "efficientnet, mobilenetv3): vectors as tse vectors --model writes them "
                        "into --out, then each block's unit; pass/fail per block")
    m.add_argument("--calibration", metavar="X.npy", help="with --model: the model's input "
                   "images (default for the cached nets: 256 seeded Fashion-MNIST training "
                   "images)")
    m.add_argument("--out", metavar="DIR", help="with --model: the network vectors directory")
    p.set_defaults(run=run)


MODEL_FIELDS = ("tile", "lanes", "engine", "seed")
"""Configuration flags that apply to every block of --model."""


def run_model(args, pause_in: float, pause_out: float, kinds) -> int:
    """`tse cosim --model`: every block's unit against its vectors (tse.model_cosim)."""
    from tse import model_cosim
    from tse.model_vectors import CALIBRATION_CAP, load_images
    from tse.quant import fashion_mnist, zoo
    from tse.ref_model.errors import ConfigError

    given = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_") and v is not None}
    bad = [f"--{f.replace('_', '-')}" for f in sorted(set(given) - set(MODEL_FIELDS))]
    bad += [f for f, v in (("--config", args.config), ("--vectors", args.vectors),
                           ("--run-dir", args.run_dir)) if v]
    if bad:
        raise ConfigError(f"model: {', '.join(bad)} cannot be given with --model; allowed: "
                          + ", ".join(f"--{f}" for f in MODEL_FIELDS))
    if not args.out:
        raise ConfigError("out: --model needs --out DIR (the network vectors directory)")
    lanes = given.get("lanes", "8")
    if not str(lanes).isdigit() or int(lanes) < 1:
        raise ConfigError(f"lanes (--lanes): {lanes!r} is not allowed; allowed: a positive "
                          "integer (clamped per block to a divisor of its C)")
    if args.calibration:
        images = load_images(args.calibration)
    elif args.model in zoo.NETS:
        images = fashion_mnist.split(0, CALIBRATION_CAP, 0).x_train
    else:
        raise ConfigError("calibration: --model FILE needs --calibration IMAGES.npy (the "
                          "model's input); allowed: a .npy file, or a cached net's name")
    options = {k: given[k] for k in ("engine",) if k in given}
    seed = int(given.get("seed", 0))
    log = None if args.json else (lambda m: print(f"  {m}"))
    rep = model_cosim.run(args.model, args.out, images, args.sim, tile=given.get("tile", "7xW"),
                          frames=args.frames, lanes=int(lanes), kinds=kinds,
                          pause_in=pause_in, pause_out=pause_out, seed=seed, log=log,
                          **options)
    print(json.dumps(rep) if args.json else model_cosim.format_report(rep))
    return 0 if rep["ok"] else 1


def run(args):
    from tse.ref_model.artifacts import claim_dir
    from tse.sim import cosim, runner

    pause_in = args.pause if args.pause_in is None else args.pause_in
    pause_out = args.pause if args.pause_out is None else args.pause_out
    for name, v in (("pause-in", pause_in), ("pause-out", pause_out)):
        if not 0.0 <= v < 1.0:
            raise InputError(f"{name}: {v} is not allowed; allowed: 0 <= P < 1")
    if args.frames < 1:
        raise InputError(f"frames: {args.frames} is not allowed; allowed: a positive integer")
    kinds = cosim.KINDS if args.scenarios == "all" else \
        tuple(k.strip() for k in args.scenarios.split(",") if k.strip())
    if args.model:
        return run_model(args, pause_in, pause_out, kinds)
    cfg = config_from_args(args, blocks=("se", "eca", "srm"), excite_kernels=("1x1", "3x1"))
    if (cfg.block != "se" or cfg.excite_kernel == "3x1") and cfg.profile != "hw":
        raise InputError(f"profile: {cfg.profile!r} is not supported with block = "
                         f"{cfg.block!r}; allowed: hw (the {cfg.block.upper()} vectors are the "
                         "hw profile's)")
    if args.run_dir:
        claim_dir(args.run_dir, "cosim-run", "run-dir", legacy_names=RUN_DIR_FILES)
    if args.vectors:
        _check_vectors_dir(args.vectors)
    else:
        cfg.check_hw()                   # the unit computes the hw numerics
        preflight.memory(cfg, args.frames, "tse cosim")
        note = preflight.excite_multipliers_note(cfg) if cfg.block == "se" else None
        if note and not args.json:
            print(f"note: {note}")
    try:
        if args.vectors:
            vectors_dir = args.vectors
            frames = None
        else:
            vectors_dir = cosim.prepare(cfg, args.frames)
            frames = args.frames
        scs = cosim.scenarios(kinds, frames, pause_in, pause_out, cfg.seed)
        report = cosim.cosimulate(vectors_dir, args.sim, scs, run_dir=args.run_dir)
    except runner.SimulationError as e:
        print(f"tse: error: {e}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report))
    else:
        print(format_report(report))
    return 0 if report["ok"] else 1


def _check_vectors_dir(directory) -> None:
    """--vectors must be a `tse vectors` directory with the unit's Verilog."""
    from tse.ref_model.artifacts import read_manifest

    manifest = read_manifest(directory)           # a one-line error when there is none
    if manifest.get("kind") != "golden-vectors" or not isinstance(manifest.get("config"), dict):
        raise InputError(f"vectors: {str(directory)!r} is a {manifest.get('kind')!r} directory; "
                         "allowed: a directory written by tse vectors")
    units = [f["path"] for f in manifest.get("files", []) if f.get("role") == "unit_verilog"]
    if not units or not (Path(directory) / units[0]).is_file():
        raise InputError(f"vectors: {str(directory)!r} has no unit Verilog (NAME.v; rtl/ was "
                         "not available when it was written); allowed: a tse vectors directory "
                         "with the unit's Verilog")


def format_report(r: dict) -> str:
    c = r["config"]
    lines = [f"co-simulation on {r['sim']}: C={c['channels']} {c['height']}x{c['width']} "
             f"tile {c['tile']} P={c['lanes']}, {r['frames']} frame(s) back to back: "
             f"{'PASS' if r['ok'] else 'FAIL'}"]
    for s in r["scenarios"]:
        lat = s["latency_cycles"]
        lines.append(
            f"  {s['kind']:11s} pauses in/out {s['pause_in']:.2f}/{s['pause_out']:.2f}: "
            f"{s['beats_out']}/{s['beats']} beats, {s['mismatches']} mismatches, throughput "
            f"{s['throughput']:.4f}, latency {lat if lat is not None else '-'} cycles, "
            f"peak buffer {s['max_buffer_occupancy']} beats, input stalls "
            f"{s['input_stall_cycles']}, pauses applied in/out {s['input_pause_cycles']}/"
            f"{s['output_pause_cycles']} cycles, {s['cycles_per_s'] or 0} cycles/s"
            + (f", broken frame: {s['bad_frame_beats_in']} beats in, "
               f"{s['bad_frame_output_beats']} out" if "bad_frame_output_beats" in s else "")
            + ("" if s["ok"] else f"\n    FAIL: {'; '.join(s['problems'])}"))
    build = "cached" if r["build"]["cached"] else f"{r['build']['build_s']} s"
    lines.append(f"  {r['cycles']} cycles simulated at {r['cycles_per_s']} cycles/s; wall "
                 f"{r['wall_s']} s (build {build}); log {r['log']}")
    return "\n".join(lines)
