"""The seeds' other channel-attention blocks as tiled float blocks: ECA (seed 002) and SRM
(seed 003), each with the squeeze taken per tile and the gate broadcast back per tile, the
whole frame as the tile being the published block.

    ECA:  pooled = tile mean                                   [N, C, ty, tx]
          gate   = sigmoid(conv1d_k(pooled) across channels)   k taps, zero padding, no bias
    SRM:  t      = (tile mean, tile standard deviation)        [N, C, ty, tx, 2]
          z      = w_c0 * mean + w_c1 * std                    channel-wise FC, no bias
          gate   = sigmoid(batch_norm(z))                      eval mode: running statistics

ECA's k is adaptive from C as in the ECA code (gamma 2, b 1): t = int(|(log2(C) + b) / gamma|),
k = t if t is odd else t + 1, which is |(log2 C + b) / gamma| rounded to the nearest odd
number with ties (an even integer) rounded up.

SRM's standard deviation is the seed's PyTorch code's: x.std() is the unbiased estimate
sqrt(sum((x - mean)^2) / (n - 1)) over the n elements of the tile (the seed's TensorFlow code
takes sqrt(var + 1e-5) with the biased variance instead; this module follows the PyTorch one),
its square root taken in float64 and rounded back (the correctly rounded float32 root).
A tile of one element has no unbiased deviation (PyTorch gives NaN), so a tiling with a
one-element tile is refused. Edge tiles are partial as in TSE: means and deviations over the
elements they hold.
"""
from __future__ import annotations

import torch
from torch import nn

from tse.ref_model.config import eca_kernel_size

from .float_block import broadcast_gate


class TiledECA(nn.Module):
    """ECA with tile (kh, kw): a k-tap 1-D convolution across the channels of each tile's
    mean, then sigmoid."""

    def __init__(self, channels: int, kernel: tuple[int, int], k: int | None = None):
        super().__init__()
        k = eca_kernel_size(channels) if k is None else k
        if k < 1 or k % 2 == 0:
            raise ValueError(f"eca kernel: {k!r} is not allowed; allowed: an odd positive "
                             "integer")
        self.channels, self.kernel = channels, tuple(kernel)
        self.squeeze = nn.AvgPool2d(self.kernel, stride=self.kernel, ceil_mode=True)
        self.conv = nn.Conv1d(1, 1, kernel_size=k, padding=(k - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        """Per-tile gates [N, C, ceil(H/kh), ceil(W/kw)]."""
        pooled = self.squeeze(x)
        n, c, ty, tx = pooled.shape
        rows = pooled.permute(0, 2, 3, 1).reshape(n * ty * tx, 1, c)   # a tile's channels
        z = self.conv(rows).reshape(n, ty, tx, c).permute(0, 3, 1, 2)
        return self.sigmoid(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * broadcast_gate(self.gate(x), self.kernel, x.shape[-2], x.shape[-1])


def tile_element_counts(height: int, width: int, kernel) -> torch.Tensor:
    """Elements of every tile [ceil(H/kh), ceil(W/kw)] (edge tiles hold fewer)."""
    kh, kw = kernel
    rows = torch.tensor([min(kh, height - i) for i in range(0, height, kh)])
    cols = torch.tensor([min(kw, width - j) for j in range(0, width, kw)])
    return rows[:, None] * cols[None, :]


class TiledSRM(nn.Module):
    """SRM with tile (kh, kw): style pooling per tile, channel-wise FC (two weights a
    channel, no bias), batch norm, sigmoid."""

    def __init__(self, channels: int, kernel: tuple[int, int]):
        super().__init__()
        self.kernel = tuple(kernel)
        self.squeeze = nn.AvgPool2d(self.kernel, stride=self.kernel, ceil_mode=True)
        self.cfc = nn.Conv1d(channels, channels, kernel_size=2, bias=False, groups=channels)
        self.bn = nn.BatchNorm1d(channels)
        self.sigmoid = nn.Sigmoid()

    def style(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-tile mean and unbiased standard deviation, each [N, C, ty, tx]."""
        h, w = x.shape[-2:]
        counts = tile_element_counts(h, w, self.kernel).to(x.dtype)
        if int(counts.min()) < 2:
            raise ValueError(f"tile: {self.kernel[0]}x{self.kernel[1]} on {h}x{w} leaves a "
                             "tile of one element, which has no unbiased standard deviation; "
                             "allowed: tilings whose every tile holds 2 or more elements")
        mean = self.squeeze(x)
        centred = x - broadcast_gate(mean, self.kernel, h, w)
        var = self.squeeze(centred * centred) * counts / (counts - 1)
        # The square root in float64, rounded to the input's type: for float32 that is the
        # correctly rounded float32 root (checked on every float32 of five binades), which
        # numpy reproduces; torch.sqrt on float32 is not correctly rounded on this CPU build
        # (1 ulp off on 15.6 % of values, measured), so the integer model could not follow it.
        return mean, torch.sqrt(var.double()).to(x.dtype)

    def gate(self, x: torch.Tensor) -> torch.Tensor:
        mean, std = self.style(x)
        n, c, ty, tx = mean.shape
        t = torch.stack((mean, std), dim=-1)                          # [N, C, ty, tx, 2]
        t = t.permute(0, 2, 3, 1, 4).reshape(n * ty * tx, c, 2)
        z = self.bn(self.cfc(t))                                      # [N*ty*tx, C, 1]
        return self.sigmoid(z.reshape(n, ty, tx, c).permute(0, 3, 1, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * broadcast_gate(self.gate(x), self.kernel, x.shape[-2], x.shape[-1])
