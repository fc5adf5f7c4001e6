"""Activations to calibrate on and to feed the reference: the user's, or seeded synthetic ones.

Synthetic frames look like post-ReLU feature maps of a CNN rather than white noise, because
the quantization parameters (and so every code downstream) depend on the statistics:
  - non-negative, with a sizeable fraction of exact zeros (ReLU);
  - spatially correlated (a smooth field, Gaussian-filtered noise, plus finer texture);
  - channel scales that differ (log-normal per channel), so some channels dominate the
    range and others sit in a few codes, as in real layers.

Synthetic calibration is bounded (calibration_set): 8 frames when they hold at most
CALIBRATION_ELEMENTS values (every configuration up to 8 x 512K-element frames, the default
included, calibrates on 8 whole frames); beyond that, with row-strip tiles, 8 frames cut to
their first whole strips (the same statistics, tile for tile); with tiles that span the frame
height, as many whole frames as fit (at least one). So calibration costs the same on a
1024x2048 frame as on a 256x2048 one, whatever --frames is.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tse.ref_model.config import TSEConfig
from tse.ref_model.errors import InputError


CALIBRATION_FRAMES = 8
CALIBRATION_ELEMENTS = 1 << 22


def calibration_shape(cfg: TSEConfig) -> tuple[int, int]:
    """(frames, rows) of the synthetic calibration set of cfg (see the module docstring)."""
    c, h, w, th = cfg.channels, cfg.height, cfg.width, cfg.tile_rows
    if CALIBRATION_FRAMES * c * h * w <= CALIBRATION_ELEMENTS:
        return CALIBRATION_FRAMES, h
    if th < h:
        strips = CALIBRATION_ELEMENTS // (CALIBRATION_FRAMES * c * th * w)
        if strips:
            return CALIBRATION_FRAMES, min(h, strips * th)
        return max(1, CALIBRATION_ELEMENTS // (c * th * w)), th
    return max(1, CALIBRATION_ELEMENTS // (c * h * w)), h


def synthetic_calibration(cfg: TSEConfig, seed: int) -> tuple[torch.Tensor, str]:
    """The synthetic calibration set of cfg and its description for a manifest."""
    frames, rows = calibration_shape(cfg)
    cut = "" if rows == cfg.height else f" of their first {rows} rows"
    return (synthetic_activations(cfg, frames, seed, height=rows),
            f"synthetic, {frames} frames{cut} (seed {seed})")


def synthetic_activations(cfg: TSEConfig, frames: int, seed: int,
                          height: int | None = None) -> torch.Tensor:
    """float32 [frames, C, height (default H), W], reproducible from seed.

    Built in place (the frame itself plus one noise tensor of its size at the peak, the blur
    at most BLUR_ELEMENTS at a time): the values of the plain formula
    relu((blur(n1) / std + 0.3 * n2 + offset) * scale) (tests/test_strips_memory.py)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (frames, cfg.channels, cfg.height if height is None else height, cfg.width)
    x = torch.randn(shape, generator=gen)
    _gaussian_blur_(x, sigma=2.0)
    x.div_(x.std().clamp_min(1e-6))
    x.add_(torch.randn(shape, generator=gen).mul_(0.3))
    offset = 0.3 * torch.randn((1, cfg.channels, 1, 1), generator=gen)
    scale = torch.exp(0.5 * torch.randn((1, cfg.channels, 1, 1), generator=gen))
    return x.add_(offset).mul_(scale).relu_()


# Elements blurred per call, so the padded copies and the convolution's output stay bounded.
# conv2d's rounding depends on the batch of planes it is given (a few planes round otherwise
# than many, by ~1e-6), so every tensor up to this size, every calibration set included, is
# blurred whole as it always was; bigger frames a few whole planes at a time.
BLUR_ELEMENTS = 1 << 23


def _gaussian_blur_(x: torch.Tensor, sigma: float) -> None:
    """Separable Gaussian blur of every [H, W] plane of x, in place."""
    radius = int(3 * sigma)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    n, c, h, w = x.shape
    planes = x.view(n * c, 1, h, w)
    step = max(1, BLUR_ELEMENTS // (h * w))
    for p0 in range(0, n * c, step):
        y = planes[p0:p0 + step]
        # Reflect padding needs the pad to be smaller than the side; replicate works for any size.
        y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
        y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1))
        planes[p0:p0 + step] = y


def load_activations(path, cfg: TSEConfig, what: str) -> torch.Tensor:
    """A user's float activations from .npy: [N, C, H, W] or [C, H, W], finite values."""
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{what}: file {str(path)!r} does not exist") from None
    except ValueError as e:
        raise InputError(f"{what}: {str(path)!r} is not a readable .npy array ({e})") from None
    return check_activations(arr, cfg, what, repr(str(path)))


def check_activations(arr, cfg: TSEConfig, what: str, name: str = "the array") -> torch.Tensor:
    """Float activations held in memory (a numpy array or a tensor), checked as
    load_activations checks a file's: [N, C, H, W] or [C, H, W], finite; float32 [N, C, H, W]."""
    if isinstance(arr, torch.Tensor):
        arr = arr.detach().cpu().numpy()
    arr = np.asarray(arr)
    if arr.ndim == 3:
        arr = arr[None]
    expect = (cfg.channels, cfg.height, cfg.width)
    if arr.ndim != 4 or arr.shape[1:] != expect:
        raise InputError(f"{what}: {name} has shape {list(arr.shape)}; allowed: "
                         f"[N, {expect[0]}, {expect[1]}, {expect[2]}] or {list(expect)} "
                         "(NCHW, matching the configuration)")
    if arr.shape[0] < 1:
        raise InputError(f"{what}: {name} has shape {list(arr.shape)} (no frame); allowed: "
                         "at least one frame")
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{what}: {name} has dtype {arr.dtype}; allowed: float16, "
                         "float32 or float64")
    if not np.isfinite(arr).all():
        raise InputError(f"{what}: {name} holds {int((~np.isfinite(arr)).sum())} "
                         "NaN or infinite values; allowed: finite values only")
    return torch.from_numpy(arr.astype(np.float32)).contiguous()
