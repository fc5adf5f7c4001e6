"""The float TSE block, exactly as the paper's Appendix A code (Figure A1).

    sq = AvgPool2d(kernel, stride=kernel, ceil_mode=True)      # tiled squeeze
    ex = Conv2d(C, C//r, 1) -> ReLU -> Conv2d(C//r, C, 1) -> Sigmoid
    y  = repeat_interleave(ex(sq(x)), kh, dim=-2)[:, :, :H, :]
    y  = repeat_interleave(y,          kw, dim=-1)[:, :, :, :W]
    return x * y

Edge tiles (when kh does not divide H or kw does not divide W) are partial and their mean
divides by the elements they really hold: AvgPool2d's ceil_mode windows that overhang the
frame without padding count only the valid elements. Plain SE is the tile (H, W).
"""
from __future__ import annotations

import torch
from torch import nn


class TSE(nn.Module):
    """Tiled Squeeze-and-Excite with tile (kh, kw) and reduction r, as in Figure A1."""

    def __init__(self, channels: int, kernel: tuple[int, int], reduction: int):
        super().__init__()
        hidden = channels // reduction
        self.kernel = tuple(kernel)
        self.squeeze = nn.AvgPool2d(self.kernel, stride=self.kernel, ceil_mode=True)
        self.conv1 = nn.Conv2d(channels, hidden, 1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(hidden, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Per-tile gates [N, C, ceil(H/kh), ceil(W/kw)]."""
        return self.sigmoid(self.conv2(self.relu(self.conv1(self.squeeze(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * broadcast_gate(self.gate(x), self.kernel, x.shape[-2], x.shape[-1])


def broadcast_gate(gate: torch.Tensor, kernel, height: int, width: int) -> torch.Tensor:
    """Nearest-neighbour broadcast of per-tile gates to the frame, cropped to H x W."""
    y = torch.repeat_interleave(gate, kernel[0], dim=-2)[:, :, :height, :]
    return torch.repeat_interleave(y, kernel[1], dim=-1)[:, :, :, :width]

