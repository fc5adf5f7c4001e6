"""The sweep's measurements for tiled ECA and SRM and for TSE with the paper's 3x1 excite
(issue 18): what tse.quant.sweep_eval does for SE, on the other blocks' models, so `tse sweep
--block eca|srm` and `tse sweep --excite-kernel 3x1` run the same machinery (grid, resume log,
executors, Pareto front, outputs) over their hw profile.

Owns build_context (the seeded block quantized by tse.quant.attention_reference, its torch
profile from tse.ref_model.attention_numerics, the float block's output) and evaluate (the hw
profile through tse.ref_model.attention_kernels against the torch profile). A point's cost:
ECA's and SRM's an estimate (tse.quant.sweep_cost.attention_cost), the 3x1 excite's its RTL
unit plan's (Excite3x1UnitPlan).
"""
from __future__ import annotations

import time

import numpy as np

from tse.ref_model.config import TSEConfig

from .sweep_cost import hardware_cost
from .sweep_eval import Context, float_metrics, output_row
from .sweep_grid import Point, grid_kind

STAGES = {"eca": ("pooled", "excite", "gate"), "srm": ("pooled", "std", "excite", "gate"),
          "excite3x1": ("pooled", "hidden", "excite", "gate")}
"""The stages compared per block (the *_mismatch_rate columns)."""
COST_BASIS = ("estimate from the hw profile's widths, not an RTL unit plan's: "
              "tse.quant.sweep_cost.attention_cost")
COST_BASIS_3X1 = "the RTL unit plan's (Excite3x1UnitPlan: buffers, ROMs, multipliers)"


def _nhwc(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a, 1, -1))


def _torch_profile(cfg: TSEConfig, quant, x_nchw: np.ndarray) -> dict:
    from tse.ref_model import attention_numerics as an
    tile = (cfg.tile_rows, cfg.tile_cols)
    kind = grid_kind(cfg)
    if kind == "excite3x1":
        return an.excite3x1_stages(x_nchw, tile, quant)
    if kind == "eca":
        return an.eca_stages(x_nchw, tile, an.prepare_eca(quant))
    return an.srm_stages(x_nchw, tile, an.prepare_srm(quant))


def hw_stages(cfg: TSEConfig, quant, x_nhwc: np.ndarray) -> dict:
    """Every stage of the block's hw profile for cfg's widths (attention_vectors.build: the
    kernels the vectors come from)."""
    from tse.ref_model import attention_vectors
    return attention_vectors.build(cfg, quant, x_nhwc)


def build_context(cfg: TSEConfig, frames: int) -> Context:
    """Quantize cfg's seeded ECA or SRM block (attention_reference.build), run its torch
    profile and its float block once; baseline: the torch profile against quantized PyTorch
    (codes) and against the float block."""
    import torch

    from . import attention_reference, calibration
    kind = grid_kind(cfg)
    three = kind == "excite3x1"
    ref = (attention_reference.build_excite3x1 if three else attention_reference.build)(
        cfg, frames=frames)
    x = ref.codes["input"]
    torch_out = _torch_profile(cfg, ref.quant, x)
    stages = {s: _nhwc(torch_out[s]) for s in STAGES[kind] + ("output",)}
    # the same synthetic activations attention_reference.build quantized (same seed)
    xf = calibration.synthetic_activations(cfg, frames, seed=cfg.seed + 2)
    with torch.no_grad():
        y = (attention_reference.float_excite3x1_for(cfg) if three
             else attention_reference.float_block_for(cfg))(xf).numpy()
    scale, zp = ((ref.quant.out_scale, ref.quant.out_zp) if three else
                 (ref.quant.scales["output"], ref.quant.zero_points["output"]))
    ctx = Context(cfg, frames, ref.quant, _nhwc(x), stages, _nhwc(y.astype(np.float32)),
                  float(scale), int(zp))
    sq, cos = float_metrics(ctx, stages["output"])
    ctx.baseline = {
        "torch_profile_vs_pytorch_mismatches": int(
            (_nhwc(ref.codes["output"]) != stages["output"]).sum()),
        "torch_profile_sqnr_db": sq, "torch_profile_cosine": cos,
        "output_values": int(stages["output"].size), "block": kind,
        "cost_basis": COST_BASIS_3X1 if three else COST_BASIS}
    return ctx


def evaluate(ctx: Context, point: Point) -> dict:
    """One point's row, with the columns of tse.quant.sweep_eval.evaluate (stage mismatch
    rates of the block's stages; no saturation: these blocks' registers never saturate)."""
    t0 = time.perf_counter()
    cfg = ctx.cfg.replace(hw=point.hw)
    out = hw_stages(cfg, ctx.params, ctx.x)
    row = output_row(ctx, point, point.hw, out, STAGES[grid_kind(cfg)])
    row.update(hardware_cost(cfg, ctx.params))
    row["yosys_cells"] = ""
    row["seconds"] = round(time.perf_counter() - t0, 4)
    return row
