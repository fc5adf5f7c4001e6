"""Quantized ECA and SRM blocks for the attention tests: seeded weights, calibration that spans
extreme frames, and the frames themselves (every code at 0 or 255, alternating rows and
channels, plus random ones)."""
from __future__ import annotations

import torch

from tse.quant.attention_blocks import TiledECA, TiledSRM
from tse.quant.attention_quantized import (extract_eca_params, extract_srm_params,
                                           quantize_attention, run_attention_stages)


def extreme_inputs(c, h, w, gen, n=6):
    x = torch.randn(n, c, h, w, generator=gen) * 3
    x[0] = 50.0                                   # every code at 255 after clamping
    x[1] = -50.0                                  # every code at 0
    x[2, :, ::2] = 50.0                           # alternating rows of the two limits
    x[2, :, 1::2] = -50.0
    x[3, ::2] = 50.0                              # alternating channels
    return x


def eca_case(engine_name, c, h, w, tile, k, seed=0, frames=6):
    """(quantized model, EcaQuantParams, reference stages) of a seeded tiled ECA."""
    gen = torch.Generator().manual_seed(seed * 1000 + c * 100 + h)
    block = TiledECA(c, tile, k).eval()
    with torch.no_grad():
        taps = torch.randn(block.conv.weight.shape, generator=gen) * 2
        taps.view(-1)[0] = 8.0                    # one tap sets the scale: others small
        block.conv.weight.copy_(taps)
    model = quantize_attention(block, torch.randn(16, c, h, w, generator=gen) * 2,
                               engine_name)
    q = extract_eca_params(model)
    return model, q, run_attention_stages(model, extreme_inputs(c, h, w, gen, frames))


def srm_case(engine_name, c, h, w, tile, seed=0, frames=6):
    """(quantized model, SrmQuantParams, reference stages) of a seeded tiled SRM."""
    gen = torch.Generator().manual_seed(seed * 1000 + c)
    block = TiledSRM(c, tile).eval()
    with torch.no_grad():
        block.cfc.weight.copy_(torch.randn(block.cfc.weight.shape, generator=gen) * 2)
        block.bn.running_var.copy_(torch.rand(c, generator=gen) + 0.5)
        block.bn.bias.copy_(torch.randn(c, generator=gen))
        block.bn.running_mean.copy_(torch.randn(c, generator=gen) * 0.3)
    calibration = torch.cat([torch.randn(16, c, h, w, generator=gen) * 2,
                             extreme_inputs(c, h, w, gen)])
    model = quantize_attention(block, calibration, engine_name)
    q = extract_srm_params(model)
    return model, q, run_attention_stages(model, extreme_inputs(c, h, w, gen, frames))
