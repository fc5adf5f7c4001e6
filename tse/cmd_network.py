"""`tse network`: top-1 accuracy of a small trained SE network through every model.

A small CNN with three SE blocks, trained (seeded, on the CPU) on scikit-learn's digits and
cached in tse/quant/data/digits_se_cnn.pt, evaluated on its test split as: float SE; float with
every SE replaced by a row-strip TSE without retraining, for several tile heights; quantized
PyTorch; the bit-accurate torch profile; and the hw profile at every point of a width grid
(every SE block of the network replaced by the model). --block eca|srm: the same network
with ECA or SRM blocks (trained once, cached beside it), the same rows, the hw points over that
block's width grid. docs/sweeps.md has the tables.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path


def register(sub):
    p = sub.add_parser("network", help="accuracy of a trained SE network through the models",
                       description=__doc__)
    p.add_argument("--block", default="se", metavar="BLOCK",
                   help="the digits network's attention block: se (default), eca or srm "
                        "(each trained once and cached; the same rows, the hw points over "
                        "that block's width grid)")
    p.add_argument("--excite-kernel", default="1x1", metavar="KERNEL",
                   help="with --block se: 3x1 for the paper's 3x1 excite (the network trained "
                        "with 1xW tiles and that excite, cached; default tile 1xW); default 1x1")
    p.add_argument("--grid", metavar="FILE",
                   help="width grid TOML for the hw points (default: the sweep's default grid "
                        "of --block)")
    p.add_argument("--quick", action="store_true",
                   help="hw profile at the base and widest points only")
    p.add_argument("--engine", default="fbgemm", metavar="ENGINE",
                   help="quantized PyTorch engine: fbgemm or qnnpack (default fbgemm)")
    p.add_argument("--tile", default=None, metavar="TILE",
                   help="tile of the quantized network and the models (default 2xW, with "
                        "--model 7xW, clamped per block; HxW: SE)")
    p.add_argument("--float-tiles", default=None, metavar="LIST",
                   help="tiles replacing SE in the float network (default 1xW,2xW,4xW; with "
                        "--model the tiles of the table, 1xW,3xW,7xW,HxW)")
    p.add_argument("--weights", metavar="FILE",
                   help="weight cache (default tse/quant/data/digits_se_cnn.pt; trained if absent)")
    p.add_argument("--retrain", action="store_true", help="train again and rewrite the cache")
    p.add_argument("--out", metavar="DIR", help="also write network.json and network.csv")
    p.add_argument("--json", action="store_true",
                   help="print the report as one JSON object (no progress bar)")
    p.add_argument("--model", metavar="FILE|NAME", action="append",
                   help="instead of the digits network: a whole model (.py with build_model(), "
                        "torch.save'd, or .onnx) or a cached Fashion-MNIST net (senet, "
                        "efficientnet, mobilenetv3); its SE blocks through the unit's models "
                        "(docs/models.md); repeat for several")
    p.add_argument("--onnx", action="store_true",
                   help="with --model NAME: the cached net's ONNX export instead of its .pt")
    p.add_argument("--images", metavar="X.npy", help="with --model: test images (default: "
                                                     "the Fashion-MNIST test file)")
    p.add_argument("--labels", metavar="Y.npy", help="with --model and --images: their labels")
    p.add_argument("--limit", type=int, metavar="N",
                   help="with --model: the first N test images only")
    p.add_argument("--calibration", metavar="X.npy", help="with --model: calibration images "
                   "(default: 256 seeded Fashion-MNIST training images)")
    p.add_argument("--profile", default="hw", metavar="PROFILE",
                   help="with --model: the profile of the 'integer' figure, hw or torch "
                        "(default hw; the table has both)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="with --model: top-1 against the tile, a line per net and variant")
    p.add_argument("--markdown", action="store_true",
                   help="with --model: print one markdown table of every net (README's)")
    p.set_defaults(run=run)


def model_file(name: str, onnx: bool) -> str:
    """A --model value as the model file it names (a zoo net: its cached .pt or .onnx)."""
    from tse.quant import zoo
    from tse.ref_model.errors import ConfigError

    if name in zoo.NETS:
        return str(zoo.onnx_path(name)) if onnx else name
    if onnx:
        raise ConfigError(f"onnx: --onnx applies to the cached nets only ({', '.join(zoo.NETS)})"
                          f"; {name!r} is a file: give the .onnx file itself")
    return name


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
                          "--limit, --calibration, --tile, --float-tiles, --engine, --profile, "
                          "--onnx, --plot, --markdown, --json")
    if args.profile not in ("hw", "torch"):
        raise ConfigError(f"profile: {args.profile!r} is not allowed; allowed: hw, torch")
    if args.engine not in ("fbgemm", "qnnpack"):
        raise ConfigError(f"engine: {args.engine!r} is not allowed; allowed: fbgemm, qnnpack")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"limit: {args.limit} is not allowed; allowed: a positive integer")
    if args.plot and not args.plot.endswith(".png"):
        raise ConfigError(f"plot: {args.plot!r} is not allowed; allowed: a file name ending "
                          "in .png")
    files = [model_file(m, args.onnx) for m in args.model]
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
    x, y = x[:args.limit], y[:args.limit]
    calib = (load_images(args.calibration) if args.calibration
             else fashion_mnist.split(0, CALIBRATION_CAP, 0).x_train)
    tiles = [t.strip() for t in (args.float_tiles or "").split(",") if t.strip()] or list(
        model_accuracy.MODEL_FLOAT_TILES)
    log = None if args.json else (lambda m: print(f"tse network: {m}", file=sys.stderr))
    reports = {}
    for name, f in zip(args.model, files):
        if log:
            log(f"{name}: {f if f != name else zoo.weights_path(name)}")
        model = zoo.load(f)[0] if f in zoo.NETS else f
        rep = model_accuracy.report(model, calib, x, y, tile=args.tile or "7xW",
                                    profile=args.profile, engine=args.engine, log=log,
                                    float_tiles=tiles, progress=not args.json)
        rep["model"] = f
        reports[name] = rep
    if args.plot:
        from tse.quant.plots import accuracy_vs_tile
        accuracy_vs_tile(reports, args.plot)
    if args.json:
        one = len(reports) == 1
        print(json.dumps(next(iter(reports.values())) if one else {"models": reports}))
    elif args.markdown:
        print(model_accuracy.format_markdown(reports))
    else:
        print("\n\n".join(f"{n}:\n{model_accuracy.format_report(r)}"
                          for n, r in reports.items()))
    return 0


def run(args):
    from tse.ref_model.errors import ConfigError

    if args.block not in ("se", "eca", "srm"):
        raise ConfigError(f"block: {args.block!r} is not allowed; allowed: se, eca, srm")
    if args.model:
        if args.excite_kernel != "1x1":
            raise ConfigError("excite-kernel: --excite-kernel applies to the digits network; "
                              "allowed with --model: 1x1 (the model's own SE blocks)")
        if args.block != "se":
            raise ConfigError(f"block: --block {args.block} applies to the digits network; "
                              "allowed with --model: se (the model's own SE blocks)")
        return run_model(args)
    if args.excite_kernel not in ("1x1", "3x1"):
        raise ConfigError(f"excite-kernel: {args.excite_kernel!r} is not allowed; allowed: "
                          "1x1, 3x1")
    if args.excite_kernel == "3x1" and args.block != "se":
        raise ConfigError(f"excite-kernel: 3x1 applies to block se; allowed with --block "
                          f"{args.block}: 1x1")
    three = args.excite_kernel == "3x1"
    args.tile = args.tile or ("1xW" if three else "2xW")
    from tse.quant import network, network_attention, sweep

    grid = sweep.load_grid(args.grid, block="excite3x1" if three else args.block)
    if args.out:
        from tse.ref_model.artifacts import claim_dir
        claim_dir(args.out, "network", legacy_names=("network.json", "network.csv"))
    tiles = [t.strip() for t in (args.float_tiles or "1xW,2xW,4xW").split(",") if t.strip()]

    def log(msg):
        if not args.json:
            print(f"tse network: {msg}", file=sys.stderr)

    if args.block != "se" or three:
        with network.threads(1):
            rep = network_attention.report("se3x1" if three else args.block, grid,
                                           engine=args.engine, tile=args.tile,
                                           float_tiles=tiles, weights=args.weights,
                                           retrain=args.retrain, quick=args.quick,
                                           progress=not args.json, log=log)
        return _emit(args, rep)
    with network.threads(1):
        rep = network.report(grid, engine=args.engine, tile=args.tile, float_tiles=tiles,
                             weights=args.weights or network.WEIGHTS, retrain=args.retrain,
                             quick=args.quick, progress=not args.json, log=log)
    return _emit(args, rep)


def _emit(args, rep):
    from tse.quant import network
    if args.out:
        from tse.ref_model.artifacts import write_manifest
        rep["files"] = network.write_report(rep, args.out)
        write_manifest(args.out, {"kind": "network"},
                       {k: Path(v).name for k, v in rep["files"].items()})
    if args.json:
        print(json.dumps(rep, default=str))
    else:
        print(network.format_report(rep))
    return 0
