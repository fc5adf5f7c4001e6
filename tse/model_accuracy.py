"""Top-1 of a whole model (PyTorch or ONNX) with its SE blocks tiled and computed by the unit's
integer model (`tse network --model`; docs/models.md).

Each SE block found (tse.quant.model_import, tse.quant.onnx_import) is replaced, through a
forward hook on its module (PyTorch) or by cutting the graph at its Mul (ONNX,
tse.quant.onnx_import.Runner), by one of:
  float SE (check)   the block recomputed from its description (weights, dialect) with the
                     whole map as its tile: must give the model's own logits, so the
                     description is complete
  float TSE          the same at each tile (no retraining: the paper's Table 2 experiment)
  quantized PyTorch  the block's eager-mode quantized reference at the tile (calibrated on
                     the activations that reach it; engine pinned), output codes dequantized
  torch profile      the integer model with the torch profile: its logits must be
                     bit-identical to quantized PyTorch's (the differing ones are counted)
  hw profile         the integer model with the hw profile (tse.ref_model.kernels: the
                     numerics of the golden vectors and the RTL), at each tile with the
                     default widths and at the tile with the sweep's width points
Blocks the unit cannot compute stay float (listed with their reasons). Everything else in the
network stays float: this measures what the unit alone does to the accuracy.
"""
from __future__ import annotations

import contextlib
import math

import numpy as np
import torch
import torch.nn.functional as F

from tse.ref_model import kernels, numerics
from tse.ref_model.buffers import parse_planner_tile
from tse.ref_model.errors import ConfigError
from tse.ref_model.hw_profile import DEFAULT_HW

from .model_vectors import CALIBRATION_CAP, block_tile


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
    """A block calibrated on its activations at one tile: its quantized PyTorch reference
    and the unit's integer model, each as a function of the float input [N, C, H, W]."""

    def __init__(self, block, acts: np.ndarray, tile: str, lanes: int, profile: str,
                 engine: str):
        import tse.api as api

        self.ref = api.reference(block.state_dict(), acts[:1],
                                 calibration=acts[:CALIBRATION_CAP], tile=tile,
                                 lanes=math.gcd(block.channels, lanes), profile=profile,
                                 engine=engine, **block.dialect())
        self.cfg, self.params = self.ref.cfg, self.ref.params
        self.saturated = {"tile_sums": 0, "hidden": 0, "excite": 0}

    def codes(self, x: torch.Tensor) -> np.ndarray:
        """The input codes [N, H, W, C] (the block's calibrated input qparams)."""
        p = self.params
        q = torch.quantize_per_tensor(x.float(), p.scales["input"], p.zero_points["input"],
                                      torch.quint8).int_repr().numpy()
        return np.ascontiguousarray(q.transpose(0, 2, 3, 1))

    def dequantize(self, codes_nchw: np.ndarray) -> torch.Tensor:
        p = self.params
        y = (codes_nchw.astype(np.float32) - p.zero_points["output"]) * np.float32(
            p.scales["output"])
        return torch.from_numpy(np.ascontiguousarray(y))

    def pytorch(self, x: torch.Tensor) -> torch.Tensor:
        """The eager-mode quantized reference (its engine pinned) on x."""
        from tse.quant.quantized_block import run_stages
        return self.dequantize(run_stages(self.ref.model, x.float())["output"])

    def model(self, profile: str, hw=None):
        """x -> output of the integer model with the profile; hw: the widths (legalized for
        this block as the sweep does: saturating below the safe width); saturation counts
        are added to self.saturated."""
        from tse.quant.sweep_grid import legalize

        cfg = self.cfg if hw is None else self.cfg.replace(hw=legalize(self.cfg, hw))
        try:
            ip = numerics.derive(self.params, cfg)
        except ConfigError:                 # a bias the narrow accumulator cannot hold
            cfg = cfg.replace(hw=cfg.hw.replace(saturate=True))
            ip = numerics.derive(self.params, cfg)

        def run(x: torch.Tensor) -> torch.Tensor:
            res = kernels.run(cfg, ip, self.codes(x), profile)
            for k, v in res["saturated"].items():
                self.saturated[k] = self.saturated.get(k, 0) + int(v)
            return self.dequantize(kernels.nchw(res["output"]))
        return run

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(self.cfg.profile)(x)


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


class TorchRunner:
    """A PyTorch model's logits with chosen blocks replaced (forward hooks)."""

    def __init__(self, model):
        self.model = model.eval()

    def __call__(self, x: np.ndarray, fns: dict | None = None) -> np.ndarray:
        with torch.no_grad(), replaced(self.model, fns or {}):
            return self.model(torch.from_numpy(x)).numpy()


