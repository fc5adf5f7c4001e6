"""`tse network`: top-1 accuracy of a small trained SE network through every model.

A small CNN with three SE blocks, trained (seeded, on the CPU) on scikit-learn's digits and
cached in tse/quant/data/digits_se_cnn.pt, evaluated on its test split as: float SE; float with
every SE replaced by a row-strip TSE without retraining, for several tile heights; quantized
PyTorch; the bit-accurate torch profile; and the hw profile at every point of a width grid
(every SE block of the network replaced by the model). docs/sweeps.md has the table.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def register(sub):
    p = sub.add_parser("network", help="accuracy of a trained SE network through the models",
                       description=__doc__)
    p.add_argument("--grid", metavar="FILE",
                   help="width grid TOML for the hw points (default: the sweep's default grid)")
    p.add_argument("--quick", action="store_true",
                   help="hw profile at the base and widest points only")
    p.add_argument("--engine", default="fbgemm", metavar="ENGINE",
                   help="quantized PyTorch engine: fbgemm or qnnpack (default fbgemm)")
    p.add_argument("--tile", default="2xW", metavar="TILE",
                   help="tile of the quantized network and the models (default 2xW; HxW: SE)")
    p.add_argument("--float-tiles", default="1xW,2xW,4xW", metavar="LIST",
                   help="tiles replacing SE in the float network (default 1xW,2xW,4xW)")
    p.add_argument("--weights", metavar="FILE",
                   help="weight cache (default tse/quant/data/digits_se_cnn.pt; trained if absent)")
    p.add_argument("--retrain", action="store_true", help="train again and rewrite the cache")
    p.add_argument("--out", metavar="DIR", help="also write network.json and network.csv")
    p.add_argument("--json", action="store_true",
                   help="print the report as one JSON object (no progress bar)")
    p.set_defaults(run=run)


def run(args):
    from tse.quant import network, sweep

    grid = sweep.load_grid(args.grid)
    if args.out:
        from tse.ref_model.artifacts import claim_dir
        claim_dir(args.out, "network", legacy_names=("network.json", "network.csv"))
    tiles = [t.strip() for t in args.float_tiles.split(",") if t.strip()]

    def log(msg):
        if not args.json:
            print(f"tse network: {msg}", file=sys.stderr)

    with network.threads(1):
        rep = network.report(grid, engine=args.engine, tile=args.tile, float_tiles=tiles,
                             weights=args.weights or network.WEIGHTS, retrain=args.retrain,
                             quick=args.quick, progress=not args.json, log=log)
    if args.out:
        from tse.ref_model.artifacts import write_manifest
        rep["files"] = network.write_report(rep, args.out)
        write_manifest(args.out, {"kind": "network"},
                       {k: Path(v).name for k, v in rep["files"].items()})
    if args.json:
        print(json.dumps(rep, default=str))
    else:
        print(network.format_report(rep))
