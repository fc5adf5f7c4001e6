"""`tse config`: print the resolved configuration (TOML, or JSON with --json)."""
from __future__ import annotations

import json

from tse.ref_model.cli_args import add_config_arguments, config_from_args
from tse.ref_model.config import BLOCKS
from tse.ref_model.plan import EXCITE_KERNEL_TAPS


def register(sub):
    p = sub.add_parser("config", help="print the resolved configuration as TOML",
                       description=__doc__)
    add_config_arguments(p)
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(run=run)


def run(args):
    cfg = config_from_args(args, blocks=BLOCKS, excite_kernels=tuple(EXCITE_KERNEL_TAPS))
    if args.json:
        derived = {"hidden": cfg.hidden, "tile_rows": cfg.tile_rows, "tile_cols": cfg.tile_cols,
                   "tiles_y": cfg.tiles_y, "tiles_x": cfg.tiles_x, "tiling": cfg.tiling,
                   "beats_per_frame": cfg.beats_per_frame, "strip_beats": cfg.strip_beats,
                   "excite_latency_cycles": cfg.excite_latency_cycles,
                   "full_throughput_depth": cfg.full_throughput_depth}
        if cfg.block == "eca":
            derived["eca_taps"] = cfg.eca_taps
        print(json.dumps({"config": cfg.to_dict(), "derived": derived}))
    else:
        print(cfg.to_toml(), end="")
