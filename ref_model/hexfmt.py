"""$readmemh images: integer arrays as words of lanes, one word per line.

A word packs `lanes` values of `bits` bits each, lane 0 in the least significant bits, written
as ceil(lanes*bits/4) hex digits with no prefix. Signed values are written in two's complement
of `bits` bits. A file is a flat sequence of words in the order the hardware consumes them
(beat order for streams, address order for ROMs); its layout is described in the manifest.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError


_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def to_text(values: np.ndarray, bits: int, lanes: int) -> bytes:
    """The hex image of values (flat, in file order) as bytes, one word per line."""
    flat = np.asarray(values).reshape(-1).astype(np.int64)
    if flat.size % lanes:
        raise ValueError(f"{flat.size} values do not fill words of {lanes} lanes")
    lo, hi = -(1 << (bits - 1)), (1 << bits) - 1
    if flat.size and (flat.min() < lo or flat.max() > hi):
        raise ValueError(f"values {flat.min()}..{flat.max()} do not fit {bits} bits")
    unsigned = flat & ((1 << bits) - 1)
    if flat.size == 0:
        return b""
    if bits % 4 == 0:
        # Each lane is exactly bits/4 hex digits: build every digit at once, highest lane first.
        nd = bits // 4
        shifts = 4 * np.arange(nd - 1, -1, -1)
        digits = _HEX[(unsigned[:, None] >> shifts) & 0xF].reshape(-1, lanes, nd)[:, ::-1, :]
        lines = np.concatenate([digits.reshape(digits.shape[0], -1),
                                np.full((digits.shape[0], 1), ord("\n"), np.uint8)], axis=1)
        return lines.tobytes()
    width = -(-lanes * bits // 4)
    out = []
    for row in unsigned.reshape(-1, lanes).tolist():
        word = 0
        for lane, v in enumerate(row):
            word |= v << (lane * bits)
        out.append(format(word, f"0{width}x"))
    return ("\n".join(out) + "\n").encode()


def read(path, bits: int, lanes: int, signed: bool) -> np.ndarray:
    """Values of a hex image, flat, in file order (comments // and blank lines skipped)."""
    path = Path(path)
    values = []
    mask = (1 << bits) - 1
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("//")[0].strip()
        if not line:
            continue
        try:
            word = int(line, 16)
        except ValueError:
            raise InputError(f"{path}:{number}: {line!r} is not a hex word") from None
        if word >> (lanes * bits):
            raise InputError(f"{path}:{number}: {line!r} is wider than {lanes} lanes of "
                             f"{bits} bits")
        for lane in range(lanes):
            v = (word >> (lane * bits)) & mask
            if signed and v >> (bits - 1):
                v -= 1 << bits
            values.append(v)
    return np.array(values, dtype=np.int64)
