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


# ---- TSE with the paper's 3x1 excite (block "se", excite_kernel "3x1") ----------------------

def float_excite3x1_for(cfg: TSEConfig):
    """The seeded float TSE block with the 3x1 excite (ReLU, sigmoid): SE's seeded scheme
    (quantized_block.seeded_weights: excite pre-activations over about [-4, 4]) with each
    layer's fan-in taken over its three taps."""
    from tse.ref_model.errors import ConfigError

    from .float_block import TSE

    if cfg.hidden_activation != "relu" or cfg.gate != "sigmoid":
        raise ConfigError(f"hidden_activation/gate: {cfg.hidden_activation!r}/{cfg.gate!r} is "
                          "not allowed with excite_kernel = '3x1'; allowed: 'relu'/'sigmoid'")
    block = TSE(cfg.channels, (cfg.tile_rows, cfg.tile_cols), hidden=cfg.hidden,
                excite_kernel="3x1").eval()
    gen = torch.Generator().manual_seed(cfg.seed)
    c, h = cfg.channels, cfg.hidden
    k = block.conv1.weight.shape[2]
    with torch.no_grad():
        block.conv1.weight.copy_(torch.randn((h, c, k, 1), generator=gen) * (2.0 / (k * c)) ** 0.5)
        block.conv1.bias.copy_(0.2 * torch.randn(h, generator=gen))
        block.conv2.weight.copy_(torch.randn((c, h, k, 1), generator=gen) * 2.0 / (k * h) ** 0.5)
        block.conv2.bias.copy_(0.5 * torch.randn(c, generator=gen))
    return block


def build_excite3x1(cfg: TSEConfig, frames: int = 1) -> AttentionReference:
    """The quantized PyTorch reference of cfg's 3x1-excite TSE block: seeded weights
    (float_excite3x1_for), SE's synthetic calibration and input, eager post-training
    quantization on cfg.engine (quantized_block.quantize); quant is the torch-free
    attention_numerics.Excite3x1Params (attention_quantized.excite3x1_params), codes every
    stage NCHW (quantized_block.run_stages)."""
    from tse.ref_model.errors import ConfigError

    from .attention_quantized import excite3x1_params
    from .quantized_block import quantize, run_stages

    if cfg.block != "se" or cfg.excite_kernel != "3x1":
        raise ConfigError(f"excite_kernel: block {cfg.block!r} with excite_kernel "
                          f"{cfg.excite_kernel!r} is not allowed here; allowed: block 'se' "
                          "with excite_kernel '3x1'")
    calib, calib_source = calibration.synthetic_calibration(cfg, seed=cfg.seed + 1)
    model = quantize(float_excite3x1_for(cfg), calib, cfg.engine)
    del calib
    x = calibration.synthetic_activations(cfg, frames, seed=cfg.seed + 2)
    return AttentionReference(cfg, excite3x1_params(model), run_stages(model, x),
                              {"weights": f"seeded (seed {cfg.seed})",
                               "calibration": calib_source,
                               "input": f"synthetic, {frames} frames (seed {cfg.seed + 2})"})
