"""The sweep's measurements of one point: the hw profile (bit-accurate) against the torch
profile (exact-match rate, error in output LSB, per-stage mismatch rates), against the float
block (SQNR, cosine), its saturation counts and its hardware cost (tse.quant.sweep_cost).

Owns Context (what every point is measured against; numpy only, so it ships to worker
processes and Dask workers), build_context and evaluate.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from tse.ref_model.config import TSEConfig
from tse.ref_model.errors import ConfigError

from .sweep_cost import hardware_cost
from .sweep_grid import STAGE_NAMES, Point



@dataclass
class Context:
    """What every point is measured against (numpy only: ships to workers): the block's
    parameters, the input codes (channels last), the torch profile's stages, the float
    block's output (channels last) and the output's quantization."""

    cfg: TSEConfig
    frames: int
    params: object                 # tse.ref_model.params.QuantParams
    x: np.ndarray                  # uint8 [N, H, W, C]
    torch_stages: dict             # stage -> array (tse.ref_model.kernels.run, "torch")
    float_output: np.ndarray       # float32 [N, H, W, C]
    out_scale: float
    out_zero_point: int
    baseline: dict = field(default_factory=dict)


def build_context(cfg: TSEConfig, frames: int) -> Context:
    """Quantize the block of cfg (tse.quant.reference.build: seeded weights, synthetic frames)
    and run the torch profile once; baseline: the torch profile against quantized PyTorch
    (codes) and against the float block."""
    from tse.ref_model import kernels

    from . import reference
    ref = reference.build(cfg, frames=frames)
    x = kernels.nhwc(ref.codes["input"])
    torch_out = kernels.run(cfg, ref.params, x, "torch")
    stages = {s: torch_out[s] for s in STAGE_NAMES + ("output",)}
    ctx = Context(cfg, frames, ref.params, x, stages,
                  np.ascontiguousarray(kernels.nhwc(ref.float_output), np.float32),
                  float(ref.params.scales["output"]), int(ref.params.zero_points["output"]))
    pytorch_out = kernels.nhwc(ref.codes["output"])
    sq, cos = float_metrics(ctx, stages["output"])
    ctx.baseline = {
        "torch_profile_vs_pytorch_mismatches": int((pytorch_out != stages["output"]).sum()),
        "torch_profile_sqnr_db": sq, "torch_profile_cosine": cos,
        "output_values": int(stages["output"].size)}
    return ctx


def float_metrics(ctx: Context, codes: np.ndarray) -> tuple[float, float]:
    """SQNR (dB, capped at 300) and cosine of output codes, dequantized, against the float
    block's output."""
    y = (codes.astype(np.float64) - ctx.out_zero_point) * ctx.out_scale
    f = ctx.float_output.astype(np.float64)
    noise = float(((y - f) ** 2).sum())
    signal = float((f ** 2).sum())
    sqnr = 300.0 if noise == 0 else min(300.0, 10 * math.log10(max(signal, 1e-300) / noise))
    denom = math.sqrt(float((y ** 2).sum()) * signal)
    cos = float((y * f).sum()) / denom if denom > 0 else 1.0
    return sqnr, cos


def output_row(ctx: Context, point: Point, hw, out: dict, stages) -> dict:
    """A point's row from the stage codes `out` of a run with `hw`: the output's match
    against quantized PyTorch (exact-match share, mismatches, largest and mean error in
    LSB, SQNR and cosine against the float block) and each of `stages`' mismatch rate."""
    t_out = ctx.torch_stages["output"]
    d = np.abs(out["output"].astype(np.int16) - t_out.astype(np.int16))
    mism = int(np.count_nonzero(d))
    sqnr, cos = float_metrics(ctx, out["output"])
    row = {"id": point.id, "label": point.label, "axis": point.axis,
           "value": point.value if point.value is not None else ""}
    row.update(hw.to_dict())
    row.update({"exact_match": 1.0 - mism / d.size, "mismatches": mism,
                "max_abs_err_lsb": int(d.max()), "mean_abs_err_lsb": float(d.mean()),
                "sqnr_db": sqnr, "cosine": cos})
    for s in stages:
        a, b = out[s], ctx.torch_stages[s]
        row[f"{s}_mismatch_rate"] = float(np.count_nonzero(a != b) / a.size)
    return row


def evaluate(ctx: Context, point: Point) -> dict:
    """Every measurement of one point (one row of the sweep's tables)."""
    from tse.ref_model import kernels, numerics

    t0 = time.perf_counter()
    hw = point.hw
    cfg = ctx.cfg.replace(hw=hw)
    try:
        ip = numerics.derive(ctx.params, cfg)
    except ConfigError:
        if hw.saturate:
            raise
        hw = hw.replace(saturate=True)          # a bias that does not fit: saturate
        cfg = ctx.cfg.replace(hw=hw)
        ip = numerics.derive(ctx.params, cfg)
    out = kernels.run(cfg, ip, ctx.x, "hw")
    row = output_row(ctx, point, hw, out, STAGE_NAMES)
    for s, n in out["saturated"].items():
        row[f"saturated_{s}"] = int(n)
    row.update(hardware_cost(cfg, ip))
    row["yosys_cells"] = ""
    row["seconds"] = round(time.perf_counter() - t0, 4)
    return row
