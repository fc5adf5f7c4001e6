"""Golden vectors of tiled ECA and SRM and of TSE with the paper's 3x1 excite in the hw
profile (issue 18): every stage of attention_kernels as .npy and $readmemh hex (the layouts of
tse.ref_model.vectors), and a manifest with the block, its configuration and parameters, and
how the vectors compare with quantized PyTorch. The units' Verilog (ECA's, SRM's and the 3x1
excite's), ROM images, facts and self-checking testbench come as extra files and meta
(tse.sim.cosim.write_attention_vectors).
"""
from __future__ import annotations

import platform

import numpy as np

from . import artifacts, attention_hw, attention_kernels, hexfmt
from .attention_numerics import prepare_eca, prepare_srm
from .attention_widths import square_sum_bits
from .config import TSEConfig
from .errors import ConfigError
from .kernels import distance
from .vectors import STREAM_AXES, TILE_AXES, stage_layout

COMPARED = {"eca": ("pooled", "excite", "gate", "output"),
            "srm": ("pooled", "std", "excite", "gate", "output"),
            "excite3x1": ("pooled", "hidden", "excite", "gate", "output")}


def kind(cfg: TSEConfig) -> str:
    """COMPARED's key of cfg: "eca", "srm", or "excite3x1" (block "se", excite_kernel "3x1")."""
    if cfg.block in ("eca", "srm"):
        return cfg.block
    if cfg.excite_kernel == "3x1":
        return "excite3x1"
    raise ConfigError(f"block: {cfg.block!r} with excite_kernel {cfg.excite_kernel!r} is not "
                      "allowed here; allowed: 'eca', 'srm', or 'se' with excite_kernel '3x1' "
                      "(SE's 1x1 excite: tse.ref_model.vectors)")


def hw_params(cfg: TSEConfig, quant):
    """The block's hw parameters (EcaHw, SrmHw or Excite3x1Hw) from its quantized parameters
    (EcaQuantParams, SrmQuantParams, or Excite3x1Params for the 3x1 excite)."""
    k = kind(cfg)
    if k == "eca":
        return attention_hw.eca_hw_params(prepare_eca(quant), cfg)
    if k == "srm":
        return attention_hw.srm_hw_params(quant, prepare_srm(quant), cfg)
    return attention_kernels.excite3x1_hw_params(quant, cfg)


FRAMES = {"eca": attention_kernels.eca_frames, "srm": attention_kernels.srm_frames,
          "excite3x1": attention_kernels.excite3x1_frames}
"""The whole-frame kernel of each kind."""


def build(cfg: TSEConfig, quant, x_nhwc: np.ndarray) -> dict:
    """Every stage (channels last) of the hw profile for the block's quantized parameters."""
    return FRAMES[kind(cfg)](cfg, hw_params(cfg, quant), x_nhwc)


def compare(cfg: TSEConfig, stages: dict, reference_nchw: dict) -> dict:
    """Per compared stage, the distance from quantized PyTorch's codes (kernels.distance)."""
    roles = COMPARED[kind(cfg)]
    ref = {r: np.ascontiguousarray(np.moveaxis(reference_nchw[r], 1, -1)) for r in roles}
    return distance({r: stages[r] for r in roles}, ref, stages=roles)


def write(out_dir, cfg: TSEConfig, x_nhwc: np.ndarray, stages: dict, meta: dict,
          extra_files: dict | None = None) -> None:
    """Write the vectors directory (whole or not at all); extra_files {path: (role, bytes)}
    go in the same write (the ECA unit's Verilog and ROM image, tse.sim.cosim)."""
    arrays = {"input": np.ascontiguousarray(x_nhwc), **stages}
    hex_layout, extra = {}, {}
    n_max = cfg.tile_rows * cfg.tile_cols
    for s, a in arrays.items():
        layout = stage_layout(cfg, s, a.shape[-1], "hw")
        if s == "square_sums":
            layout = {**layout, "bits": square_sum_bits(n_max), "signed": False}
        hex_layout[s] = layout
        extra[layout["path"]] = (f"{s}_hex", hexfmt.writer(a, layout["bits"], layout["lanes"]))
    manifest = {
        "kind": "golden-vectors", "block": cfg.block, "config": cfg.to_dict(), "profile": "hw",
        "engine": cfg.engine, "seed": cfg.seed, "frames": int(x_nhwc.shape[0]),
        "axes": {s: STREAM_AXES if s in ("input", "output") else TILE_AXES for s in arrays},
        "hex": hex_layout,
        "versions": {"numpy": np.__version__, "python": platform.python_version()},
        **meta,
    }
    artifacts.write_artifacts(out_dir, arrays, manifest, extra_files={**extra,
                                                                    **(extra_files or {})})
