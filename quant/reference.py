"""The quantized PyTorch reference of a configuration, written as an artifact directory.

Roles written (see docs/formats.md): input_float, input, pooled, hidden, excite, gate,
output (activations NCHW; per-tile stages [N, C', tiles_y, tiles_x]; codes uint8), output_float
(the dequantized output), w1, w2 (int8 codes [out, in]) and b1, b2 (float32). The manifest
holds the configuration, "engine", "quant" (every scale and zero point), torch's version,
the seed and where the weights and calibration data came from.
"""
from __future__ import annotations

import platform
from dataclasses import dataclass

import numpy as np
import torch

from ref_model import artifacts
from ref_model.config import TSEConfig
from ref_model.params import QuantParams

from . import calibration
from .quantized_block import QuantTSE, extract_params, float_block_for, quantize, run_stages

CALIBRATION_FRAMES = 8


@dataclass
class Reference:
    cfg: TSEConfig
    model: QuantTSE
    params: QuantParams
    input_float: np.ndarray
    codes: dict            # role -> ndarray, from run_stages
    float_output: np.ndarray
    sources: dict          # where weights, calibration and input came from


def build(cfg: TSEConfig, frames: int = 1, weights: str | None = None,
          calibration_file: str | None = None, input_file: str | None = None) -> Reference:
    """Quantize the block of cfg and run it on the input frames."""
    state_dict = None
    if weights:
        from .se_weights import load_state_dict_file
        state_dict = load_state_dict_file(weights)
    float_block = float_block_for(cfg, state_dict)

    if calibration_file:
        calib = calibration.load_activations(calibration_file, cfg, "calibration")
    else:
        calib = calibration.synthetic_activations(cfg, CALIBRATION_FRAMES, seed=cfg.seed + 1)
    if input_file:
        x = calibration.load_activations(input_file, cfg, "input")
    else:
        x = calibration.synthetic_activations(cfg, frames, seed=cfg.seed + 2)

    model = quantize(float_block, calib, cfg.engine)
    codes = run_stages(model, x)
    with torch.no_grad():
        float_out = float_block(x).numpy()
    sources = {"weights": weights or f"seeded (seed {cfg.seed})",
               "calibration": calibration_file or
               f"synthetic, {CALIBRATION_FRAMES} frames (seed {cfg.seed + 1})",
               "input": input_file or f"synthetic, {frames} frames (seed {cfg.seed + 2})"}
    return Reference(cfg, model, extract_params(model), x.numpy(), codes, float_out, sources)


def write(ref: Reference, out_dir) -> None:
    arrays = {"input_float": ref.input_float}
    arrays.update({role: ref.codes[role] for role in
                   ("input", "pooled", "hidden", "excite", "gate", "output", "output_float")})
    arrays.update(ref.params.arrays())
    manifest = {
        "kind": "quantized-reference",
        "config": ref.cfg.to_dict(),
        "engine": ref.params.engine,
        "quant": ref.params.quant_section(),
        "seed": ref.cfg.seed,
        "frames": int(ref.input_float.shape[0]),
        "layout": {"activations": "NCHW", "per_tile": "N, C, tiles_y, tiles_x",
                   "weights": "[out, in] int8 codes, zero point 0", "biases": "float32"},
        "axes": {**{r: ["frame", "channel", "row", "column"]
                    for r in ("input_float", "input", "output", "output_float")},
                 **{r: ["frame", "channel", "tile_row", "tile_column"]
                    for r in ("pooled", "hidden", "excite", "gate")},
                 "w1": ["out", "in"], "w2": ["out", "in"]},
        "sources": ref.sources,
        "versions": {"torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "accuracy": accuracy(ref),
    }
    artifacts.write_artifacts(out_dir, arrays, manifest)


def clipped(ref: Reference) -> np.ndarray:
    """Elements whose float input or float output lies outside its quantized range."""
    p = ref.params

    def outside(values, role):
        s, zp = p.scales[role], p.zero_points[role]
        return (values < (0 - zp - 0.5) * s) | (values > (255 - zp + 0.5) * s)

    return outside(ref.input_float, "input") | outside(ref.float_output, "output")


def accuracy(ref: Reference) -> dict:
    """How far the quantized output is from the float block, in output LSBs.

    Post-training quantization clips on purpose (the histogram observer trades range tails
    for resolution), so elements whose input or float output lies outside the representable
    range are counted as clipped and measured apart: the in-range error is what the
    arithmetic costs, the clipped fraction is what the calibration chose."""
    scale = ref.params.scales["output"]
    err = np.abs(ref.codes["output_float"].astype(np.float64) - ref.float_output) / scale
    in_range = ~clipped(ref)
    inner = err[in_range] if in_range.any() else np.zeros(1)
    return {"output_max_abs_err_lsb": float(inner.max()),
            "output_mean_abs_err_lsb": float(inner.mean()),
            "output_clipped_fraction": float(1.0 - in_range.mean()),
            "output_max_abs_err_lsb_with_clipped": float(err.max()),
            "output_scale": scale}

def summary(ref: Reference, out_dir) -> dict:
    cfg, p = ref.cfg, ref.params
    gate = ref.codes["gate"]
    return {"out": str(out_dir), "engine": p.engine, "torch": torch.__version__,
            "channels": cfg.channels, "height": cfg.height, "width": cfg.width,
            "tile": cfg.tile, "tiles": [cfg.tiles_y, cfg.tiles_x], "hidden": cfg.hidden,
            "frames": int(ref.input_float.shape[0]),
            "per_channel_weights": p.per_channel,
            "input_scale": p.scales["input"], "input_zero_point": p.zero_points["input"],
            "output_scale": p.scales["output"], "output_zero_point": p.zero_points["output"],
            "gate_code_range": [int(gate.min()), int(gate.max())],
            **accuracy(ref)}


def format_summary(s: dict) -> str:
    return "\n".join([
        f"quantized reference -> {s['out']}",
        f"  layer    C={s['channels']} {s['height']}x{s['width']} tile {s['tile']} "
        f"({s['tiles'][0]}x{s['tiles'][1]} tiles) hidden {s['hidden']}, {s['frames']} frame(s)",
        f"  engine   {s['engine']} (torch {s['torch']}), "
        f"{'per-channel' if s['per_channel_weights'] else 'per-tensor'} int8 weights",
        f"  input    scale {s['input_scale']:.6g} zero point {s['input_zero_point']}; "
        f"output scale {s['output_scale']:.6g} zero point {s['output_zero_point']}",
        f"  gates    codes {s['gate_code_range'][0]}..{s['gate_code_range'][1]} of 0..255 (scale 1/256)",
        f"  vs float output error in range: max {s['output_max_abs_err_lsb']:.2f} LSB, "
        f"mean {s['output_mean_abs_err_lsb']:.3f} LSB; clipped by calibration: "
        f"{100 * s['output_clipped_fraction']:.3f} % of elements",
    ])