def onnx_fns(fns: dict) -> dict:
    """Block functions on tensors as functions on numpy arrays (the ONNX runner's)."""
    return {n: (lambda a, f=f: f(torch.from_numpy(a)).numpy()) for n, f in fns.items()}


MODEL_FLOAT_TILES = ("1xW", "3xW", "7xW", "HxW")
"""Tiles of `tse network --model`'s table (the paper's Table 2 experiment; HxW is SE)."""

SWEEP_NARROWEST = {"reciprocal_bits": 24, "fc1_multiplier_bits": 16, "fc2_multiplier_bits": 20,
                   "mul_multiplier_bits": 16, "bias_frac_bits": 6, "sum_bits": 17,
                   "fc1_acc_bits": 23, "fc2_acc_bits": 22}
"""The default sweep's narrowest lossless combination (`tse sweep`, docs/sweeps.md: C=128
28x28 tile 7xW; gate 8 bits)."""
MODEL_HW_POINTS = (
    ("base", {}),
    ("narrowest", SWEEP_NARROWEST),
    ("narrowest+reciprocal_bits=8", {**SWEEP_NARROWEST, "reciprocal_bits": 8}),
    ("narrowest+gate_bits=4", {**SWEEP_NARROWEST, "gate_bits": 4}),
    ("narrowest+gate_bits=2", {**SWEEP_NARROWEST, "gate_bits": 2}),
)
"""hw points of the table at the main tile: the default preset, the sweep's narrowest and
points of its Pareto front past it (docs/sweeps.md)."""


def find(model, calibration):
    """(blocks with their calibration activations, runner) of a torch module or a model file
    (.py, torch.save'd, .onnx)."""
    from pathlib import Path

    from tse.quant import model_import

    if isinstance(model, torch.nn.Module):
        return model_import.find_blocks(model, calibration), TorchRunner(model)
    from tse import model_vectors
    found = model_vectors.find(model, calibration)
    if Path(model).suffix == ".onnx":
        from tse.quant.onnx_import import Runner
        return found, Runner(model, [b for b, _ in found if b.reason is None])
    from tse.quant.se_hooks import load_model
    return found, TorchRunner(load_model(model))


def evaluate(runner, x: np.ndarray, y: np.ndarray, fns: dict | None = None,
             batch: int = 1000) -> tuple[float, np.ndarray]:
    """(top-1, logits) of the runner on (x, y) with the block functions fns (tensor ->
    tensor, by block name)."""
    from tse.quant.onnx_import import Runner

    if fns and isinstance(runner, Runner):
        fns = onnx_fns(fns)
    logits = np.concatenate([runner(np.ascontiguousarray(x[k:k + batch]), fns)
                             for k in range(0, len(x), batch)])
    return float((logits.argmax(1) == y).mean()), logits


