"""Golden vectors as a library: the one place that runs the integer model over a reference's
input codes, compares every stage with quantized PyTorch, and writes a vectors directory with
the unit's Verilog and self-checking testbench beside it (`tse vectors`, `tse run` and
tse.api all call it, so their directories are the same bit for bit on the same inputs).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tse.ref_model import numerics
from tse.ref_model import vectors as vectors_model
from tse.ref_model.config import TSEConfig
from tse.ref_model.params import QuantParams


@dataclass
class Vectors:
    """Golden vectors of one profile: every stage channels last (input, output [N, H, W, C];
    tile_sums, pooled, hidden, excite, gate [N, tiles_y, tiles_x, C']), the integer
    parameters, and per stage how they differ from quantized PyTorch."""
    cfg: TSEConfig
    params: QuantParams
    profile: str
    result: dict              # tse.ref_model.vectors.build's dict
    vs_quantized_pytorch: dict
    sources: dict
    out: Path | None = None   # the directory written, if any
    files: tuple = ()         # relative paths of the files beside the vectors (Verilog, bench)

    @property
    def stages(self) -> dict[str, np.ndarray]:
        return {s: self.result[s] for s in ("input",) + numerics.STAGES}

    @property
    def int_params(self):
        return self.result["int_params"]

    @property
    def frames(self) -> int:
        return int(self.result["input"].shape[0])


def build(cfg: TSEConfig, params: QuantParams, x_nhwc: np.ndarray, torch_codes: dict,
          profile: str, sources: dict) -> Vectors:
    """The profile's integer model on input codes x_nhwc ([N, H, W, C] uint8), compared with
    quantized PyTorch's codes (channels last, as tse.quant.reference.channels_last_codes)."""
    result = vectors_model.build(cfg, params, x_nhwc, profile)
    return Vectors(cfg, params, profile, result, vectors_model.compare(result, torch_codes),
                   sources)


def write(v: Vectors, out, **bundle_options) -> Vectors:
    """Write v's vectors directory (replaced whole; docs/formats.md) with the unit's Verilog
    and the self-checking testbench (tse.sim.selfcheck.bundle, given bundle_options) in the same
    write; returns v with out and files set."""
    import torch

    from tse.sim import selfcheck

    files = selfcheck.bundle(v.cfg, v.int_params, v.frames, **bundle_options)
    vectors_model.write(out, v.cfg, v.params, v.result, v.profile,
                        {"versions": {"torch": torch.__version__}, "sources": v.sources,
                         "vs_quantized_pytorch": v.vs_quantized_pytorch}, extra_files=files)
    v.out, v.files = Path(out), tuple(files)
    return v
