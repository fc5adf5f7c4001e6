"""The quantized PyTorch reference of the TSE block (eager mode, engine pinned and recorded).

    QuantStub -> AvgPool2d(ceil_mode) -> ConvReLU2d (conv1 fused with ReLU) -> Conv2d
              -> Sigmoid -> repeat_interleave + crop -> FloatFunctional.mul(x, gate) -> DeQuantStub

Other SE dialects (tse.quant.float_block), as a real deployment quantizes them in eager mode:
  silu         conv1 without ReLU (its own observed qparams, role hidden_pre) -> DeQuantStub
               -> nn.SiLU (float) -> QuantStub (observed qparams: hidden); there is no
               quantized SiLU.
  hardsigmoid  slope 1/6, offset 0.5: nn.Hardsigmoid on quint8 (quantized kernel, fixed output
               qparams 1/256, 0, measured); other slopes: DeQuantStub -> HardSigmoid (float)
               -> QuantStub with fixed qparams 1/256, 0 (FixedQParamsObserver), so the gate
               keeps the sigmoid's qparams either way.
docs/numerics.md writes out what each computes.

The engine (fbgemm or qnnpack) is set before prepare and convert, because the conv kernel is
chosen when weights are packed; it is stored on the converted block and set again around every
call, so a reference never silently runs on another engine. Activations stay NCHW-contiguous
(channels-last changes avg_pool2d's rounding, see ../shared/notes/torch-quant-semantics.md).
"""
from __future__ import annotations

import contextlib
import warnings

import numpy as np
import torch
from torch.ao import quantization as tq
from torch.ao.nn.quantized import FloatFunctional

from tse.ref_model.config import TSEConfig
from tse.ref_model.params import ACTIVATIONS, PRE_ACTIVATION, QuantParams

from . import engine_probe
from .float_block import TSE, HardSigmoid, broadcast_gate

GATE_QPARAMS = (1.0 / 256, 0)
"""The gate's fixed qparams: the quantized sigmoid's and hardsigmoid's (quint8)."""


