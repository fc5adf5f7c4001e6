"""The quantized PyTorch reference of a configuration, written as an artifact directory.

Roles written (see docs/formats.md): input_float, input, pooled, hidden, excite, gate,
output (activations NCHW; per-tile stages [N, C', tiles_y, tiles_x]; codes uint8), output_float
(the dequantized output), w1, w2 (int8 codes [out, in]) and b1, b2 (float32). The manifest
holds the configuration, "engine", "quant" (every scale and zero point), torch's version,
the seed and where the weights and calibration data came from.

The block runs a piece at a time (pieces(): whole strips of tile rows, or whole frames), so
`tse reference` (write_streaming) holds only the float input frames and one piece's stages,
writing every stage into its .npy in place; build() assembles the same pieces in memory.
prepare() reads the user's files (the CLI); prepare_arrays() takes the same inputs held in
memory (tse.api).
"""
from __future__ import annotations

import math
import platform
from dataclasses import dataclass

import numpy as np
import torch

from tse.ref_model import artifacts
from tse.ref_model.config import TSEConfig
from tse.ref_model.params import ACTIVATIONS, QuantParams

from . import calibration
from .float_block import TSE
from .quantized_block import QuantTSE, extract_params, float_block_for, quantize, run_stages

PIECE_ELEMENTS = 1 << 20
"""Input elements the block runs on per call (whole strips or frames; see pieces())."""

FRAME_ROLES = ("input_float", "input", "output", "output_float")
TILE_ROLES = ("pooled", "hidden", "excite", "gate")


@dataclass
class Prepared:
    """A calibrated block and the float frames to run it on (nothing run yet)."""
    cfg: TSEConfig
    float_block: TSE
    model: QuantTSE
    params: QuantParams
    x: torch.Tensor        # float32 [N, C, H, W]
    sources: dict          # where weights, calibration and input came from

    @property
    def frames(self) -> int:
        return int(self.x.shape[0])


@dataclass
class Reference:
    cfg: TSEConfig
    model: QuantTSE
    params: QuantParams
    input_float: np.ndarray
    codes: dict            # role -> ndarray, from run_stages
    float_output: np.ndarray
    sources: dict          # where weights, calibration and input came from


def prepare(cfg: TSEConfig, frames: int = 1, weights: str | None = None,
            calibration_file: str | None = None, input_file: str | None = None) -> Prepared:
    """Quantize the block of cfg (calibrated on the user's file, else on the bounded synthetic
    set of tse.quant.calibration) and load or generate its input frames."""
    cfg.require_unit_block("the SE quantized reference (tse.quant.reference)")
    state_dict = None
    if weights:
        from .se_weights import load_state_dict_file
        state_dict = load_state_dict_file(weights)
    float_block = float_block_for(cfg, state_dict)

    if calibration_file:
        calib = calibration.load_activations(calibration_file, cfg, "calibration")
        calib_source = calibration_file
    else:
        calib, calib_source = calibration.synthetic_calibration(cfg, seed=cfg.seed + 1)
    model = quantize(float_block, calib, cfg.engine)
    del calib
    if input_file:
        x = calibration.load_activations(input_file, cfg, "input")
    else:
        x = calibration.synthetic_activations(cfg, frames, seed=cfg.seed + 2)
    sources = {"weights": weights or f"seeded (seed {cfg.seed})",
               "calibration": calib_source,
               "input": input_file or f"synthetic, {frames} frames (seed {cfg.seed + 2})"}
    return Prepared(cfg, float_block, model, extract_params(model), x, sources)


def prepare_arrays(cfg: TSEConfig, state_dict: dict | None, calib, x, sources: dict) -> Prepared:
    """prepare() on objects held in memory (tse.api): an SE state_dict (None: seeded
    weights), float calibration and input activations (numpy arrays or tensors, [N, C, H, W]
    or [C, H, W], checked as a file's are)."""
    cfg.require_unit_block("the SE quantized reference (tse.quant.reference)")
    float_block = float_block_for(cfg, state_dict)
    x = calibration.check_activations(x, cfg, "input")   # first: calibration defaults to x
    model = quantize(float_block, calibration.check_activations(calib, cfg, "calibration"),
                     cfg.engine)
    return Prepared(cfg, float_block, model, extract_params(model), x, sources)


