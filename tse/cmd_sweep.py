"""`tse sweep`: accuracy of the hw profile against its widths and roundings, and their cost.

Evaluates the configuration's [hw] profile over a grid of widths (reciprocal, requantizer
multipliers, bias fraction, accumulators, gate) and roundings, for SE or (--block eca|srm)
the widths the ECA or SRM hw profile has (their cost an estimate, not an RTL plan's): exact
match and error against the torch profile, SQNR and cosine against the float block,
saturation, hardware cost. Writes
sweep.csv, sweep.json (with the Pareto front of cost against error) and PNG plots to --out;
an interrupted sweep resumes there and skips finished points. docs/sweeps.md reads them.
"""
from __future__ import annotations

import json
from pathlib import Path

from tse.ref_model.cli_args import add_config_arguments, config_from_args
from tse.ref_model.config import BLOCKS
from tse.ref_model.errors import ConfigError


SWEEP_FILES = ("points.jsonl", "sweep.csv", "sweep.json", "error_vs_width.png",
               "sqnr_vs_width.png", "cost_vs_error.png")
"""What a sweep writes in its directory (a directory of only these is an earlier sweep's)."""


def register(sub):
    p = sub.add_parser("sweep", help="fixed-point width sweep of the hw profile",
                       description=__doc__)
    add_config_arguments(p)
    p.add_argument("--grid", metavar="FILE",
                   help="grid TOML (axes and values); default: tse/quant/sweep_grid_default.toml "
                        "(SE), sweep_grid_eca.toml or sweep_grid_srm.toml (--block eca, srm); "
                        "an axis the block's hw profile does not have is refused")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (resumes from DIR/points.jsonl; refused if it "
                        "holds files tse did not write)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes (default: the number of cores); with "
                        "--scheduler local, Dask workers")
    p.add_argument("--scheduler", metavar="ADDRESS",
                   help="run the points on a Dask cluster (tcp://host:8786), or 'local' for "
                        "a local Dask cluster")
    p.add_argument("--frames", type=int, metavar="N",
                   help="synthetic input frames (default: the grid's, 32 for the default)")
    p.add_argument("--quick", action="store_true",
                   help="a quick run: 8 frames")
    p.add_argument("--yosys", metavar="POINTS",
                   help="comma-separated labels or ids of points to synthesize for Yosys "
                        "cells, when rtl/ provides tse.rtl.resources.yosys_cells")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object (no progress bar)")
    p.set_defaults(run=run)


def run(args):
    cfg = config_from_args(args, blocks=BLOCKS, excite_kernels=("1x1", "3x1"))
    from tse.quant import sweep

    if args.frames is not None and args.frames < 1:
        raise ConfigError(f"frames (--frames): {args.frames} is not allowed; allowed: a "
                          "positive integer")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"workers (--workers): {args.workers} is not allowed; allowed: a "
                          "positive integer")
    from tse.ref_model.artifacts import claim_dir, write_manifest

    cfg.check_hw()                       # the sweep varies the hw profile around cfg.hw
    kind = sweep.grid_kind(cfg)
    if args.yosys and kind != "se":
        raise ConfigError(f"yosys (--yosys): not available for {kind} (the sweep synthesizes "
                          "SE's unit with the 1x1 excite only); allowed: --yosys with block = "
                          "'se' and excite_kernel = '1x1'")
    grid = sweep.load_grid(args.grid, kind)
    out = claim_dir(args.out, "sweep", legacy_names=SWEEP_FILES)
    frames = args.frames or (sweep.QUICK_FRAMES if args.quick else None)
    yosys = [s.strip() for s in args.yosys.split(",") if s.strip()] if args.yosys else ()
    summary = sweep.run_sweep(cfg, grid, args.out, frames=frames, workers=args.workers,
                              scheduler=args.scheduler, progress=not args.json,
                              plots=not args.no_plots, yosys=yosys)
    write_manifest(out, {"kind": "sweep", "config": cfg.to_dict()},
                   {k: Path(v).name for k, v in summary["files"].items()})
    if args.json:
        print(json.dumps(summary, default=str))
    else:
        print(sweep.format_summary(summary))
