"""Activations to calibrate on and to feed the reference: the user's, or seeded synthetic ones.

Synthetic frames look like post-ReLU feature maps of a CNN rather than white noise, because
the quantization parameters (and so every code downstream) depend on the statistics:
  - non-negative, with a sizeable fraction of exact zeros (ReLU);
  - spatially correlated (a smooth field, Gaussian-filtered noise, plus finer texture);
  - channel scales that differ (log-normal per channel), so some channels dominate the
    range and others sit in a few codes, as in real layers.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ref_model.config import TSEConfig
from ref_model.errors import InputError


def synthetic_activations(cfg: TSEConfig, frames: int, seed: int) -> torch.Tensor:
    """float32 [frames, C, H, W], reproducible from seed."""
    gen = torch.Generator().manual_seed(seed)
    shape = (frames, cfg.channels, cfg.height, cfg.width)
    smooth = _gaussian_blur(torch.randn(shape, generator=gen), sigma=2.0)
    smooth = smooth / smooth.std().clamp_min(1e-6)
    texture = 0.3 * torch.randn(shape, generator=gen)
    offset = 0.3 * torch.randn((1, cfg.channels, 1, 1), generator=gen)
    scale = torch.exp(0.5 * torch.randn((1, cfg.channels, 1, 1), generator=gen))
    return torch.relu((smooth + texture + offset) * scale).contiguous()


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = int(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    n, c, h, w = x.shape
    y = x.reshape(n * c, 1, h, w)
    # Reflect padding needs the pad to be smaller than the side; replicate works for any size.
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
    return y.reshape(n, c, h, w)


def load_activations(path, cfg: TSEConfig, what: str) -> torch.Tensor:
    """A user's float activations from .npy: [N, C, H, W] or [C, H, W], finite values."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{what}: file {str(path)!r} does not exist") from None
    except ValueError as e:
        raise InputError(f"{what}: {str(path)!r} is not a readable .npy array ({e})") from None
    if arr.ndim == 3:
        arr = arr[None]
    expect = (cfg.channels, cfg.height, cfg.width)
    if arr.ndim != 4 or arr.shape[1:] != expect:
        raise InputError(f"{what}: {str(path)!r} has shape {list(arr.shape)}; allowed: "
                         f"[N, {expect[0]}, {expect[1]}, {expect[2]}] or {list(expect)} "
                         "(NCHW, matching the configuration)")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{what}: {str(path)!r} has dtype {arr.dtype}; allowed: float16, "
                         "float32 or float64")
    if not np.isfinite(arr).all():
        raise InputError(f"{what}: {str(path)!r} holds {int((~np.isfinite(arr)).sum())} "
                         "NaN or infinite values; allowed: finite values only")
    return torch.from_numpy(arr.astype(np.float32)).contiguous()
