"""The float TSE block, exactly as the paper's Appendix A code (Figure A1), in every SE dialect.

    sq = AvgPool2d(kernel, stride=kernel, ceil_mode=True)      # tiled squeeze
    ex = Conv2d(C, hidden, 1) -> ReLU | SiLU -> Conv2d(hidden, C, 1) -> Sigmoid | HardSigmoid
    y  = repeat_interleave(ex(sq(x)), kh, dim=-2)[:, :, :H, :]
    y  = repeat_interleave(y,          kw, dim=-1)[:, :, :, :W]
    return x * y

The paper's (RegNet's) dialect is hidden = C // r, ReLU, sigmoid; excite_kernel "3x1" makes
both excite convolutions 3x1 across rows of tiles (the paper's Appendix B, TSE_1xW C_3x1 R_r). The others: any hidden width,
SiLU after fc1 (EfficientNet), and a hard sigmoid clamp(slope * x + offset, 0, 1) as the gate
(MobileNetV3: PyTorch's relu6(x + 3) / 6 is slope 1/6, offset 0.5, and is nn.Hardsigmoid
itself; ONNX HardSigmoid's defaults are 0.2, 0.5). Edge tiles (when kh does not divide H or
kw does not divide W) are partial and their mean divides by the elements they really hold:
AvgPool2d's ceil_mode windows that overhang the frame without padding count only the valid
elements. Plain SE is the tile (H, W).
"""
from __future__ import annotations

import torch
from torch import nn

from tse.ref_model.config import HARDSIGMOID_OFFSET, HARDSIGMOID_SLOPE


class HardSigmoid(nn.Module):
    """clamp(slope * x + offset, 0, 1) in float32 steps: f32(f32(x * slope) + offset)."""

    def __init__(self, slope: float, offset: float):
        super().__init__()
        self.slope, self.offset = float(slope), float(offset)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x * self.slope + self.offset, 0.0, 1.0)

    def extra_repr(self) -> str:
        return f"slope={self.slope}, offset={self.offset}"


def gate_module(gate: str, slope: float = HARDSIGMOID_SLOPE,
                offset: float = HARDSIGMOID_OFFSET) -> nn.Module:
    """The gate's module: nn.Sigmoid, nn.Hardsigmoid (slope 1/6, offset 0.5: PyTorch's own,
    which has a quantized kernel) or HardSigmoid(slope, offset)."""
    if gate == "sigmoid":
        return nn.Sigmoid()
    if (slope, offset) == (HARDSIGMOID_SLOPE, HARDSIGMOID_OFFSET):
        return nn.Hardsigmoid()
    return HardSigmoid(slope, offset)


EXCITE_KERNELS = {"1x1": ((1, 1), (0, 0)), "3x1": ((3, 1), (1, 0))}
"""Excite convolutions (kernel, padding) over the map of tiles: the paper's 1x1, or its
Appendix B 3x1 across rows of tiles with zero padding at the frame's top and bottom."""


class TSE(nn.Module):
    """Tiled Squeeze-and-Excite with tile (kh, kw) and reduction r, as in Figure A1; hidden
    (default C // r), hidden_activation ("relu", "silu") and gate ("sigmoid",
    "hardsigmoid" with gate_slope, gate_offset) pick the dialect. The hidden activation is
    the attribute named by it (self.relu or self.silu), the gate likewise (self.sigmoid or
    self.hardsigmoid)."""

    def __init__(self, channels: int, kernel: tuple[int, int], reduction: int | None = None,
                 *, hidden: int | None = None, hidden_activation: str = "relu",
                 gate: str = "sigmoid", gate_slope: float = HARDSIGMOID_SLOPE,
                 gate_offset: float = HARDSIGMOID_OFFSET, excite_kernel: str = "1x1"):
        super().__init__()
        hidden = channels // reduction if hidden is None else hidden
        self.kernel = tuple(kernel)
        if excite_kernel not in EXCITE_KERNELS:
            raise ValueError(f"excite_kernel: {excite_kernel!r} is not allowed; allowed: "
                             f"{', '.join(EXCITE_KERNELS)}")
        self.excite_kernel = excite_kernel
        ek, pad = EXCITE_KERNELS[excite_kernel]
        self.hidden_activation, self.gate_kind = hidden_activation, gate
        self.gate_slope, self.gate_offset = float(gate_slope), float(gate_offset)
        self.squeeze = nn.AvgPool2d(self.kernel, stride=self.kernel, ceil_mode=True)
        self.conv1 = nn.Conv2d(channels, hidden, ek, padding=pad)
        setattr(self, hidden_activation, {"relu": nn.ReLU, "silu": nn.SiLU}[hidden_activation]())
        self.conv2 = nn.Conv2d(hidden, channels, ek, padding=pad)
        setattr(self, gate, gate_module(gate, gate_slope, gate_offset))

    @property
    def activation(self) -> nn.Module:
        return getattr(self, self.hidden_activation)

    @property
    def gating(self) -> nn.Module:
        return getattr(self, self.gate_kind)

    def dialect(self) -> dict:
        """The TSEConfig fields of the block's dialect."""
        return {"hidden": self.conv1.out_channels, "hidden_activation": self.hidden_activation,
                "gate": self.gate_kind, "gate_slope": self.gate_slope,
                "gate_offset": self.gate_offset}

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Per-tile gates [N, C, ceil(H/kh), ceil(W/kw)]."""
        return self.gating(self.conv2(self.activation(self.conv1(self.squeeze(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * broadcast_gate(self.gate(x), self.kernel, x.shape[-2], x.shape[-1])


def broadcast_gate(gate: torch.Tensor, kernel, height: int, width: int) -> torch.Tensor:
    """Nearest-neighbour broadcast of per-tile gates to the frame, cropped to H x W."""
    y = torch.repeat_interleave(gate, kernel[0], dim=-2)[:, :, :height, :]
    return torch.repeat_interleave(y, kernel[1], dim=-1)[:, :, :, :width]
