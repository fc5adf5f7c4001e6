"""Golden vectors of every SE block of a whole model (`tse vectors --model`, `tse check`).

The model (PyTorch: a .py with build_model() or a torch.save'd module; ONNX: a .onnx file) runs
on the user's images; each SE block found (tse.quant.model_import, tse.quant.onnx_import) is
calibrated on the float activations that really reached it, and its first frames become its
test input. Each block gets a full vectors directory DIR/<block name>/ (tse.api: stages, hex,
ROM images, its Verilog NAME.v with a unit name of its own, so every block elaborates in one
design, and the self-checking testbench), the tile clamped to the block's map as `tse buffer`
does. DIR/manifest.json (kind "network-vectors") lists every block with its configuration
and the checksum of its manifest, and every skipped block with its one-line reason. The
directory is built beside DIR and renamed into place: written whole or not at all.
"""
from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path

import numpy as np

from tse.ref_model import artifacts
from tse.ref_model.buffers import parse_planner_tile
from tse.ref_model.errors import ConfigError, InputError

KIND = "network-vectors"
CALIBRATION_CAP = 256
"""Images whose activations calibrate a block (the first ones given)."""


def load_images(path) -> np.ndarray:
    """Float images [N, ...] (the model's input) from a .npy file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"calibration: file {str(path)!r} does not exist; allowed: a .npy "
                         "of float images [N, C, H, W] (the model's input)")
    try:
        x = np.load(path, allow_pickle=False)
    except Exception as e:                  # noqa: BLE001 (numpy raises many kinds)
        raise InputError(f"calibration: {str(path)!r} is not a readable .npy ({e})") from None
    if x.ndim < 2 or len(x) == 0 or not np.issubdtype(x.dtype, np.number):
        raise InputError(f"calibration: {str(path)!r} holds {x.dtype} {list(x.shape)}; "
                         "allowed: a non-empty numeric batch [N, ...] of the model's input")
    if not np.isfinite(x).all():
        raise InputError(f"calibration: {str(path)!r} holds NaN or infinite values; allowed: "
                         "finite values only")
    return x.astype(np.float32)


def model_source(model_path) -> Path:
    """The file a --model value stands for (a cached Fashion-MNIST net's name: its .pt)."""
    from tse.quant import zoo
    return zoo.weights_path(model_path) if model_path in zoo.NETS else Path(model_path)


def find(model_path, images, keep_inputs: bool = True):
    """[(SEBlock, activations [N, C, H, W] or None)] of a PyTorch or ONNX model file, or of a
    cached Fashion-MNIST net by name (tse.quant.zoo)."""
    from tse.quant import zoo
    if model_path in zoo.NETS:
        from tse.quant import model_import
        return model_import.find_blocks(zoo.load(model_path)[0], images,
                                        keep_inputs=keep_inputs, name=model_path)
    path = Path(model_path)
    if path.suffix == ".onnx":
        from tse.quant import onnx_import
        if not path.is_file():
            raise InputError(f"model: file {str(path)!r} does not exist")
        return onnx_import.find_blocks(path, images, keep_inputs=keep_inputs)
    from tse.quant import model_import, se_hooks
    return model_import.find_blocks(se_hooks.load_model(path), images,
                                    keep_inputs=keep_inputs, name=path.stem)


def unit_name(block_name: str, taken: set) -> str:
    """A Verilog identifier of its own for a block's unit (tse_<name>, made unique)."""
    base = "tse_" + re.sub(r"\W", "_", block_name).strip("_")[:50]
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def dir_name(block_name: str, taken: set) -> str:
    """The block's directory under DIR: its name, path separators replaced, made unique."""
    base = re.sub(r"[^\w.\-]", "_", block_name).lstrip(".") or "block"
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def block_tile(tile: str, height: int, width: int) -> str:
    """The tile on one block's map, clamped to it (tse buffer's rule)."""
    rows, cols = parse_planner_tile(tile).resolve(height, width)
    return f"{'H' if rows == height else rows}x{'W' if cols == width else cols}"


def block_reference(block, acts, *, tile: str, frames: int, lanes: int,
                    allow_bad_calibration: bool = False, **options):
    """One computable block's quantized reference (tse.api.reference) as `tse vectors
    --model` builds it: calibrated on the first CALIBRATION_CAP images' activations, the first
    frames as its input, the tile clamped to its map, lanes the largest divisor of C up to
    lanes."""
    import tse.api as api

    return api.reference(block.state_dict(), acts[:frames],
                         calibration=acts[:CALIBRATION_CAP],
                         allow_bad_calibration=allow_bad_calibration,
                         tile=block_tile(tile, block.height, block.width),
                         lanes=math.gcd(block.channels, lanes), **block.dialect(), **options)


def compare(model_path, images, *, tile: str = "7xW", frames: int = 2, lanes: int = 8,
            **options) -> dict:
    """{block name: {stage: mismatching codes}} of every computable block, the profile's
    integer model against quantized PyTorch, exactly as write() computes them but with
    nothing written and no Verilog elaborated (the cheap check of a model's numerics)."""
    import tse.api as api

    return {block.name: {s: d["mismatches"] for s, d in api.vectors(block_reference(
                block, acts, tile=tile, frames=frames, lanes=lanes, **options))
                .vs_quantized_pytorch.items()}
            for block, acts in find(model_path, images) if not block.reason}


def write(model_path, out, images, *, tile: str = "7xW", frames: int = 2,
          lanes: int = 8, allow_bad_calibration: bool = False, log=None,
          **options) -> dict:
    """Write the network's vectors directory; returns its manifest body. options are
    TSEConfig fields for every block (profile, engine, excite_multipliers, ...); lanes is
    clamped per block to the largest divisor of C that is at most it."""
    import tse.api as api

    if frames < 1:
        raise InputError(f"frames: {frames} is not allowed; allowed: a positive integer")
    parse_planner_tile(tile)
    target = artifacts.check_replaceable(out)
    found = find(model_path, images)
    tmp = target.parent / f".{target.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    blocks, skipped, units, dirs = [], [], set(), set()
    try:
        for block, acts in found:
            desc = block.describe()
            if block.reason:
                skipped.append({**desc, "reason": block.reason})
                continue
            unit, sub = unit_name(block.name, units), dir_name(block.name, dirs)
            try:
                ref = block_reference(block, acts, tile=tile, frames=frames, lanes=lanes,
                                      allow_bad_calibration=allow_bad_calibration, **options)
                vec = api.vectors(ref, out=tmp / sub, name=unit)
            except (ConfigError, InputError) as e:
                skipped.append({**desc, "reason": f"{block.name}: {e}"})
                continue
            mismatches = {s: d["mismatches"] for s, d in vec.vs_quantized_pytorch.items()}
            blocks.append({**desc, "directory": sub, "unit": unit,
                           "verilog": f"{sub}/{unit}.v" if f"{unit}.v" in vec.files else None,
                           "config": ref.cfg.to_dict(), "frames": vec.frames,
                           "calibration_images": int(min(len(acts), CALIBRATION_CAP)),
                           "vs_quantized_pytorch": mismatches})
            if log:
                log(f"{block.name}: C={block.channels} {block.height}x{block.width} hidden "
                    f"{block.hidden} {block.hidden_activation}/{block.gate} tile "
                    f"{ref.cfg.tile} -> {sub}/ ({unit})")
        if not blocks:
            reasons = "; ".join(s["reason"] for s in skipped)
            raise ConfigError(f"model: none of its {len(found)} SE block(s) can be computed by "
                              f"the unit ({reasons})")
        body = {"kind": KIND, "model": str(model_path),
                "model_sha256": artifacts.sha256_of(model_source(model_path)),
                "images": int(len(images)), "tile": tile, "blocks": blocks,
                "skipped": skipped}
        artifacts.write_manifest(tmp, body, {f"block:{b['name']}":
                                             f"{b['directory']}/{artifacts.MANIFEST}"
                                             for b in blocks})
        artifacts.replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return artifacts.read_manifest(target)


def verify(directory) -> dict:
    """{block directory: problems} of a network directory: its own manifest's checksums under
    "", then every block's files (tse.ref_model.artifacts.verify)."""
    manifest = artifacts.read_manifest(directory)
    if manifest.get("kind") != KIND:
        raise InputError(f"directory: {str(directory)!r} is not a network directory (kind "
                         f"{manifest.get('kind')!r}); allowed: one written by tse vectors "
                         "--model")
    out = {"": artifacts.verify(directory)}
    for b in manifest.get("blocks", []):
        sub = Path(directory) / str(b.get("directory", ""))
        try:
            out[b["directory"]] = artifacts.verify(sub)
        except InputError as e:
            out[b["directory"]] = [str(e)]
    return out

