"""Throughput of the golden-vector kernels against baselines run in the same process.

For each shape (H, W, C[, frames]) and implementation, million input elements per second:
median of repeats after a warm-up call. Baselines: `copy` (numpy copy of the same int8 tensor,
the memory bound) and `torch_quantized` (the eager quantized PyTorch block, engine fbgemm, one
thread). Targets are ratios within one run, never absolute times.

The other blocks' kernels (issue 18: tiled ECA, tiled SRM, TSE with the 3x1 excite, the
whole-frame numba kernels of tse.ref_model.attention_kernels on the seeded block's hw
parameters) have rows of their own on BLOCK_SHAPES, each against the same block's frame-level
numpy hw profile (attention_hw.eca_hw_stages / srm_hw_stages / excite3x1_hw_stages, the
kernels' definition) and copy: impls "<block>_numba_hw" and "<block>_numpy_hw".

Run: `tse bench [--json] [--repeats N] [--quick]` or `python -m tse.bench.bench_kernels`.
"""
from __future__ import annotations

import dataclasses
import statistics
import time

import numpy as np

SHAPES = (  # (H, W, C, frames)
    (56, 56, 64, 1),
    (14, 14, 256, 1),
    (112, 112, 32, 1),
    (1024, 2048, 16, 1),
    (28, 28, 128, 64),
)
QUICK_SHAPES = ((56, 56, 64, 1), (28, 28, 128, 4))
IMPLS = ("copy", "numba_hw", "numba_torch", "numpy", "torch_quantized")
NUMPY_PIECE_ELEMENTS = 1 << 20
"""Elements of one frame the numpy baseline runs on per call (whole strips)."""

BLOCKS = ("eca", "srm", "excite3x1")
"""The other blocks' kernels: attention_vectors.kind of their configurations."""
BLOCK_SHAPES = ((28, 28, 32, 1),)
QUICK_BLOCK_SHAPES = ((14, 14, 16, 1),)
BLOCK_IMPLS = ("copy",) + tuple(f"{b}_{i}" for b in BLOCKS for i in ("numba_hw", "numpy_hw"))

TARGETS = (
    # (impl, baseline, minimum ratio of melem_s, shapes it applies to or None for all)
    ("numba_hw", "copy", 0.10, None),
    ("numba_hw", "copy", 0.25, ((1024, 2048, 16, 1),)),
    ("numba_hw", "torch_quantized", 3.0, None),
    ("numba_torch", "torch_quantized", 1.5, None),
    *((f"{b}_numba_hw", f"{b}_numpy_hw", 20.0, None) for b in BLOCKS),
)


def shape_name(shape) -> str:
    h, w, c, n = shape
    return f"{n}x{h}x{w}x{c}" if n > 1 else f"{h}x{w}x{c}"


