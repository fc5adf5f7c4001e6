"""`tse run`: the main job on a configuration (the README's first command runs it on the
built-in default). Today: the quantized PyTorch reference and its summary."""
from __future__ import annotations

import json
from pathlib import Path

from ref_model.cli_args import add_config_arguments, config_from_args


def register(sub):
    p = sub.add_parser("run", help="the main job: the whole chain on a configuration",
                       description=__doc__)
    add_config_arguments(p)
    p.add_argument("--out", default="out/default", metavar="DIR",
                   help="output directory (default out/default)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args):
    cfg = config_from_args(args)
    from quant import reference

    out = Path(args.out)
    ref = reference.build(cfg)
    reference.write(ref, out / "reference")
    summary = {"reference": reference.summary(ref, out / "reference")}
    if args.json:
        print(json.dumps(summary))
    else:
        print(reference.format_summary(summary["reference"]))
