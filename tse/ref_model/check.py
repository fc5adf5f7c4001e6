"""Re-verify an artifact directory, and compare another file against one of its stages.

The comparison is on integer codes with equality; the report names the first mismatch by its
coordinates (frame, row, column, channel for streams; frame, tile row, tile column, channel
for per-tile stages), the stage, both values, and how many values differ.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from . import artifacts, hexfmt
from .errors import InputError


def axes_of(manifest: dict, role: str, ndim: int) -> list[str]:
    axes = manifest.get("axes", {}).get(role)
    return axes if axes and len(axes) == ndim else [f"axis{i}" for i in range(ndim)]


def load_candidate(path, entry: dict, expected: np.ndarray) -> np.ndarray:
    """A user's file for a stage: .npy of the stage's shape, or its hex image."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"against: file {str(path)!r} does not exist")
    if path.suffix == ".npy":
        try:
            got = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise InputError(f"against: {str(path)!r} is not a readable .npy ({e})") from None
        if got.shape != expected.shape:
            raise InputError(f"against: {str(path)!r} has shape {list(got.shape)}; allowed: "
                             f"{list(expected.shape)} (the {entry['role']} stage)")
        return got
    hexinfo = entry.get("hex")
    if not hexinfo:
        raise InputError(f"against: the {entry['role']} stage has no hex image to compare "
                         "a hex file with; give a .npy file")
    got = hexfmt.read(path, hexinfo["bits"], hexinfo["lanes"], hexinfo["signed"])
    if got.size != expected.size:
        raise InputError(f"against: {str(path)!r} holds {got.size} values; allowed: "
                         f"{expected.size} (the {entry['role']} stage, {expected.shape})")
    return got.reshape(expected.shape)


def compare(directory, against, role: str | None = None) -> dict:
    """First mismatch between a stage of directory and the file against."""
    directory = Path(directory)
    manifest = artifacts.read_manifest(directory)
    stem = Path(against).name.split(".")[0]
    role = role or stem
    npy = {e["role"]: e for e in manifest["files"] if e["path"].endswith(".npy")}
    if role not in npy:
        raise InputError(f"role: {role!r} is not a stage of {directory}; allowed: "
                         f"{', '.join(npy)} (or name the file after its stage)")
    entry = npy[role]
    expected = np.load(directory / entry["path"], allow_pickle=False)
    got = load_candidate(against, {**entry, "hex": manifest.get("hex", {}).get(role)}, expected)
    diff = got.astype(np.int64) != expected.astype(np.int64)
    report = {"stage": role, "values": int(expected.size), "mismatches": int(diff.sum())}
    if report["mismatches"]:
        first = np.unravel_index(int(np.argmax(diff.reshape(-1))), expected.shape)
        report["first"] = {**dict(zip(axes_of(manifest, role, expected.ndim),
                                      map(int, first))),
                           "expected": int(expected[first]), "got": int(got[first])}
        report["max_abs_error"] = int(np.abs(got.astype(np.int64) - expected).max())
    return report


def format_report(r: dict) -> str:
    if not r["mismatches"]:
        return f"{r['stage']}: all {r['values']} values match"
    first = r["first"]
    where = ", ".join(f"{k} {v}" for k, v in first.items() if k not in ("expected", "got"))
    return (f"{r['stage']}: {r['mismatches']} of {r['values']} values differ (largest "
            f"{r['max_abs_error']}); first at {where}: expected {first['expected']}, got "
            f"{first['got']}")