@contextlib.contextmanager
def quiet():
    """torch.ao.quantization prints deprecation warnings on every call; keep output readable."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="torch.ao")
        yield


@contextlib.contextmanager
def engine(name: str):
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


class QuantSE(TSE):
    """The quantizable TSE body for an input that is already quantized (inside a network, or
    behind QuantTSE's QuantStub): the float block's layers plus FloatFunctional.mul, and the
    stubs around a float activation (SiLU, a hard sigmoid of another slope).
    stages(q) returns every intermediate by role (hidden_pre: SiLU's input)."""

    def __init__(self, channels: int, kernel: tuple[int, int], reduction: int | None = None,
                 **dialect):
        super().__init__(channels, kernel, reduction, **dialect)
        self.mul = FloatFunctional()
        if self.hidden_activation == "silu":
            self.dequant_hidden, self.quant_hidden = tq.DeQuantStub(), tq.QuantStub()
        if isinstance(self.gating, HardSigmoid):
            self.dequant_gate, self.quant_gate = tq.DeQuantStub(), tq.QuantStub()
            scale, zero_point = GATE_QPARAMS
            self.quant_gate.qconfig = tq.QConfig(
                activation=tq.FixedQParamsObserver.with_args(
                    scale=scale, zero_point=zero_point, dtype=torch.quint8, quant_min=0,
                    quant_max=255),
                weight=tq.default_weight_observer)

    def stages(self, q: torch.Tensor) -> dict:
        pooled = self.squeeze(q)
        out = {"input": q, "pooled": pooled}
        if self.hidden_activation == "silu":
            pre = out[PRE_ACTIVATION] = self.conv1(pooled)
            hidden = self.quant_hidden(self.silu(self.dequant_hidden(pre)))
        else:
            hidden = self.relu(self.conv1(pooled))
        excite = self.conv2(hidden)
        if isinstance(self.gating, HardSigmoid):
            gate = self.quant_gate(self.gating(self.dequant_gate(excite)))
        else:
            gate = self.gating(excite)
        y = self.mul.mul(q, broadcast_gate(gate, self.kernel, q.shape[-2], q.shape[-1]))
        return {**out, "hidden": hidden, "excite": excite, "gate": gate, "output": y}

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.stages(q)["output"]


class QuantTSE(QuantSE):
    """The quantizable TSE block on float input; after convert(), stages(x) returns every
    quantized intermediate plus the dequantized output."""

    def __init__(self, channels: int, kernel: tuple[int, int], reduction: int | None = None,
                 **dialect):
        super().__init__(channels, kernel, reduction, **dialect)
        self.quant = tq.QuantStub()
        self.dequant = tq.DeQuantStub()
        self.engine = None  # set by quantize()

    def stages(self, x: torch.Tensor) -> dict:
        out = super().stages(self.quant(x.contiguous()))
        out["output_float"] = self.dequant(out["output"])
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.engine is None:
            return self.stages(x)["output_float"]
        with engine(self.engine):
            return self.stages(x)["output_float"]


def quantize(float_block: TSE, calibration: torch.Tensor, engine_name: str) -> QuantTSE:
    """Eager-mode post-training quantization of a float block on the given activations."""
    model = QuantTSE(float_block.conv1.in_channels, float_block.kernel,
                     **float_block.dialect(), excite_kernel=float_block.excite_kernel)
    fuse = [["conv1", "relu"]] if model.hidden_activation == "relu" else []
    return post_training_quantize(model, float_block, calibration, engine_name, fuse)


def post_training_quantize(model, float_block, calibration: torch.Tensor, engine_name: str,
                           fuse: list):
    """Eager-mode post-training quantization of a quantizable block (stages(x) runs it) with
    the float block's weights: fuse, the engine's default qconfig, prepare, calibrate,
    convert, all on the pinned engine, which the block then remembers."""
    model.load_state_dict(float_block.state_dict())
    model.eval()
    with quiet(), engine(engine_name):
        if fuse:
            tq.fuse_modules(model, fuse, inplace=True)
        model.qconfig = tq.get_default_qconfig(engine_name)
        tq.prepare(model, inplace=True)
        with torch.no_grad():
            model.stages(calibration)
        tq.convert(model, inplace=True)
    model.engine = engine_name
    return model


def run_stages(model: QuantTSE, x: torch.Tensor, pre_activation: bool = False) -> dict:
    """Codes of every stage as numpy (uint8, NCHW; per-tile stages [N, C', tiles_y, tiles_x]);
    with pre_activation, also SiLU's input (hidden_pre) when the block has one."""
    with quiet(), engine(model.engine), torch.no_grad():
        out = model.stages(x)
    roles = ACTIVATIONS + ((PRE_ACTIVATION,) if pre_activation and PRE_ACTIVATION in out else ())
    codes = {role: out[role].int_repr().numpy() for role in roles}
    codes["output_float"] = out["output_float"].numpy()
    return codes


def extract_params(model: QuantTSE) -> QuantParams:
    """The converted block's integer parameters in ref_model's torch-free form."""
    with quiet():
        probe = model.stages(torch.zeros(1, model.conv1.in_channels, 1, 1))
    roles = [role for role in probe if role != "output_float"]
    scales = {role: float(probe[role].q_scale()) for role in roles}
    zero_points = {role: int(probe[role].q_zero_point()) for role in roles}

    def weight(conv):
        w = conv.weight()
        per_channel = w.qscheme() in (torch.per_channel_symmetric, torch.per_channel_affine)
        if per_channel:
            scale = w.q_per_channel_scales().numpy().astype(np.float64)
            zps = w.q_per_channel_zero_points().numpy()
        else:
            scale = np.full(w.shape[0], w.q_scale(), np.float64)
            zps = np.array([w.q_zero_point()])
        if np.any(zps != 0):
            raise ValueError(f"weights must be symmetric (zero point 0); got {zps}")
        if tuple(w.shape[2:]) != (1, 1):
            raise ValueError(f"excite kernel: {tuple(w.shape[2:])} is not allowed here; "
                             "allowed: 1x1 (the 3x1 excite's integer model is "
                             "tse.ref_model.attention_numerics)")
        codes = w.int_repr().numpy().reshape(w.shape[0], w.shape[1]).astype(np.int8)
        bias = conv.bias().detach().numpy().astype(np.float32)
        return codes, scale, bias, per_channel

    w1, s1, b1, pc1 = weight(model.conv1)
    w2, s2, b2, pc2 = weight(model.conv2)
    return QuantParams(engine=model.engine, scales=scales, zero_points=zero_points,
                       w1=w1, w1_scale=s1, b1=b1, w2=w2, w2_scale=s2, b2=b2,
                       per_channel=pc1 and pc2,
                       pair_saturation=engine_probe.pair_saturation(model.engine))


def seeded_weights(block: TSE, seed: int) -> TSE:
    """Weights that exercise the whole sigmoid: excite pre-activations spread over about
    [-4, 4] for unit-scale pooled inputs, instead of PyTorch's default init that keeps every
    gate near 0.5 (which would leave most of the sigmoid table and the gate range untested)."""
    gen = torch.Generator().manual_seed(seed)
    c, h = block.conv1.in_channels, block.conv1.out_channels
    with torch.no_grad():
        block.conv1.weight.copy_(torch.randn((h, c, 1, 1), generator=gen) * (2.0 / c) ** 0.5)
        block.conv1.bias.copy_(0.2 * torch.randn(h, generator=gen))
        block.conv2.weight.copy_(torch.randn((c, h, 1, 1), generator=gen) * 2.0 / h ** 0.5)
        block.conv2.bias.copy_(0.5 * torch.randn(c, generator=gen))
    return block


def float_block_for(cfg: TSEConfig, state_dict: dict | None = None) -> TSE:
    """The float block of a configuration: the user's SE weights, or seeded ones."""
    block = TSE(cfg.channels, (cfg.tile_rows, cfg.tile_cols), hidden=cfg.hidden,
                hidden_activation=cfg.hidden_activation, gate=cfg.gate,
                gate_slope=cfg.gate_slope, gate_offset=cfg.gate_offset).eval()
    if state_dict is None:
        return seeded_weights(block, cfg.seed)
    from .se_weights import load_se_state_dict
    load_se_state_dict(block, state_dict)
    return block