def pieces(cfg: TSEConfig, frames: int, budget: int | None = None) -> list[tuple]:
    """(frame slice, row slice) pieces covering the input in order, each about budget
    elements or less: whole frames (several when they fit), else whole strips of tile_rows
    rows (several per piece). TSE is strip-local and a piece holds whole tiles (a partial
    last strip only at the frame's bottom edge, where it also is in the whole frame), so
    every stage of a piece equals that part of the whole frame's stage
    (tests/test_strips_memory.py checks it code for code)."""
    budget = PIECE_ELEMENTS if budget is None else budget
    c, h, w, th = cfg.channels, cfg.height, cfg.width, cfg.tile_rows
    if c * h * w <= budget:
        k = budget // (c * h * w)
        return [(slice(n, min(frames, n + k)), slice(0, h)) for n in range(0, frames, k)]
    rows = max(1, budget // (c * th * w)) * th
    return [(slice(n, n + 1), slice(r, min(h, r + rows)))
            for n in range(frames) for r in range(0, h, rows)]


def tile_rows_of(cfg: TSEConfig, rows: slice) -> slice:
    """The tile rows a (strip-aligned) row slice holds."""
    return slice(rows.start // cfg.tile_rows, math.ceil(rows.stop / cfg.tile_rows))


def run_piece(p: Prepared, frames: slice, rows: slice, float_output: bool = True) -> dict:
    """run_stages' codes of one piece (per-tile stages: the piece's tile rows) plus, if
    asked, the float block's output on it ("float_output")."""
    x = p.x[frames, :, rows].contiguous()
    codes = run_stages(p.model, x)
    if float_output:
        with torch.no_grad():
            codes["float_output"] = p.float_block(x).numpy()
    return codes


def build(cfg: TSEConfig, frames: int = 1, weights: str | None = None,
          calibration_file: str | None = None, input_file: str | None = None) -> Reference:
    """Quantize the block of cfg and run it on the input frames, every stage held in memory
    (for the chain's smaller users; `tse reference` streams with write_streaming)."""
    return run(prepare(cfg, frames, weights, calibration_file, input_file))


def run(p: Prepared) -> Reference:
    """Run a prepared block on its input frames piece by piece, every stage assembled in
    memory (activations NCHW, per-tile stages [N, C', tiles_y, tiles_x])."""
    cfg, n = p.cfg, p.frames
    codes = {}
    for fs, rs in pieces(cfg, n):
        piece = run_piece(p, fs, rs)
        ts = tile_rows_of(cfg, rs)
        for role, arr in piece.items():
            if role not in codes:
                codes[role] = np.empty((n, arr.shape[1]) + _plane(cfg, role), arr.dtype)
            codes[role][fs, :, ts if role in TILE_ROLES else rs] = arr
    float_out = codes.pop("float_output")
    return Reference(cfg, p.model, p.params, p.x.numpy(), codes, float_out, p.sources)


def _plane(cfg: TSEConfig, role: str) -> tuple[int, int]:
    return (cfg.tiles_y, cfg.tiles_x) if role in TILE_ROLES else (cfg.height, cfg.width)


def _manifest(cfg: TSEConfig, params: QuantParams, frames: int, sources: dict,
              acc: dict | None) -> dict:
    return {
        "kind": "quantized-reference",
        "config": cfg.to_dict(),
        "engine": params.engine,
        "quant": params.quant_section(),
        "seed": cfg.seed,
        "frames": frames,
        "layout": {"activations": "NCHW", "per_tile": "N, C, tiles_y, tiles_x",
                   "weights": "[out, in] int8 codes, zero point 0", "biases": "float32"},
        "axes": {**{r: ["frame", "channel", "row", "column"] for r in FRAME_ROLES},
                 **{r: ["frame", "channel", "tile_row", "tile_column"] for r in TILE_ROLES},
                 "w1": ["out", "in"], "w2": ["out", "in"]},
        "sources": sources,
        "versions": {"torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "accuracy": acc,
    }


def write(ref: Reference, out_dir) -> None:
    arrays = {"input_float": ref.input_float}
    arrays.update({role: ref.codes[role] for role in
                   ("input", "pooled", "hidden", "excite", "gate", "output", "output_float")})
    arrays.update(ref.params.arrays())
    manifest = _manifest(ref.cfg, ref.params, int(ref.input_float.shape[0]), ref.sources,
                         accuracy(ref))
    artifacts.write_artifacts(out_dir, arrays, manifest)


def write_streaming(p: Prepared, out_dir) -> dict:
    """Run the block piece by piece and write the reference directory as it goes (the same
    files and manifest as write(build(...))): no stage of the whole frames is held, only the
    float input; returns summary()'s dict."""
    cfg, n = p.cfg, p.frames
    kept = {}

    def fill(st: artifacts.Staging) -> dict:
        hid = {"hidden": cfg.hidden}
        files = {role: st.npy(role, (n, hid.get(role, cfg.channels)) + _plane(cfg, role),
                              np.float32 if role.endswith("_float") else np.uint8)
                 for role in ("input_float", "input", *TILE_ROLES, "output", "output_float")}
        tiles = {role: np.empty(files[role].shape, np.uint8) for role in TILE_ROLES}
        tally = Tally(p.params)
        for fs, rs in pieces(cfg, n):
            piece = run_piece(p, fs, rs)
            x = p.x[fs, :, rs].numpy()
            files["input_float"].write((fs.start, 0, rs.start), x)
            for role in ("input", "output", "output_float"):
                files[role].write((fs.start, 0, rs.start), piece[role])
            for role in TILE_ROLES:
                tiles[role][fs, :, tile_rows_of(cfg, rs)] = piece[role]
            tally.add(x, piece["output_float"], piece["float_output"])
        for role in TILE_ROLES:
            files[role].write((0,), tiles[role])
        for role, arr in p.params.arrays().items():
            st.save(role, arr)
        kept["accuracy"], kept["gate"] = tally.result(), tiles["gate"]
        return {"accuracy": kept["accuracy"]}

    artifacts.write_artifacts(out_dir, {}, _manifest(cfg, p.params, n, p.sources, None),
                              fill=fill)
    return summary_of(cfg, p.params, n, kept["gate"], kept["accuracy"], out_dir)


def channels_last_codes(p: Prepared) -> dict:
    """Every stage's codes on all frames, channels last ([N, H, W, C]; per-tile stages
    [N, tiles_y, tiles_x, C'], the kernels' layout), run piece by piece: only codes of the
    whole frames are held (a byte per element), no float stage."""
    cfg, n = p.cfg, p.frames
    out = {}
    for fs, rs in pieces(cfg, n):
        piece = run_piece(p, fs, rs, float_output=False)
        for role in ACTIVATIONS:
            arr = piece[role].transpose(0, 2, 3, 1)
            if role not in out:
                out[role] = np.empty((n,) + _plane(cfg, role) + (arr.shape[-1],), arr.dtype)
            out[role][fs, tile_rows_of(cfg, rs) if role in TILE_ROLES else rs] = arr
    return out


def _outside(params: QuantParams, input_float, float_output) -> np.ndarray:
    def outside(values, role):
        s, zp = params.scales[role], params.zero_points[role]
        return (values < (0 - zp - 0.5) * s) | (values > (255 - zp + 0.5) * s)

    return outside(input_float, "input") | outside(float_output, "output")


def clipped(ref: Reference) -> np.ndarray:
    """Elements whose float input or float output lies outside its quantized range."""
    return _outside(ref.params, ref.input_float, ref.float_output)


class Tally:
    """accuracy()'s figures gathered over pieces of the frames (add one piece at a time)."""

    def __init__(self, params: QuantParams):
        self.params = params
        self.scale = params.scales["output"]
        self.elements = self.inner = 0
        self.inner_sum = self.inner_max = self.max_all = 0.0

    def add(self, input_float, output_float, float_output) -> None:
        err = np.abs(output_float.astype(np.float64) - float_output) / self.scale
        in_range = ~_outside(self.params, input_float, float_output)
        inner = err[in_range]
        self.elements += err.size
        self.inner += inner.size
        self.inner_sum += float(inner.sum())
        self.inner_max = max(self.inner_max, float(inner.max()) if inner.size else 0.0)
        self.max_all = max(self.max_all, float(err.max()) if err.size else 0.0)

    def result(self) -> dict:
        return {"output_max_abs_err_lsb": self.inner_max,
                "output_mean_abs_err_lsb": self.inner_sum / self.inner if self.inner else 0.0,
                "output_clipped_fraction": 1.0 - self.inner / max(1, self.elements),
                "output_max_abs_err_lsb_with_clipped": self.max_all,
                "output_scale": self.scale}


def accuracy(ref: Reference) -> dict:
    """How far the quantized output is from the float block, in output LSBs.

    Post-training quantization clips on purpose (the histogram observer trades range tails
    for resolution), so elements whose input or float output lies outside the representable
    range are counted as clipped and measured apart: the in-range error is what the
    arithmetic costs, the clipped fraction is what the calibration chose."""
    tally = Tally(ref.params)
    tally.add(ref.input_float, ref.codes["output_float"], ref.float_output)
    return tally.result()


def summary(ref: Reference, out_dir) -> dict:
    return summary_of(ref.cfg, ref.params, int(ref.input_float.shape[0]), ref.codes["gate"],
                      accuracy(ref), out_dir)


def summary_of(cfg: TSEConfig, params: QuantParams, frames: int, gate: np.ndarray, acc: dict,
               out_dir) -> dict:
    p = params
    return {"out": str(out_dir), "engine": p.engine, "torch": torch.__version__,
            "channels": cfg.channels, "height": cfg.height, "width": cfg.width,
            "tile": cfg.tile, "tiles": [cfg.tiles_y, cfg.tiles_x], "hidden": cfg.hidden,
            "frames": frames,
            "per_channel_weights": p.per_channel,
            "input_scale": p.scales["input"], "input_zero_point": p.zero_points["input"],
            "output_scale": p.scales["output"], "output_zero_point": p.zero_points["output"],
            "gate_code_range": [int(gate.min()), int(gate.max())],
            **acc}


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
