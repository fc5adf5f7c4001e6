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


# Values encoded per step: the temporaries stay a few MB and the time linear in the size.
CHUNK_VALUES = 1 << 18


def to_text(values: np.ndarray, bits: int, lanes: int) -> bytes:
    """The hex image of values (flat, in file order) as bytes, one word per line."""
    return b"".join(_encoded(_checked(values, bits, lanes), bits, lanes))


def writer(values: np.ndarray, bits: int, lanes: int):
    """A function that writes the hex image of values to a binary file a chunk of words at a
    time (for images of whole frames: no text or int64 copy of the whole array is built).
    The values are checked now, before anything is written."""
    flat = _checked(values, bits, lanes)

    def write(f) -> None:
        for chunk in _encoded(flat, bits, lanes):
            f.write(chunk)
    return write


def _checked(values, bits: int, lanes: int) -> np.ndarray:
    flat = np.asarray(values).reshape(-1)
    if flat.size % lanes:
        raise ValueError(f"{flat.size} values do not fill words of {lanes} lanes")
    lo, hi = -(1 << (bits - 1)), (1 << bits) - 1
    if flat.size and (int(flat.min()) < lo or int(flat.max()) > hi):
        raise ValueError(f"values {flat.min()}..{flat.max()} do not fit {bits} bits")
    return flat


def _encoded(flat: np.ndarray, bits: int, lanes: int):
    """Yield the image's bytes, a whole number of words at a time."""
    step = max(1, CHUNK_VALUES // lanes) * lanes
    for i in range(0, flat.size, step):
        unsigned = flat[i:i + step].astype(np.int64) & ((1 << bits) - 1)
        yield _lines(unsigned.reshape(-1, lanes), bits)


def _lines(words: np.ndarray, bits: int) -> bytes:
    """[words, lanes] unsigned lane values as lines of ceil(lanes*bits/4) hex digits."""
    n, lanes = words.shape
    nd = -(-lanes * bits // 4)
    if bits % 4 == 0:
        # Each lane is exactly bits/4 hex digits: build every digit at once, highest lane first.
        per = bits // 4
        shifts = 4 * np.arange(per - 1, -1, -1)
        digits = _HEX[(words[:, :, None] >> shifts) & 0xF][:, ::-1, :].reshape(n, nd)
    else:
        # Digit d holds word bits 4d..4d+3, which may come from several lanes.
        digits = np.empty((n, nd), np.uint8)
        for d in range(nd):
            v = np.zeros(n, np.int64)
            for lane in range(4 * d // bits, min(lanes, (4 * d + 3) // bits + 1)):
                shift = lane * bits - 4 * d
                v |= words[:, lane] << shift if shift >= 0 else words[:, lane] >> -shift
            digits[:, nd - 1 - d] = _HEX[v & 0xF]
    return np.concatenate([digits, np.full((n, 1), ord("\n"), np.uint8)], axis=1).tobytes()


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
