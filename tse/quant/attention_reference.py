"""The quantized PyTorch reference of a configuration's ECA or SRM block (issue 18): seeded
float block, the synthetic calibration and input of tse.quant.calibration (as for SE), eager
post-training quantization on cfg.engine, every stage's codes and the block's parameters.

SE has tse.quant.reference (weights, calibration and input files, streaming stages); this
is the small in-memory counterpart for the other blocks, seeded weights only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from tse.ref_model.config import TSEConfig

from . import calibration
from .attention_blocks import TiledECA, TiledSRM
from .attention_quantized import (extract_eca_params, extract_srm_params, quantize_attention,
                                  run_attention_stages)


@dataclass
class AttentionReference:
    cfg: TSEConfig
    quant: object           # EcaQuantParams or SrmQuantParams
    codes: dict             # role -> NCHW codes (uint8), plus output_float
    sources: dict


def float_block_for(cfg: TSEConfig):
    """The seeded float block of cfg (PyTorch's default initialisation under cfg.seed; SRM's
    batch norm with seeded running statistics, so it is not the identity)."""
    tile = (cfg.tile_rows, cfg.tile_cols)
    gen = torch.manual_seed(cfg.seed)
    if cfg.block == "eca":
        return TiledECA(cfg.channels, tile, cfg.eca_taps).eval()
    block = TiledSRM(cfg.channels, tile).eval()
    with torch.no_grad():
        block.bn.running_mean.copy_(torch.randn(cfg.channels, generator=gen) * 0.1)
        block.bn.running_var.copy_(torch.rand(cfg.channels, generator=gen) + 0.5)
        block.bn.bias.copy_(torch.randn(cfg.channels, generator=gen) * 0.5)
    return block


def build(cfg: TSEConfig, frames: int = 1) -> AttentionReference:
    if cfg.block not in ("eca", "srm"):
        from tse.ref_model.errors import ConfigError
        raise ConfigError(f"block: {cfg.block!r} is not allowed here; allowed: eca, srm "
                          "(SE: tse.quant.reference)")
    calib, calib_source = calibration.synthetic_calibration(cfg, seed=cfg.seed + 1)
    model = quantize_attention(float_block_for(cfg), calib, cfg.engine)
    x = calibration.synthetic_activations(cfg, frames, seed=cfg.seed + 2)
    extract = extract_eca_params if cfg.block == "eca" else extract_srm_params
    return AttentionReference(cfg, extract(model), run_attention_stages(model, x),
                              {"weights": f"seeded (seed {cfg.seed})",
                               "calibration": calib_source,
                               "input": f"synthetic, {frames} frames (seed {cfg.seed + 2})"})