def report(model, calibration: np.ndarray, x: np.ndarray, y: np.ndarray, *, tile: str = "7xW",
           lanes: int = 8, profile: str = "hw", engine: str = "fbgemm", log=None,
           float_tiles=MODEL_FLOAT_TILES, hw_points=MODEL_HW_POINTS,
           progress: bool = False) -> dict:
    """Top-1 on (x, y) of every variant of the module docstring: float; float with every
    block recomputed as SE; at each tile of float_tiles and at tile: float TSE, quantized
    PyTorch, torch profile (with the count of its logits that differ from quantized
    PyTorch's), hw profile; at tile, the hw profile at each of hw_points. model: a torch
    module or a model file (.py, .pt, .onnx)."""
    from tse.quant.sweep_grid import profile_with
    from tse.quant.sweep_run import Progress

    parse_planner_tile(tile)
    tiles = list(dict.fromkeys((*float_tiles, tile)))
    for t in tiles:
        parse_planner_tile(t)
    found, runner = find(model, calibration)
    ok = [(b, a) for b, a in found if b.reason is None]
    rep = {"images": int(len(x)), "tile": tile, "tiles": tiles, "profile": profile,
           "engine": engine, "blocks": [b.describe() for b, _ in found],
           "skipped": [b.reason for b, _ in found if b.reason]}
    bar = Progress(2 + 4 * len(tiles) + len(hw_points), 0, progress, what="network")

    def top1(fns, label):
        acc, logits = evaluate(runner, x, y, fns)
        bar.step(label)
        return acc, logits

    rep["float"], _ = top1(None, "float")
    rep["float_se_recomputed"], _ = top1(
        {b.name: (lambda t, b=b: float_block(b, t, (b.height, b.width))) for b, _ in ok},
        "float SE recomputed")
    cols = {k: {} for k in ("float_tse_tiles", "quantized_pytorch_tiles",
                            "torch_profile_tiles", "hw_tiles", "torch_logits_differing")}
    units_at = {}
    for t in tiles:
        at = {b.name: parse_planner_tile(t).resolve(b.height, b.width) for b, _ in ok}
        cols["float_tse_tiles"][t], _ = top1(
            {b.name: (lambda v, b=b: float_block(b, v, at[b.name])) for b, _ in ok},
            f"float TSE {t}")
        units = units_at[t] = {b.name: IntegerBlock(b, a, block_tile(t, b.height, b.width),
                                                    lanes, profile, engine) for b, a in ok}
        if log and not progress:
            log(f"tile {t}: " + ", ".join(f"{n} calibrated, tile {u.cfg.tile}"
                                          for n, u in units.items()))
        cols["quantized_pytorch_tiles"][t], logits_q = top1(
            {n: u.pytorch for n, u in units.items()}, f"quantized PyTorch {t}")
        cols["torch_profile_tiles"][t], logits_t = top1(
            {n: u.model("torch") for n, u in units.items()}, f"torch profile {t}")
        cols["torch_logits_differing"][t] = int((logits_t != logits_q).sum())
        cols["hw_tiles"][t], _ = top1({n: u.model("hw") for n, u in units.items()},
                                      f"hw profile {t}")
        if t == tile:
            pred_q = logits_q.argmax(1)
    rep.update(cols)
    rep["float_tse"] = cols["float_tse_tiles"][tile]
    rep["quantized_pytorch"] = cols["quantized_pytorch_tiles"][tile]
    rep["integer"] = cols[f"{profile}_profile_tiles" if profile == "torch" else "hw_tiles"][tile]
    rep["hw_points"] = []
    for label, changes in hw_points:
        hw = profile_with(DEFAULT_HW, changes, f"hw point {label}")
        units = units_at[tile]
        for u in units.values():
            u.saturated = {}
        acc, logits = top1({n: u.model("hw", hw) for n, u in units.items()}, label)
        rep["hw_points"].append({
            "label": label, "changes": dict(changes), "accuracy": acc,
            "agreement": float((logits.argmax(1) == pred_q).mean()),
            "saturated": sum(sum(u.saturated.values()) for u in units.values())})
    bar.close()
    return rep


COLUMNS = (("float_tse_tiles", "float TSE"), ("quantized_pytorch_tiles", "quantized PyTorch"),
           ("torch_profile_tiles", "torch profile"), ("hw_tiles", "hw profile"))


def format_report(rep: dict) -> str:
    lines = [f"top-1 on {rep['images']} images, {len(rep['blocks'])} SE block(s) "
             f"({len(rep['skipped'])} left float), engine {rep['engine']}:",
             f"  {100 * rep['float']:6.2f} %  float (the model)",
             f"  {100 * rep['float_se_recomputed']:6.2f} %  float, SE blocks recomputed from "
             "their description",
             "  " + f"{'tile':28s}" + "".join(f"{t:>9s}" for t in rep["tiles"])]
    for key, text in COLUMNS:
        lines.append(f"  {text:28s}" + "".join(f"{100 * rep[key][t]:8.2f}%"
                                               for t in rep["tiles"]))
    lines.append(f"  {'torch logits != PyTorch':28s}" + "".join(
        f"{rep['torch_logits_differing'][t]:9d}" for t in rep["tiles"]))
    lines.append(f"  hw profile at the sweep's width points, tile {rep['tile']}:")
    for r in rep["hw_points"]:
        sat = f"  saturated {r['saturated']}" if r["saturated"] else ""
        lines.append(f"    {r['label']:30s} {100 * r['accuracy']:6.2f} %  agreement with "
                     f"quantized PyTorch {100 * r['agreement']:5.1f} %{sat}")
    lines += [f"  left float: {r}" for r in rep["skipped"]]
    return "\n".join(lines)


def format_markdown(reports: dict) -> str:
    """One markdown table of several reports (name -> report): a row per net and tile."""
    first = next(iter(reports.values()))
    points = [r["label"] for r in first["hw_points"]]
    head = (["net", "tile", "float", *(t for _, t in COLUMNS), "torch logits != PyTorch"]
            + [f"hw {p}" for p in points])
    lines = ["| " + " | ".join(head) + " |",
             "| " + " | ".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + " |"]
    pct = lambda v: f"{100 * v:.2f} %"            # noqa: E731
    for name, rep in reports.items():
        hw = {r["label"]: r["accuracy"] for r in rep["hw_points"]}
        for t in rep["tiles"]:
            row = [name, t, pct(rep["float"]), *(pct(rep[k][t]) for k, _ in COLUMNS),
                   str(rep["torch_logits_differing"][t])]
            row += [pct(hw[p]) if t == rep["tile"] else "" for p in points]
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
