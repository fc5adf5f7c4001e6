"""Quantized PyTorch references of the tiled ECA and SRM blocks (eager mode, engine pinned).

    ECA:  QuantStub -> AvgPool2d(ceil_mode) -> tiles as rows [N*ty*tx, 1, C]
          -> quantized Conv1d(1, 1, k, zero padding, no bias) -> Sigmoid -> broadcast
          -> FloatFunctional.mul(x, gate) -> DeQuantStub
    SRM:  QuantStub -> AvgPool2d(ceil_mode) (the mean)
          std: DeQuantStub -> the float block's unbiased tile deviation -> QuantStub (observed
               qparams): there is no quantized standard deviation, so a deployment computes it
               in float between stubs
          FloatFunctional.cat(mean, std) (requantized to the observed qparams of the pair)
          -> quantized Conv1d(C, C, 2, groups=C) with the batch norm folded into it (eager
          mode's fuse_modules: weight * gamma / sqrt(var + eps), bias beta - mean * that)
          -> Sigmoid -> broadcast -> FloatFunctional.mul(x, gate) -> DeQuantStub

stages(x) returns every quantized intermediate by role, as tse.quant.quantized_block does for
SE: input, pooled, (std, style for SRM), excite, gate, output, plus output_float. The
extract_* functions and excite3x1_params (TSE with excite_kernel "3x1", quantized by
tse.quant.quantized_block.quantize) give the torch-free parameters of
tse.ref_model.attention_numerics.
"""
from __future__ import annotations

import torch
from torch.ao import quantization as tq
from torch.ao.nn.quantized import FloatFunctional

from . import engine_probe
from .attention_blocks import TiledECA, TiledSRM
from .float_block import broadcast_gate
from .quantized_block import engine, post_training_quantize, quiet


def _tiles_as_rows(t: torch.Tensor) -> torch.Tensor:
    """[N, C, ty, tx] -> [N*ty*tx, C]: one row of channels per tile."""
    n, c, ty, tx = t.shape
    return t.permute(0, 2, 3, 1).reshape(n * ty * tx, c)