def measure(fn, elements: int, repeats: int) -> float:
    """Million elements per second: median over repeats after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return elements / statistics.median(times) / 1e6


def setup(shape, seed: int = 0):
    """The configuration, the calibrated block (tse.quant.reference.prepare: .model, .params) and
    input codes of a shape (7xW tiles, r=4, 8 lanes)."""
    from tse.quant import reference
    from tse.ref_model.config import TSEConfig

    h, w, c, n = shape
    cfg = TSEConfig(channels=c, height=h, width=w, tile=f"{min(7, h)}xW", reduction=4,
                    lanes=8, seed=seed)
    ref = reference.prepare(cfg, frames=1)
    ref.x = None        # the benchmark runs on random codes, not the float frame
    rng = np.random.default_rng(seed)
    x_nhwc = rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)
    return cfg, ref, x_nhwc


def impl_fn(impl: str, cfg, ref, x_nhwc, parallel: bool = False):
    """A zero-argument callable computing the whole block with one implementation."""
    if impl == "copy":
        return lambda: x_nhwc.copy()
    if impl == "torch_quantized":
        import torch
        from tse.quant.quantized_block import engine, quiet

        torch.set_num_threads(1)
        model = ref.model
        # The same codes, as the quantized tensor the block's first op sees (NCHW).
        s, zp = ref.params.scales["input"], ref.params.zero_points["input"]
        q = torch._make_per_tensor_quantized_tensor(
            torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))), s, zp)

        def run():
            with quiet(), engine("fbgemm"), torch.no_grad():
                p = model.squeeze(q)
                g = model.sigmoid(model.conv2(model.relu(model.conv1(p))))
                from tse.quant.float_block import broadcast_gate
                wide = broadcast_gate(g, model.kernel, cfg.height, cfg.width)
                return model.mul.mul(q, wide)
        return run
    from tse.ref_model import kernels, numerics, numpy_model

    ip = numerics.derive(ref.params, cfg)
    if impl in ("numba_hw", "numba_torch"):
        # Derived, checked and compiled once, as for a stream of frames; each call still
        # checks its input and allocates every stage array.
        kernel = kernels.Kernel(cfg, ip, impl.removeprefix("numba_"), parallel=parallel)
        return lambda: kernel(x_nhwc)
    if impl == "numpy":
        # Whole strips at a time, as the block allows: the numpy model's whole-frame int64
        # temporaries (~46 B per element) would dominate the peak on 1024x2048 frames.
        parts = []
        for rows in _strip_pieces(cfg, NUMPY_PIECE_ELEMENTS):
            part = dataclasses.replace(cfg, height=rows.stop - rows.start)
            parts.append((part, numerics.derive(ref.params, part),
                          np.ascontiguousarray(x_nhwc[:, rows])))
        return lambda: [numpy_model.run(c, p, x) for c, p, x in parts]
    raise ValueError(f"unknown impl {impl!r}")


def block_setup(shape, block: str, seed: int = 0):
    """The configuration, the seeded block's quantized parameters and hw parameters (as
    `tse vectors --block` derives them: tse.quant.attention_reference,
    attention_vectors.hw_params) and input codes of a shape (7xW tiles, 8 lanes; the 3x1
    excite: hidden C/4)."""
    from tse.quant import attention_reference
    from tse.ref_model import attention_vectors
    from tse.ref_model.config import TSEConfig

    h, w, c, n = shape
    kind = {"excite_kernel": "3x1"} if block == "excite3x1" else {"block": block}
    cfg = TSEConfig(channels=c, height=h, width=w, tile=f"{min(7, h)}xW", reduction=4,
                    lanes=8, seed=seed, **kind)
    build = (attention_reference.build_excite3x1 if block == "excite3x1"
             else attention_reference.build)
    quant = build(cfg, frames=1).quant
    rng = np.random.default_rng(seed)
    x_nhwc = rng.integers(0, 256, size=(n, h, w, c), dtype=np.uint8)
    return cfg, quant, attention_vectors.hw_params(cfg, quant), x_nhwc


def block_impl_fn(impl: str, cfg, quant, hw, x_nhwc):
    """A zero-argument callable computing the whole block with one of BLOCK_IMPLS."""
    from tse.ref_model import attention_hw, attention_vectors

    if impl == "copy":
        return lambda: x_nhwc.copy()
    block, _, kind = impl.partition("_")
    if kind == "numba_hw":           # the vectors' generator, compiled once
        frames = attention_vectors.FRAMES[block]
        return lambda: frames(cfg, hw, x_nhwc)
    if kind == "numpy_hw":           # the frame-level profile, NCHW (transposed once)
        x = np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
        tile = (cfg.tile_rows, cfg.tile_cols)
        if block == "excite3x1":
            return lambda: attention_hw.excite3x1_hw_stages(x, cfg, quant)
        profile = {"eca": attention_hw.eca_hw_stages, "srm": attention_hw.srm_hw_stages}[block]
        return lambda: profile(x, tile, hw)
    raise ValueError(f"unknown impl {impl!r}")


def _strip_pieces(cfg, budget: int) -> list[slice]:
    """Row slices of whole strips (tile_rows rows; the frame's short last strip last),
    about budget elements of one frame each."""
    th = cfg.tile_rows
    rows = max(1, budget // (th * cfg.width * cfg.channels)) * th
    return [slice(r, min(cfg.height, r + rows)) for r in range(0, cfg.height, rows)]


def run(shapes=SHAPES, impls=IMPLS, repeats: int = 5, progress=None, parallel: bool = False,
        block_shapes=BLOCK_SHAPES, block_impls=BLOCK_IMPLS):
    """Yield one result dict per (shape, impl): SE's impls on shapes, then the other blocks'
    on block_shapes (copy once per shape)."""
    done = set()
    for shape in shapes:
        cfg, ref, x = setup(shape)
        for impl in impls:
            if progress:
                progress(f"{shape_name(shape)} {impl}")
            # Fewer repeats for the slow reference on the biggest frame.
            reps = repeats if x.size < 10**7 or impl not in ("numpy", "torch_quantized") else 2
            melem_s = measure(impl_fn(impl, cfg, ref, x, parallel), x.size, reps)
            done.add((shape_name(shape), impl))
            yield {"shape": shape_name(shape), "impl": impl, "melem_s": round(melem_s, 3)}
    for shape in block_shapes:
        for block in BLOCKS:
            chosen = [i for i in block_impls if i.startswith(f"{block}_")
                      or (i == "copy" and (shape_name(shape), i) not in done)]
            if not chosen:
                continue
            cfg, quant, hw, x = block_setup(shape, block)
            for impl in chosen:
                if progress:
                    progress(f"{shape_name(shape)} {impl}")
                melem_s = measure(block_impl_fn(impl, cfg, quant, hw, x), x.size, repeats)
                done.add((shape_name(shape), impl))
                yield {"shape": shape_name(shape), "impl": impl, "melem_s": round(melem_s, 3)}


def check_targets(results: list[dict]) -> list[dict]:
    """Each target as a ratio measured in this run, with whether it is met."""
    by = {(r["shape"], r["impl"]): r["melem_s"] for r in results}
    shapes = sorted({r["shape"] for r in results}, key=[r["shape"] for r in results].index)
    out = []
    for impl, base, minimum, only in TARGETS:
        names = [shape_name(s) for s in only] if only else shapes
        for name in names:
            if (name, impl) in by and (name, base) in by:
                ratio = by[(name, impl)] / by[(name, base)]
                out.append({"shape": name, "impl": impl, "baseline": base,
                            "ratio": round(ratio, 3), "target": minimum, "met": ratio >= minimum})
    return out


if __name__ == "__main__":
    import json
    import sys

    results = []
    for r in run(progress=lambda m: print(f"  {m}", file=sys.stderr)):
        results.append(r)
        print(json.dumps(r), flush=True)
    for t in check_targets(results):
        print(json.dumps({"target": t}))
