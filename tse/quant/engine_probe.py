"""What the quantized engine does on this machine where PyTorch leaves it to the CPU.

fbgemm's u8 x s8 kernels on CPUs without AVX512-VNNI multiply with vpmaddubsw, which adds
the products of input channels 2k and 2k+1 (raw codes; the zero point is applied later
through row offsets) in int16 with saturation. With activation codes above 127 (no
reduce_range, or inputs past the calibrated range) an fc's accumulator then differs from
the exact sum. Measured here, once per engine, by one conv whose two products overflow
int16; recorded as QuantParams.pair_saturation so the torch profile reproduces it.
"""
from __future__ import annotations

import functools
import warnings



@functools.lru_cache(maxsize=None)
def pair_saturation(engine: str) -> bool:
    """True when `engine`'s quantized 1x1 conv saturates int16 pairs on this CPU."""
    import torch
    import torch.ao.nn.quantized as nnq

    prev = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = engine
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            conv = nnq.Conv2d(2, 1, 1)
            w = torch.full((1, 2, 1, 1), -128.0)
            conv.set_weight_bias(torch.quantize_per_tensor(w, 1.0, 0, torch.qint8),
                                 torch.zeros(1))
            # exact: 255 * -128 * 2 = -65280 -> rint(-255) + 255 = 0;
            # pairs saturated at -32768 -> -128 + 255 = 127
            conv.scale, conv.zero_point = 256.0, 255
            x = torch._make_per_tensor_quantized_tensor(
                torch.full((1, 2, 1, 1), 255, dtype=torch.uint8), 1.0, 0)
            code = int(conv(x).int_repr().numpy().ravel()[0])
    finally:
        torch.backends.quantized.engine = prev
    if code not in (0, 127):
        raise RuntimeError(f"engine probe: {engine} gave code {code}; expected 0 (exact) "
                           "or 127 (int16 pairs saturated)")
    return code == 127


__all__ = ["pair_saturation"]
