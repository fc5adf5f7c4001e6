"""Golden vectors: every stage of the integer model, as .npy and as $readmemh images.

A vectors directory is an artifact directory (tse.ref_model.artifacts) that a hardware team can
use without Python:
  - stages (channels last): input, output [N, H, W, C]; tile_sums, pooled, hidden, excite,
    gate [N, tiles_y, tiles_x, C'], each as <stage>.npy and hex/<stage>.hex;
  - the unit's ROM images, hex/rom_<name>.hex for w1, w2, fc1, fc2, sigmoid (the gate's
    table, whichever the dialect's gate) and, with hidden_activation = silu, silu: the words the
    unit's ROMs hold (tse.ref_model.roms: address order, packed fields), which the exported
    tse_unit.v loads with $readmemh;
  - the hw constants built into the unit's logic, one value per word, for reference
    (hex/param_<name>.hex: the mean's reciprocals and shifts by tile kind, the output
    multiplier and shift);
  - manifest.json: the unit's plan ("unit": tse.ref_model.unit_plan.UnitPlan.to_dict(), which the
    testbenches read their geometry, beat counts and port widths from), configuration, quantization parameters, profile, engine, versions, seed,
    the hex layouts ("hex": per image its path, bits, lanes, signed, order), the axes of each
    stage, and how the vectors compare with quantized PyTorch.

Hex layout (tse.ref_model.hexfmt): one word per line, lane 0 in the least significant bits.
Streams are in beat order: raster order, channels innermost, P lanes per word (exactly the
AXI4-Stream beats the unit takes and emits). Per-tile stages are in tile raster order,
channels innermost, P lanes per word when P divides C' and one value per word otherwise.
"""
from __future__ import annotations

import platform

import numpy as np

from . import artifacts, hexfmt, kernels, numerics, roms
from .config import TSEConfig
from .params import QuantParams
from .unit_plan import plan_unit

STREAM_AXES = ["frame", "row", "column", "channel"]
TILE_AXES = ["frame", "tile_row", "tile_column", "channel"]

# The hw constants the unit builds into its logic rather than a ROM, one value per word
# (hex/param_<name>.hex, for reference): name -> (IntParams attribute, bits, signed)
PARAMS = {
    "reciprocal": ("hw_recip", lambda hw: hw.reciprocal_bits + 1, False),
    "reciprocal_shift": ("hw_recip_shift", lambda hw: 8, False),
    "mul_multiplier": ("hw_mul_mult", lambda hw: hw.mul_multiplier_bits, False),
    "mul_shift": ("hw_mul_shift", lambda hw: 8, False),
}


def stage_layout(cfg: TSEConfig, stage: str, channels: int, profile: str = "hw") -> dict:
    """Hex layout of a stage. Tile sums are signed: hw.sum_bits wide for the hw profile (its
    register), and for the torch profile, whose sums are exact, at least as wide as the
    largest tile's sum can be (+-255 n), which narrowed hw widths need not cover."""
    if stage == "tile_sums":
        signed = True
        exact = (255 * cfg.tile_rows * cfg.tile_cols).bit_length() + 1
        bits = cfg.hw.sum_bits if profile == "hw" else max(cfg.hw.sum_bits, exact)
    else:
        bits, signed = 8, False
    lanes = cfg.lanes if channels % cfg.lanes == 0 else 1
    order = ("beats: raster order, channels innermost" if stage in ("input", "output")
             else "tiles in raster order, channels innermost")
    return {"path": f"hex/{stage}.hex", "bits": bits, "lanes": lanes, "signed": signed,
            "order": order}


def build(cfg: TSEConfig, params: QuantParams, x_nhwc: np.ndarray, profile: str,
          ip=None) -> dict:
    """Every stage of the block (channels last) with the profile's integer model; ip: the
    integer parameters to run instead of derive(params, cfg) (tse mutate's targeted sets)."""
    ip = numerics.derive(params, cfg) if ip is None else ip
    stages = kernels.run(cfg, ip, x_nhwc, profile)
    return {"input": np.ascontiguousarray(x_nhwc), **{s: stages[s] for s in numerics.STAGES},
            "saturated": stages["saturated"], "int_params": ip}


def write(out_dir, cfg: TSEConfig, params: QuantParams, result: dict, profile: str,
          meta: dict, extra_files: dict | None = None) -> None:
    """Write a vectors directory (whole or not at all) from build()'s result; extra_files
    ({relative path: (role, bytes)}, e.g. the unit's Verilog and a testbench) join the same
    write and the manifest."""
    ip = result["int_params"]
    stages = ("input",) + numerics.STAGES
    arrays = {s: result[s] for s in stages}
    hex_layout, extra = {}, {}
    for s in stages:
        layout = stage_layout(cfg, s, arrays[s].shape[-1], profile)
        hex_layout[s] = layout
        # streamed into the file a chunk at a time (whole frames would make big temporaries)
        extra[layout["path"]] = (f"{s}_hex", hexfmt.writer(arrays[s], layout["bits"],
                                                          layout["lanes"]))
    for name, rom in roms.images(cfg, ip).items():
        layout = rom.describe()
        hex_layout[f"rom_{name}"] = layout
        extra[layout["path"]] = (f"rom_{name}", rom.hex_text())
    for name, (attr, bits_of, signed) in PARAMS.items():
        values = getattr(ip, attr)
        layout = {"path": f"hex/param_{name}.hex", "bits": bits_of(cfg.hw), "lanes": 1,
                  "signed": signed, "order": "by tile kind (2 * cut by the bottom edge + cut "
                  "by the right edge) for reciprocals; one value for the output multiplier",
                  "shape": list(values.shape)}
        hex_layout[f"param_{name}"] = layout
        extra[layout["path"]] = (f"param_{name}", hexfmt.to_text(values, layout["bits"], 1))
    manifest = {
        "kind": "golden-vectors",
        "config": cfg.to_dict(),
        "profile": profile,
        "engine": params.engine,
        "quant": params.quant_section(),
        "seed": cfg.seed,
        "frames": int(arrays["input"].shape[0]),
        "axes": {s: STREAM_AXES if s in ("input", "output") else TILE_AXES for s in stages},
        "hex": hex_layout,
        "saturated": result["saturated"],
        "unit": plan_unit(cfg, ip).to_dict(),
        "versions": {"numpy": np.__version__, "python": platform.python_version(),
                     **meta.pop("versions", {})},
        **meta,
    }
    artifacts.write_artifacts(out_dir, arrays, manifest, extra_files={**extra,
                                                                     **(extra_files or {})})


COMPARED = ("pooled", "hidden", "excite", "gate", "output")


def compare_with_reference(result: dict, reference_codes: dict) -> dict:
    """Per stage, how the vectors differ from quantized PyTorch's codes (NCHW arrays)."""
    return compare(result, {s: kernels.nhwc(reference_codes[s]) for s in COMPARED})


def compare(result: dict, torch_codes: dict) -> dict:
    """Per stage, how the vectors differ from quantized PyTorch's codes (channels last, as
    tse.quant.reference.channels_last_codes gives them)."""
    return kernels.distance({s: result[s] for s in COMPARED}, torch_codes, stages=COMPARED)
