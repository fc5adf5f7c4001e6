"""Top-1 of a whole PyTorch model with its SE blocks tiled and computed by the unit's integer
model (`tse network --model`; docs/models.md).

Each SE block found by tse.quant.model_import is replaced, through a forward hook on its
module, by one of:
  float SE (check)  the block recomputed from its description (weights, dialect) with the
                    whole map as its tile: must give the model's own logits, so the
                    description is complete
  float TSE         the same with the tile (no retraining: the paper's Table 2 experiment)
  integer model     the block's input quantized with its calibrated qparams, the hw (or torch)
                    profile's integer model over the tile (tse.ref_model.vectors.build: the
                    numerics of the golden vectors and the RTL), the output codes dequantized
Blocks the unit cannot compute stay float (listed with their reasons). Everything else in the
network stays float: this measures what the unit alone does to the accuracy.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from tse.ref_model import vectors as vectors_model
from tse.ref_model.buffers import parse_planner_tile

from .model_vectors import CALIBRATION_CAP, block_tile
from .quant.zoo import top1


def float_block(block, x: torch.Tensor, tile: tuple[int, int]) -> torch.Tensor:
    """The block's float output on x [N, C, H, W] with the squeeze over tiles of tile."""
    from tse.quant.float_block import broadcast_gate

    s = F.avg_pool2d(x, tile, stride=tile, ceil_mode=True)
    w1 = torch.from_numpy(block.w1).to(x.dtype)[..., None, None]
    w2 = torch.from_numpy(block.w2).to(x.dtype)[..., None, None]
    z = F.conv2d(s, w1, torch.from_numpy(block.b1).to(x.dtype))
    z = torch.relu(z) if block.hidden_activation == "relu" else F.silu(z)
    z = F.conv2d(z, w2, torch.from_numpy(block.b2).to(x.dtype))
    g = (torch.sigmoid(z) if block.gate == "sigmoid"
         else torch.clamp(block.gate_slope * z + block.gate_offset, 0, 1))
    return x * broadcast_gate(g, tile, x.shape[-2], x.shape[-1])


class IntegerBlock:
    """A block calibrated on its activations, run by the profile's integer model."""

    def __init__(self, block, acts: np.ndarray, tile: str, lanes: int, profile: str,
                 engine: str):
        import tse.api as api

        self.ref = api.reference(block.state_dict(), acts[:1],
                                 calibration=acts[:CALIBRATION_CAP], tile=tile,
                                 lanes=math.gcd(block.channels, lanes), profile=profile,
                                 engine=engine, **block.dialect())
        self.cfg, self.params = self.ref.cfg, self.ref.params

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        q = torch.quantize_per_tensor(x.float(), p.scales["input"], p.zero_points["input"],
                                      torch.quint8).int_repr().numpy()
        codes = vectors_model.build(self.cfg, p, np.ascontiguousarray(q.transpose(0, 2, 3, 1)),
                                    self.cfg.profile)["output"]
        y = (codes.astype(np.float32) - p.zero_points["output"]) * np.float32(p.scales["output"])
        return torch.from_numpy(np.ascontiguousarray(y.transpose(0, 3, 1, 2)))


@contextlib.contextmanager
def replaced(model, blocks: dict):
    """Every named module in blocks computes blocks[name](input) instead of its forward."""
    handles = [model.get_submodule(name).register_forward_hook(
        lambda m, args, out, f=f: f(args[0])) for name, f in blocks.items()]
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


MODEL_FLOAT_TILES = ("1xW", "3xW", "7xW", "HxW")
"""Tiles of `tse network --model`'s float TSE row (the paper's Table 2 experiment; HxW is SE)."""


def report(model, calibration: np.ndarray, x: np.ndarray, y: np.ndarray, *, tile: str = "7xW",
           lanes: int = 8, profile: str = "hw", engine: str = "fbgemm", log=None,
           float_tiles=MODEL_FLOAT_TILES) -> dict:
    """Top-1 on (x, y): float; float with every block recomputed as SE from its description;
    float TSE at tile and at each of float_tiles (float_tse_tiles); every computable block
    through the integer model at tile."""
    from tse.quant import model_import

    parse_planner_tile(tile)
    found = model_import.find_blocks(model, calibration)
    ok = [(b, a) for b, a in found if b.reason is None]
    rep = {"images": int(len(x)), "tile": tile, "profile": profile, "engine": engine,
           "blocks": [b.describe() for b, _ in found],
           "skipped": [b.reason for b, _ in found if b.reason]}
    rep["float"] = top1(model, x, y)
    with replaced(model, {b.name: (lambda t, b=b: float_block(b, t, (b.height, b.width)))
                          for b, _ in ok}):
        rep["float_se_recomputed"] = top1(model, x, y)
    rep["float_tse_tiles"] = {}
    for spec in dict.fromkeys((*float_tiles, tile)):
        at = {b.name: parse_planner_tile(spec).resolve(b.height, b.width) for b, _ in ok}
        with replaced(model, {b.name: (lambda t, b=b, at=at: float_block(b, t, at[b.name]))
                              for b, _ in ok}):
            rep["float_tse_tiles"][spec] = top1(model, x, y)
    rep["float_tse"] = rep["float_tse_tiles"][tile]
    units = {}
    for b, a in ok:
        units[b.name] = IntegerBlock(b, a, block_tile(tile, b.height, b.width), lanes,
                                     profile, engine)
        if log:
            log(f"{b.name}: calibrated on {min(len(a), CALIBRATION_CAP)} images, "
                f"tile {units[b.name].cfg.tile}")
    with replaced(model, units):
        rep["integer"] = top1(model, x, y)
    return rep


def format_report(rep: dict) -> str:
    lines = [f"top-1 on {rep['images']} images, {len(rep['blocks'])} SE block(s) "
             f"({len(rep['skipped'])} left float), tile {rep['tile']}:"]
    for key, text in (("float", "float (the model)"),
                      ("float_se_recomputed", "float, SE blocks recomputed from their description"),
                      ("float_tse", f"float TSE {rep['tile']} (no retraining)"),
                      ("integer", f"unit's {rep['profile']} profile at {rep['tile']}")):
        lines.append(f"  {100 * rep[key]:6.2f} %  {text}")
        if key == "float_tse":
            lines += [f"  {100 * v:6.2f} %  float TSE {t}" for t, v in
                      rep["float_tse_tiles"].items() if t != rep["tile"]]
    lines += [f"  left float: {r}" for r in rep["skipped"]]
    return "\n".join(lines)