def _rows_as_tiles(rows: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    n, c, ty, tx = like.shape
    return rows.reshape(n, ty, tx, c).permute(0, 3, 1, 2).contiguous()


class QuantECA(TiledECA):
    """The quantizable tiled ECA block on float input."""

    def __init__(self, channels: int, kernel: tuple[int, int], k: int | None = None):
        super().__init__(channels, kernel, k)
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.mul = FloatFunctional()
        self.engine = None

    def stages(self, x: torch.Tensor) -> dict:
        q = self.quant(x.contiguous())
        pooled = self.squeeze(q)
        rows = _tiles_as_rows(pooled).unsqueeze(1)                      # [M, 1, C]
        excite = _rows_as_tiles(self.conv(rows).squeeze(1), pooled)
        gate = self.sigmoid(excite)
        y = self.mul.mul(q, broadcast_gate(gate, self.kernel, q.shape[-2], q.shape[-1]))
        return {"input": q, "pooled": pooled, "excite": excite, "gate": gate, "output": y,
                "output_float": self.dequant(y)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)["output_float"]


class QuantSRM(TiledSRM):
    """The quantizable tiled SRM block on float input (batch norm folded at convert)."""

    def __init__(self, channels: int, kernel: tuple[int, int]):
        super().__init__(channels, kernel)
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.dequant_std, self.quant_std = tq.DeQuantStub(), tq.QuantStub()
        self.cat, self.mul = FloatFunctional(), FloatFunctional()
        self.engine = None

    def stages(self, x: torch.Tensor) -> dict:
        q = self.quant(x.contiguous())
        pooled = self.squeeze(q)
        _, std_float = TiledSRM.style(self, self.dequant_std(q))
        std = self.quant_std(std_float)
        m, s = _tiles_as_rows(pooled), _tiles_as_rows(std)             # [M, C] each
        style = self.cat.cat([m.unsqueeze(-1), s.unsqueeze(-1)], dim=-1)   # [M, C, 2]
        z = self.cfc(style)
        if not isinstance(self.bn, torch.nn.Identity):                  # before fusion
            z = self.bn(z)
        excite = _rows_as_tiles(z.squeeze(-1), pooled)
        gate = self.sigmoid(excite)
        y = self.mul.mul(q, broadcast_gate(gate, self.kernel, q.shape[-2], q.shape[-1]))
        return {"input": q, "pooled": pooled, "std": std, "style": style, "excite": excite,
                "gate": gate, "output": y, "output_float": self.dequant(y)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(x)["output_float"]


def quantize_attention(float_block, calibration: torch.Tensor, engine_name: str):
    """Eager-mode post-training quantization of a TiledECA or TiledSRM on the given
    activations; the converted block remembers its engine."""
    if isinstance(float_block, TiledSRM):
        model = QuantSRM(float_block.cfc.in_channels, float_block.kernel)
    elif isinstance(float_block, TiledECA):
        model = QuantECA(float_block.channels, float_block.kernel, float_block.conv.kernel_size[0])
    else:
        raise TypeError(f"block: {type(float_block).__name__} is not allowed; allowed: "
                        "TiledECA, TiledSRM")
    fuse = [["cfc", "bn"]] if isinstance(model, QuantSRM) else []
    return post_training_quantize(model, float_block, calibration, engine_name, fuse)


def run_attention_stages(model, x: torch.Tensor) -> dict:
    """Codes of every quantized stage as numpy (uint8), plus output_float."""
    with quiet(), engine(model.engine), torch.no_grad():
        out = model.stages(x)
    codes = {role: t.int_repr().numpy() for role, t in out.items() if role != "output_float"}
    codes["output_float"] = out["output_float"].numpy()
    return codes


def extract_eca_params(model: QuantECA, x: torch.Tensor | None = None):
    """The converted ECA block's scales, zero points and tap codes, torch-free; x: an input
    of its stages (default float zeros; a block inside a network takes quantized input)."""
    from tse.ref_model.attention_numerics import EcaQuantParams

    with quiet(), engine(model.engine), torch.no_grad():
        probe = model.stages(torch.zeros(1, model.channels, 1, 1) if x is None else x)
    roles = ("input", "excite", "output")
    w = model.conv.weight()
    scale = (w.q_per_channel_scales()[0].item() if w.qscheme() in (
        torch.per_channel_affine, torch.per_channel_symmetric) else w.q_scale())
    return EcaQuantParams(engine=model.engine,
                          scales={r: float(probe[r].q_scale()) for r in roles},
                          zero_points={r: int(probe[r].q_zero_point()) for r in roles},
                          taps=w.int_repr().numpy().reshape(-1).astype("int8"),
                          tap_scale=float(scale),
                          pair_saturation=engine_probe.pair_saturation(model.engine))


def extract_srm_params(model: QuantSRM, x: torch.Tensor | None = None):
    """The converted SRM block's scales, zero points, FC weight codes and folded bias; x: as
    for extract_eca_params."""
    import numpy as np

    from tse.ref_model.attention_numerics import SrmQuantParams

    c = model.cfc.in_channels
    with quiet(), engine(model.engine), torch.no_grad():
        probe = model.stages(torch.zeros(1, c, 2, 1) if x is None else x)
    roles = ("input", "std", "style", "excite", "output")
    w = model.cfc.weight()
    per_channel = w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
    scale = (w.q_per_channel_scales().numpy().astype(np.float64) if per_channel
             else np.full(c, w.q_scale(), np.float64))
    return SrmQuantParams(
        engine=model.engine, scales={r: float(probe[r].q_scale()) for r in roles},
        zero_points={r: int(probe[r].q_zero_point()) for r in roles},
        weights=w.int_repr().numpy().reshape(c, 2).astype(np.int8), weight_scale=scale,
        bias=model.cfc.bias().detach().numpy().astype(np.float32), per_channel=per_channel,
        pair_saturation=engine_probe.pair_saturation(model.engine))


def excite3x1_params(model, x: torch.Tensor | None = None):
    """The integer parameters of a converted 3x1-excite TSE block (quantized_block.quantize
    of a float TSE with excite_kernel "3x1"); x: as for extract_eca_params."""
    import numpy as np

    from tse.ref_model.attention_numerics import Excite3x1Params, conv_layer, gate_mul_mult
    from tse.ref_model.torch_numerics import sigmoid_table

    c = model.conv1.in_channels
    with quiet(), engine(model.engine), torch.no_grad():
        probe = model.stages(torch.zeros(1, c, 1, 1) if x is None else x)
    sc = {r: float(t.q_scale()) for r, t in probe.items() if r != "output_float"}
    zp = {r: int(t.q_zero_point()) for r, t in probe.items() if r != "output_float"}

    def layer(conv, s_in, s_out, zo, relu):
        w = conv.weight()
        per_channel = w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric)
        scale = (w.q_per_channel_scales().numpy().astype(np.float64) if per_channel
                 else np.full(w.shape[0], w.q_scale(), np.float64))
        codes = w.int_repr().numpy()[:, :, :, 0]                 # [out, in, taps]
        return conv_layer(model.engine, per_channel, codes, scale,
                          conv.bias().detach().numpy().astype(np.float32), s_in, s_out, zo,
                          relu)

    out_mult = gate_mul_mult(sc["input"], sc["output"])
    return Excite3x1Params(
        zx=zp["input"],
        fc1=layer(model.conv1, sc["input"], sc["hidden"], zp["hidden"], True),
        fc2=layer(model.conv2, sc["hidden"], sc["excite"], zp["excite"], False),
        pair_saturation=engine_probe.pair_saturation(model.engine),
        gate_table=sigmoid_table(sc["excite"], zp["excite"]), out_mult=out_mult,
        out_zp=zp["output"], out_scale=sc["output"])
