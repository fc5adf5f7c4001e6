"""Artifact directories: .npy files plus a manifest.json that describes and checksums them.

Every tool that writes results for other tools (the quantized reference, golden vectors)
uses this one format. The manifest holds whatever the writer puts in it (configuration,
engine, versions, seed, "quant" parameters) and a "files" list with, per file, its role,
path (relative to the directory), shape, dtype and sha256.

A directory is written whole or not at all: everything goes to a fresh temporary directory
beside the target, which then replaces the target in one rename (the old contents are moved
aside first and removed only after the new directory is in place).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

MANIFEST = "manifest.json"
FORMAT = "tse-artifacts/1"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_artifacts(out_dir, arrays: dict, manifest: dict, extra_files: dict | None = None) -> Path:
    """Write arrays (role -> ndarray) as <role>.npy, extra_files (relative path -> bytes)
    as given, and manifest.json listing every file; replace out_dir atomically."""
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        entries = []
        for role, arr in arrays.items():
            arr = np.ascontiguousarray(arr)
            rel = f"{role}.npy"
            np.save(tmp / rel, arr, allow_pickle=False)
            entries.append({"role": role, "path": rel, "shape": list(arr.shape),
                            "dtype": str(arr.dtype), "sha256": sha256_of(tmp / rel)})
        for rel, (role, data) in (extra_files or {}).items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
            entries.append({"role": role, "path": rel, "sha256": sha256_of(tmp / rel)})
        body = {"format": FORMAT, **manifest, "files": entries}
        (tmp / MANIFEST).write_text(json.dumps(body, indent=2) + "\n")
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_manifest(directory) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: no {MANIFEST}; not an artifact directory")
    return json.loads(path.read_text())


def load_arrays(directory, roles=None) -> dict:
    """Load the .npy files of a directory by role (all of them unless roles is given)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    out = {}
    for entry in manifest["files"]:
        if entry["path"].endswith(".npy") and (roles is None or entry["role"] in roles):
            out[entry["role"]] = np.load(directory / entry["path"], allow_pickle=False)
    return out


def verify(directory) -> list[str]:
    """Problems found re-checking every file's sha256, shape and dtype; empty when intact."""
    directory = Path(directory)
    problems = []
    for entry in read_manifest(directory)["files"]:
        path = directory / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']} ({entry['role']}): missing")
            continue
        digest = sha256_of(path)
        if digest != entry["sha256"]:
            problems.append(f"{entry['path']} ({entry['role']}): sha256 {digest} does not "
                            f"match the manifest's {entry['sha256']}")
            continue
        if "shape" in entry:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
            if list(arr.shape) != entry["shape"] or str(arr.dtype) != entry["dtype"]:
                problems.append(f"{entry['path']} ({entry['role']}): {arr.dtype} "
                                f"{list(arr.shape)} does not match the manifest's "
                                f"{entry['dtype']} {entry['shape']}")
    return problems
