"""How much memory a configuration needs, estimated before any work starts, and the check
that turns "too large for this machine" into a one-line error instead of an allocator
traceback or the kernel's OOM killer.

estimate_bytes() is the one place that models the peak; it is deliberately conservative
(about twice the peaks measured below). When a command's memory use changes (e.g. the
reference and the writers working one strip at a time), update the model here and only here.

Measured peaks (tse bench --memory --json, tile 7xW, 16 lanes, 1 frame, RSS of the command
alone; the reference and the vectors work one piece at a time, tse.quant.reference.pieces):
  interpreter with torch and numba     0.44 GB
  tse vectors   1024x2048x16           0.93 GB  (~15 B per input element above the baseline)
  tse reference 1024x2048x16           0.56 GB  (~4 B)
  tse vectors   1024x2048x64           2.41 GB  (~15 B)
  tse reference 1024x2048x64           1.36 GB  (~7 B)
A piece is whole strips of tile rows, or whole frames when the tile spans the frame height:
then the float block holds that frame (plain SE, column strips).
"""
from __future__ import annotations

import os

from tse.ref_model.config import TSEConfig
from tse.ref_model.errors import ConfigError

from . import calibration, reference

GB = 1e9
BASE_BYTES = 768 * 2**20
"""The interpreter with torch, numpy and numba loaded (measured 0.44 GB)."""
CALIBRATION_BYTES_PER_ELEMENT = 80
"""Peak bytes per element of the calibration frames (observers, float copies; measured 39-45)."""
FRAME_BYTES_PER_ELEMENT = 32
"""Peak bytes per element of the frames held whole (the input and output codes, PyTorch's
codes for the comparison, the stage arrays; measured ~15 above the baseline)."""
PIECE_BYTES_PER_ELEMENT = 100
"""Peak bytes per element of the piece the float block runs on (float input, float copies
inside the quantized block, its float output)."""


def calibration_elements(cfg: TSEConfig) -> int:
    """Values in the synthetic calibration set of cfg (tse.quant.calibration decides its shape)."""
    frames, rows = calibration.calibration_shape(cfg)
    return frames * rows * cfg.width * cfg.channels


def estimate_bytes(cfg: TSEConfig, frames: int, calibration_values: int | None = None) -> int:
    """Conservative peak memory of building the reference and the vectors of cfg on
    `frames` frames (tse reference, vectors, run, cosim, rtl); calibration_values: the
    values of a user's calibration set (default: the synthetic one)."""
    calib = calibration_elements(cfg) if calibration_values is None else calibration_values
    frame_values = frames * cfg.channels * cfg.height * cfg.width
    piece = max((f.stop - f.start) * (r.stop - r.start) * cfg.width * cfg.channels
                for f, r in reference.pieces(cfg, frames))
    return int(BASE_BYTES + max(calib * CALIBRATION_BYTES_PER_ELEMENT,
                                piece * PIECE_BYTES_PER_ELEMENT)
               + frame_values * FRAME_BYTES_PER_ELEMENT)


def available_bytes() -> int | None:
    """Memory this process may still take: the system's MemAvailable, capped by a cgroup
    limit when there is one; None where neither can be read (then nothing is refused)."""
    limits = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            cap = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read().strip())
        if cap != "max":
            limits.append(int(cap) - used)
    except (OSError, ValueError):
        pass
    return min(limits) if limits else None


def check_fits(cfg: TSEConfig, frames: int, what: str, available: int | None = None,
               calibration_values: int | None = None) -> int:
    """Refuse (ConfigError) a configuration whose estimate exceeds the available memory;
    returns the estimate. TSE_MEMORY_CHECK=0 in the environment skips the refusal (for a
    machine whose swap or overcommit the estimate does not know about)."""
    need = estimate_bytes(cfg, frames, calibration_values)
    have = available_bytes() if available is None else available
    if have is not None and need > have and os.environ.get("TSE_MEMORY_CHECK", "1") != "0":
        raise ConfigError(
            f"memory: {what} of C={cfg.channels} {cfg.height}x{cfg.width} on {frames} "
            f"frame(s) needs about {need / GB:.1f} GB (estimate) but {have / GB:.1f} GB is "
            f"available; allowed: a configuration that fits (fewer frames, a smaller frame), "
            "or TSE_MEMORY_CHECK=0 to try anyway")
    return need
