"""`tse run`: the main job on a configuration (the README's first command runs it on the
built-in default): the quantized PyTorch reference, the golden vectors of the hw profile (the
numerics the RTL implements) and one summary, including how far the hw profile is from
quantized PyTorch."""
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
    p.add_argument("--frames", type=int, default=3, metavar="N",
                   help="synthetic input frames (default 3)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args):
    import torch

    from quant import reference
    from ref_model import kernels, vectors

    cfg = config_from_args(args)
    out = Path(args.out)
    ref = reference.build(cfg, frames=args.frames)
    reference.write(ref, out / "reference")
    x = kernels.nhwc(ref.codes["input"])
    result = vectors.build(cfg, ref.params, x, "hw")
    vs_torch = vectors.compare_with_reference(result, ref.codes)
    vectors.write(out / "vectors", cfg, ref.params, result, "hw",
                  {"versions": {"torch": torch.__version__}, "sources": ref.sources,
                   "vs_quantized_pytorch": vs_torch})
    summary = {"config": cfg.to_dict(),
               "reference": reference.summary(ref, out / "reference"),
               "vectors": {"out": str(out / "vectors"), "profile": "hw",
                           "hw_vs_quantized_pytorch": vs_torch},
               "buffer": {"strip_buffer_beats": cfg.full_throughput_depth,
                          "strip_buffer_bits": cfg.full_throughput_depth * cfg.lanes * 8,
                          "paper_minimum_bits": cfg.tile_rows * cfg.width * cfg.channels * 8,
                          "se_buffer_bits": cfg.height * cfg.width * cfg.channels * 8}}
    if args.json:
        print(json.dumps(summary))
        return 0
    print(reference.format_summary(summary["reference"]))
    print(f"golden vectors (hw profile) -> {out / 'vectors'}")
    for stage, d in vs_torch.items():
        print(f"  hw vs quantized PyTorch, {stage:7s}: {d['mismatches']} of {d['values']} codes "
              f"differ, largest {d['max_err_lsb']} LSB")
    b = summary["buffer"]
    print(f"strip buffer at full throughput: {b['strip_buffer_beats']} beats = "
          f"{b['strip_buffer_bits']} bits ({b['strip_buffer_bits'] / b['paper_minimum_bits']:.3f}"
          f" x the paper's minimum {b['paper_minimum_bits']}); plain SE: {b['se_buffer_bits']} bits")
    return 0
