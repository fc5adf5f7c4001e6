"""`tse bench`: throughput of the golden-vector kernels against baselines in the same run.

One JSON object per line with --json: {"shape", "impl", "melem_s"} per shape and
implementation (million input elements per second, median of repeats after a warm-up), then
one {"target": ...} line per speed target with the ratio measured in this run and whether it
is met. Kernels run serially unless --parallel (a busy second core makes parallel numba slow).

The other blocks' kernels (tiled ECA, tiled SRM, the 3x1 excite) follow in rows of their own
("<block>_numba_hw" against the same block's frame-level numpy hw profile "<block>_numpy_hw"
and copy) on 28x28x32 (--quick: 14x14x16; --block-shape chooses others; with --shape and no
--block-shape, SE's rows only).

--memory instead runs `tse vectors`, `tse reference` and `tse bench` on the paper's 1024x2048
frames, one subprocess at a time, and reports each one's peak RSS and bytes per input element
against the memory targets (tse/bench/bench_memory.py; --shape chooses other frames).
"""
from __future__ import annotations

import json
import sys


def register(sub):
    p = sub.add_parser("bench", help="kernel throughput against copy and quantized PyTorch",
                       description=__doc__)
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--repeats", type=int, default=5, metavar="N", help="timed repeats (default 5)")
    p.add_argument("--quick", action="store_true", help="two small shapes only")
    p.add_argument("--parallel", action="store_true", help="parallel numba kernels")
    p.add_argument("--shape", action="append", metavar="HxWxC",
                   help="frames to measure instead of the default shapes (repeatable)")
    p.add_argument("--block-shape", action="append", metavar="HxWxC",
                   help="frames for the ECA, SRM and 3x1-excite rows instead of the default "
                        "(repeatable; their numpy baselines take ~0.1 s per 25k elements)")
    p.add_argument("--memory", action="store_true",
                   help="peak memory of tse vectors/reference/bench per shape (subprocesses)")
    p.set_defaults(run=run)


def run(args):
    import os

    os.environ.setdefault("NUMBA_NUM_THREADS", "1" if not args.parallel else "2")
    from tse.bench import bench_kernels as bk
    from tse.ref_model.errors import InputError

    if args.repeats < 1:
        raise InputError(f"repeats: {args.repeats} is not allowed; allowed: a positive integer")
    chosen = [parse_shape(s) for s in args.shape or ()]
    if args.memory:
        return run_memory(args, chosen)
    shapes = [s + (1,) for s in chosen] or (bk.QUICK_SHAPES if args.quick else bk.SHAPES)
    block_shapes = [parse_shape(s) + (1,) for s in args.block_shape or ()]
    if not block_shapes and not chosen:
        block_shapes = bk.QUICK_BLOCK_SHAPES if args.quick else bk.BLOCK_SHAPES
    results = []
    progress = (lambda m: print(f"  measuring {m}", file=sys.stderr, flush=True))
    for r in bk.run(shapes, repeats=args.repeats, progress=progress, parallel=args.parallel,
                    block_shapes=block_shapes):
        results.append(r)
        if args.json:
            print(json.dumps(r), flush=True)
    targets = bk.check_targets(results)
    if args.json:
        for t in targets:
            print(json.dumps({"target": t}))
        return 0
    by = {(r["shape"], r["impl"]): r["melem_s"] for r in results}
    for group in (bk.IMPLS, bk.BLOCK_IMPLS):     # SE's table, then the other blocks'
        rows = [r for r in results if r["impl"] in group and r["impl"] != "copy"]
        shapes = list(dict.fromkeys(r["shape"] for r in rows))
        impls = [i for i in group if any((s, i) in by for s in shapes)]
        if not shapes:
            continue
        width = max(16, *map(len, impls))
        print(f"{'shape':>16} " + " ".join(f"{i:>{width}}" for i in impls)
              + "   (M input elements/s)")
        for shape in shapes:
            print(f"{shape:>16} " + " ".join(f"{by[(shape, i)]:{width}.1f}" if (shape, i) in by
                                             else f"{'-':>{width}}" for i in impls))
    for t in targets:
        print(f"  {t['impl']} / {t['baseline']} on {t['shape']}: {t['ratio']:.2f} "
              f"(target >= {t['target']}) {'met' if t['met'] else 'NOT MET'}")
    return 0


def parse_shape(text: str) -> tuple[int, int, int]:
    """"HxWxC" as (H, W, C), or an InputError naming the value."""
    from tse.ref_model.errors import InputError

    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise InputError(f"shape: {text!r} is not allowed; allowed: HxWxC with positive "
                         "integers, e.g. 1024x2048x16")
    return tuple(int(p) for p in parts)


def run_memory(args, shapes) -> int:
    from tse.bench import bench_memory as bm

    progress = (lambda m: print(f"  measuring {m}", file=sys.stderr, flush=True))
    results = []
    for r in bm.run(tuple(shapes) or bm.SHAPES, progress=progress):
        results.append(r)
        if args.json:
            print(json.dumps(r), flush=True)
    if not args.json:
        print(bm.table(results))
    return 0 if all(r["exit_status"] == 0 for r in results) else 1
