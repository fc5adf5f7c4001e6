"""Whether a calibration suits the input it quantizes: checked before anything is written.

A calibration set that is all zero, constant or absurdly large (1e30) quantizes without an
error, but the input then clips (a range too narrow) or collapses onto a few codes (a range
too wide), and the reference and vectors built on it are meaningless. fit() measures both on
the float input and the input's quantization parameters; check() refuses past the limits
below unless the user allows it, and warns past the lower ones.
"""
from __future__ import annotations

import numpy as np

from tse.ref_model.errors import InputError

MAX_CLIPPED = 0.05
"""Refused above this fraction of input elements outside the input's quantized range
(post-training quantization of well-calibrated data clips about 0.001 %)."""
WARN_CLIPPED = 0.01
MIN_SPAN_CODES = 4
"""Refused when the input's values span fewer codes than this (a range far too wide)."""
ALLOW_FLAG = "--allow-bad-calibration"


def fit(x, scale: float, zero_point: int) -> dict:
    """input_clipped_fraction: elements of the float input x outside [0, 255] codes;
    input_span_codes: how many codes the input's values span (max - min over scale)."""
    x = np.asarray(x)
    lo, hi = (0 - zero_point - 0.5) * scale, (255 - zero_point + 0.5) * scale
    outside = int(np.count_nonzero(x < lo)) + int(np.count_nonzero(x > hi))
    span = (float(x.max()) - float(x.min())) / scale if x.size else 0.0
    return {"input_clipped_fraction": outside / max(1, x.size),
            "input_span_codes": span, "input_constant": bool(x.size and x.max() == x.min())}


def check(f: dict, allow: bool = False) -> list[str]:
    """Warnings for a calibration that fits the input poorly; an InputError (naming the
    numbers and the flag that accepts them) when it does not fit at all, unless allow."""
    problems, warnings = [], []
    clipped = f["input_clipped_fraction"]
    if clipped > MAX_CLIPPED:
        problems.append(f"{100 * clipped:.1f} % of the input is clipped by the calibrated "
                        f"range (allowed: at most {100 * MAX_CLIPPED:g} %)")
    elif clipped > WARN_CLIPPED:
        warnings.append(f"{100 * clipped:.2f} % of the input is clipped by the calibrated "
                        "range")
    if not f["input_constant"] and f["input_span_codes"] < MIN_SPAN_CODES:
        problems.append(f"the input spans {f['input_span_codes']:.3g} codes of the calibrated "
                        f"range (allowed: at least {MIN_SPAN_CODES}; the calibration range is "
                        "far wider than the input)")
    if problems and not allow:
        raise InputError(f"calibration: {'; '.join(problems)}; calibrate on data like the "
                         f"input, or pass {ALLOW_FLAG} to write it anyway")
    return warnings + problems
