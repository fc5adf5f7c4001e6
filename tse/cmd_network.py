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
    p.add_argument("--tile", default=None, metavar="TILE",
                   help="tile of the quantized network and the models (default 2xW, with "
                        "--model 7xW, clamped per block; HxW: SE)")
    p.add_argument("--float-tiles", default="1xW,2xW,4xW", metavar="LIST",
                   help="tiles replacing SE in the float network (default 1xW,2xW,4xW)")
    p.add_argument("--weights", metavar="FILE",
                   help="weight cache (default tse/quant/data/digits_se_cnn.pt; trained if absent)")
    p.add_argument("--retrain", action="store_true", help="train again and rewrite the cache")
    p.add_argument("--out", metavar="DIR", help="also write network.json and network.csv")
    p.add_argument("--json", action="store_true",
                   help="print the report as one JSON object (no progress bar)")
    p.add_argument("--model", metavar="FILE|NAME",
                   help="instead of the digits network: a whole PyTorch model (.py with "
                        "build_model() or torch.save'd) or a cached Fashion-MNIST net (senet, "
                        "efficientnet, mobilenetv3); its SE blocks through the unit's integer "
                        "model (docs/models.md)")
    p.add_argument("--images", metavar="X.npy", help="with --model: test images (default: "
                                                     "the Fashion-MNIST test file)")
    p.add_argument("--labels", metavar="Y.npy", help="with --model and --images: their labels")
    p.add_argument("--calibration", metavar="X.npy", help="with --model: calibration images "
                   "(default: 256 seeded Fashion-MNIST training images)")
    p.add_argument("--profile", default="hw", metavar="PROFILE",
                   help="with --model: the integer model's profile, hw or torch (default hw)")
    p.set_defaults(run=run)


def run_model(args):
    """`tse network --model`: top-1 with every SE block through the unit (tse.model_accuracy)."""
    import numpy as np

    from tse import model_accuracy
    from tse.model_vectors import CALIBRATION_CAP, load_images
    from tse.quant import fashion_mnist, zoo
    from tse.ref_model.errors import ConfigError, InputError

    if args.retrain or args.weights or args.grid or args.quick or args.out:
        raise ConfigError("model: --retrain, --weights, --grid, --quick and --out apply to the "
                          "digits network only; allowed with --model: --images, --labels, "
                          "--calibration, --tile, --engine, --profile, --json")
    if args.profile not in ("hw", "torch"):
        raise ConfigError(f"profile: {args.profile!r} is not allowed; allowed: hw, torch")
    if args.model in zoo.NETS:
        model, _ = zoo.load(args.model)
    else:
        from tse.quant.se_hooks import load_model
        model = load_model(args.model)
    if (args.images is None) != (args.labels is None):
        raise ConfigError("images: --images and --labels go together; allowed: both or neither "
                          "(neither: the Fashion-MNIST test file)")
    if args.images:
        x = load_images(args.images)
        try:
            y = np.load(args.labels, allow_pickle=False).astype(np.int64)
        except (OSError, ValueError, TypeError) as e:
            raise InputError(f"labels: cannot read {args.labels!r} ({e}); allowed: a .npy of "
                             "integer labels [N]") from None
        if y.shape != (len(x),):
            raise InputError(f"labels: shape {list(y.shape)} is not allowed; allowed: "
                             f"[{len(x)}] (one label per image)")
    else:
        x, y = fashion_mnist.load("test")
    calib = (load_images(args.calibration) if args.calibration
             else fashion_mnist.split(0, CALIBRATION_CAP, 0).x_train)
    log = None if args.json else (lambda m: print(f"tse network: {m}", file=sys.stderr))
    rep = model_accuracy.report(model, calib, x, y, tile=args.tile or "7xW",
                                profile=args.profile, engine=args.engine, log=log)
    rep["model"] = args.model
    print(json.dumps(rep) if args.json else model_accuracy.format_report(rep))
    return 0


def run(args):
    if args.model:
        return run_model(args)
    args.tile = args.tile or "2xW"
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
