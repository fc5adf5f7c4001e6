"""`tse reference`: the quantized PyTorch reference of a configuration."""
from __future__ import annotations

import json

from tse.ref_model.cli_args import add_config_arguments, config_from_args
from tse.ref_model.errors import InputError


def register(sub):
    p = sub.add_parser(
        "reference", help="write the quantized PyTorch reference (every stage) as .npy + manifest",
        description="Quantize the TSE block of a configuration in eager-mode PyTorch on the "
                    "configured engine and write the input, every intermediate's codes, the "
                    "output and the parameters as .npy files with a manifest.json (format in "
                    "docs/formats.md).")
    add_config_arguments(p)
    add_source_arguments(p)
    p.add_argument("--json", action="store_true", help="print a one-line JSON summary")
    p.set_defaults(run=run)


def add_source_arguments(p):
    """--out, --frames and where weights, calibration data and input come from."""
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (replaced whole)")
    p.add_argument("--frames", type=int, default=1, metavar="N",
                   help="synthetic input frames (default 1; ignored with --input)")
    p.add_argument("--weights", metavar="FILE",
                   help="state_dict of a trained SE module (conv1/conv2, fc1/fc2 or "
                        "conv_reduce/conv_expand naming); default: seeded weights")
    p.add_argument("--calibration", metavar="FILE",
                   help="float activations .npy [N,C,H,W] to calibrate on; default: synthetic")
    p.add_argument("--input", metavar="FILE",
                   help="float activations .npy [N,C,H,W] to run; default: synthetic frames")
    p.add_argument("--allow-bad-calibration", action="store_true",
                   help="write the outputs even when the calibration clips more than 5 %% of "
                        "the input or spreads it over fewer than 4 codes (refused otherwise)")


def build_reference(args):
    """The configuration and its calibrated quantized PyTorch block with the input frames
    (tse.quant.reference.prepare; run piece by piece by the callers), from the common flags."""
    cfg = config_from_args(args)
    if args.frames < 1:
        raise InputError(f"frames: {args.frames} is not allowed; allowed: a positive integer")
    from tse.quant import reference

    from . import preflight
    preflight.replaceable_out(args.out)
    preflight.memory(cfg, args.frames, f"tse {args.command}", args.calibration, args.input)
    prepared = reference.prepare(cfg, args.frames, args.weights, args.calibration, args.input)
    preflight.calibration(prepared, args.allow_bad_calibration)
    return cfg, prepared


def run(args):
    from tse.quant import reference

    cfg, prepared = build_reference(args)
    summary = reference.write_streaming(prepared, args.out)
    print(json.dumps(summary) if args.json else reference.format_summary(summary))
