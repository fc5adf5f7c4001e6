"""Checks a `tse` command makes before its long work: where it writes, whether the
configuration fits in memory, and whether the calibration suits the input. Each failure is
one `tse: error:` line (InputError or ConfigError) and nothing has been written yet."""
from __future__ import annotations

import sys
from pathlib import Path


def replaceable_out(out) -> None:
    """--out of a command that replaces its directory whole (reference, vectors, rtl)."""
    from tse.ref_model.artifacts import check_replaceable

    check_replaceable(out)


def memory(cfg, frames: int, what: str, calibration_file=None, input_file=None) -> int:
    """Refuse a configuration whose estimated peak exceeds the available memory (the
    estimate is tse.quant.memory's); frames and calibration values are read from the headers of
    the user's files when given."""
    from tse.quant import memory as mem

    from tse.ref_model.errors import InputError

    calib_values = None
    for what_file, path in (("calibration", calibration_file), ("input", input_file)):
        shape = _npy_shape(path) if path else None
        if shape and (len(shape) == 4 and shape[0] == 0 or _prod(shape) == 0):
            raise InputError(f"{what_file}: {str(path)!r} holds no frames (shape "
                             f"{list(shape)}); allowed: [N, C, H, W] with N >= 1")
        if shape and what_file == "calibration":
            calib_values = _prod(shape)
        if shape and what_file == "input":
            frames = shape[0] if len(shape) == 4 else 1
    return mem.check_fits(cfg, max(1, frames), what, calibration_values=calib_values)


def calibration(prepared, allow: bool, quiet: bool = False) -> dict:
    """How the calibration fits the input (tse.quant.calibration_check); refuses a calibration
    that clips the input or collapses it onto a few codes unless allow; warns on stderr."""
    from tse.quant import calibration_check

    f = calibration_fit(prepared.x, prepared.params)
    for w in calibration_check.check(f, allow):
        if not quiet:
            print(f"tse: warning: calibration: {w}", file=sys.stderr)
    return f


def calibration_fit(x, params) -> dict:
    """tse.quant.calibration_check.fit of the float input x with the input's quantization."""
    from tse.quant import calibration_check

    return calibration_check.fit(x, params.scales["input"], params.zero_points["input"])


def excite_multipliers_note(cfg) -> str | None:
    """A note when the unit builds fewer excite multipliers than configured."""
    if cfg.excite_multipliers_built == cfg.excite_multipliers:
        return None
    return (f"excite multipliers: {cfg.excite_multipliers} configured, "
            f"{cfg.excite_multipliers_built} built (max(C, hidden): more would multiply zeros "
            "on the same schedule)")


def format_fit(f: dict) -> str:
    return (f"calibration: {100 * f['input_clipped_fraction']:.3f} % of the input clipped, "
            f"the input spans {f['input_span_codes']:.0f} codes")


def _npy_shape(path) -> tuple | None:
    """The array shape in a .npy header, or None (the loader then reports the problem)."""
    import numpy as np

    try:
        return tuple(np.load(Path(path), mmap_mode="r", allow_pickle=False).shape)
    except (OSError, ValueError):
        return None


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n
