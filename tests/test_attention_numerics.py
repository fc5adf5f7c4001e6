"""The torch profile of tiled ECA against quantized PyTorch, code for code, on both engines:
odd sizes, partial edge tiles, channel counts that are not powers of two, every kernel size
from 1 to 7, and extreme inputs (frames of saturated codes, taps at the int8 limits)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from attention_cases import extreme_inputs, srm_case
from tse.quant.attention_blocks import TiledECA
from tse.quant.attention_quantized import (extract_eca_params, quantize_attention,
                                           run_attention_stages)
from tse.ref_model.attention_numerics import eca_stages, prepare_eca

CASES = [  # C, H, W, tile, k
    (24, 9, 7, (3, 7), None),
    (13, 7, 5, (2, 2), 5),
    (64, 6, 6, (6, 6), None),
    (7, 5, 9, (1, 9), 3),
    (5, 4, 3, (4, 1), 7),
    (3, 3, 3, (2, 3), 1),
]


@pytest.mark.parametrize("engine_name", ["fbgemm", "qnnpack"])
@pytest.mark.parametrize("c, h, w, tile, k", CASES)
def test_eca_torch_profile_is_quantized_pytorch(engine_name, c, h, w, tile, k):
    gen = torch.Generator().manual_seed(c * 100 + h)
    block = TiledECA(c, tile, k).eval()
    with torch.no_grad():
        taps = torch.randn(block.conv.weight.shape, generator=gen) * 2
        taps.view(-1)[0] = 8.0                    # one tap sets the scale: others small
        block.conv.weight.copy_(taps)
    model = quantize_attention(block, torch.randn(16, c, h, w, generator=gen) * 2,
                               engine_name)
    params = prepare_eca(extract_eca_params(model))
    assert np.abs(params.taps).max() == 127       # the int8 limit is exercised
    ref = run_attention_stages(model, extreme_inputs(c, h, w, gen))
    ours = eca_stages(ref["input"], tile, params)
    for role in ("pooled", "excite", "gate", "output"):
        assert ours[role].shape == ref[role].shape, role
        mismatches = int((ours[role] != ref[role]).sum())
        assert mismatches == 0, f"{role}: {mismatches} of {ref[role].size} codes differ"
    assert ref["output"].min() == 0 or ref["output"].max() == 255    # extremes reached


SRM_CASES = [  # C, H, W, tile: every tile holds 2 or more elements
    (13, 7, 5, (2, 3)),
    (6, 6, 6, (6, 6)),
    (7, 5, 9, (2, 9)),
    (5, 28, 28, (7, 28)),
]


@pytest.mark.parametrize("engine_name", ["fbgemm", "qnnpack"])
@pytest.mark.parametrize("c, h, w, tile", SRM_CASES)
def test_srm_torch_profile_is_quantized_pytorch(engine_name, c, h, w, tile):
    from tse.ref_model.attention_numerics import prepare_srm, srm_stages

    # calibrated on the extreme frames too, so the deviation's range spans them
    _, q, ref = srm_case(engine_name, c, h, w, tile)
    params = prepare_srm(q)
    ours = srm_stages(ref["input"], tile, params)
    for role in ("pooled", "std", "excite", "gate", "output"):
        assert ours[role].shape == ref[role].shape, role
        mismatches = int((ours[role] != ref[role]).sum())
        assert mismatches == 0, f"{role}: {mismatches} of {ref[role].size} codes differ"
    assert len(np.unique(ref["std"])) >= 3           # the deviation's codes really vary


EXCITE3X1_CASES = [  # C, H, W, tile, hidden: C odd makes fbgemm's pairs cross taps
    (12, 7, 6, (1, 6), 3),
    (13, 9, 5, (2, 5), 4),
    (8, 5, 7, (1, 7), 2),
    (5, 4, 4, (4, 4), 5),                      # one row of tiles: both neighbours padding
]


def quantized_3x1(engine_name, c, h, w, tile, hidden):
    from tse.quant.float_block import TSE
    from tse.quant.quantized_block import quantize

    gen = torch.Generator().manual_seed(c * 10 + h)
    block = TSE(c, tile, hidden=hidden, excite_kernel="3x1").eval()
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (1.5 if p.dim() > 1 else 0.3))
        # one output of each layer with every weight at +127: fbgemm's int16 pairs saturate
        block.conv1.weight[0] = 2.0
        block.conv2.weight[-1] = 2.0
    # Calibrated on moderate frames only, so the extreme ones saturate to codes 0 and 255.
    calibration = torch.randn(16, c, h, w, generator=gen) * 2
    return quantize(block, calibration, engine_name), extreme_inputs(c, h, w, gen)


@pytest.mark.parametrize("engine_name", ["fbgemm", "qnnpack"])
@pytest.mark.parametrize("c, h, w, tile, hidden", EXCITE3X1_CASES)
def test_excite3x1_torch_profile_is_quantized_pytorch(engine_name, c, h, w, tile, hidden):
    from tse.quant.attention_quantized import excite3x1_params
    from tse.quant.quantized_block import run_stages
    from tse.ref_model.attention_numerics import excite3x1_stages

    model, x = quantized_3x1(engine_name, c, h, w, tile, hidden)
    ref = run_stages(model, x)
    ours = excite3x1_stages(ref["input"], tile, excite3x1_params(model))
    for role in ("pooled", "hidden", "excite", "gate", "output"):
        assert ours[role].shape == ref[role].shape, role
        mismatches = int((ours[role] != ref[role]).sum())
        assert mismatches == 0, f"{role}: {mismatches} of {ref[role].size} codes differ"


def test_the_1x1_parameter_extraction_refuses_a_3x1_excite():
    from tse.quant.quantized_block import extract_params

    model, _ = quantized_3x1("qnnpack", 8, 5, 7, (1, 7), 2)
    with pytest.raises(ValueError, match=r"excite kernel: \(3, 1\)"):
        extract_params(model)
