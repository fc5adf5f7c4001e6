"""The digits CNN of tse.quant.network with ECA or SRM blocks, or TSE blocks with the paper's
3x1 excite, instead of SE (issue 18).

Owns those float networks, their training (network.RECIPE, same seed and data; the 3x1
network trained with its blocks at TRAIN_TILE, 1xW: the paper's TSE_1xW C_3x1, since a
whole-frame tile would leave the outer taps untrained) and their weight caches
(tse/quant/data/digits_{eca,srm,se3x1}_cnn.pt), and their report (`tse network --block
eca|srm`, `tse network --excite-kernel 3x1`): the trained block, every block tiled as a row
strip without retraining, quantized PyTorch (tse.quant.attention_quantized's blocks inside
the quantized network), the torch profile (tse.ref_model.attention_numerics, every block
replaced) and the hw profile at every point of the block's width grid
(tse.ref_model.attention_vectors.build: the kernels the golden vectors come from). The
same rows as network.report for SE.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tse.ref_model.config import TSEConfig
from tse.ref_model.errors import ConfigError, InputError
from tse.ref_model.hw_profile import DEFAULT_HW, HwProfile

from . import network, sweep_grid
from .attention_blocks import TiledECA, TiledSRM
from .attention_quantized import (QuantECA, QuantSRM, excite3x1_params, extract_eca_params,
                                  extract_srm_params)
from .float_block import TSE

BLOCKS = ("eca", "srm", "se3x1")
"""The networks: ECA, SRM, and SE with the 3x1 excite (se3x1)."""
TRAIN_TILE = {"eca": "HxW", "srm": "HxW", "se3x1": "1xW"}
"""The blocks' tile in training (and in the cached weights' float row)."""
NAMES = {"eca": "ECA", "srm": "SRM", "se3x1": "TSE 3x1-excite"}
DATA_DIR = network.WEIGHTS.parent


def weights_path(block: str) -> Path:
    check_block(block)
    return DATA_DIR / f"digits_{block}_cnn.pt"


def check_block(block: str) -> None:
    if block not in BLOCKS:
        raise ConfigError(f"block: {block!r} is not allowed; allowed: {', '.join(BLOCKS)}")


def recipe(block: str) -> dict:
    """network.RECIPE with this block's architecture name (the cache's key) and, where it
    is not the whole frame, its training tile."""
    extra = {} if TRAIN_TILE[block] == "HxW" else {"tile": TRAIN_TILE[block]}
    return {**network.RECIPE, "arch": f"digits-{block}-cnn-v1", **extra}


class DigitsAttentionNet(network.DigitsSENet):
    """The digits CNN with ECA (adaptive k), SRM or 3x1-excite TSE blocks of `tile` (None:
    TRAIN_TILE, as trained)."""

    def __init__(self, block: str, tile: str | None = None):
        check_block(block)
        self.block = block
        super().__init__(tile or TRAIN_TILE[block])

    def _se(self, channels, kernel):
        if self.block == "se3x1":
            return TSE(channels, kernel, network.REDUCTION, excite_kernel="3x1")
        return TiledECA(channels, kernel) if self.block == "eca" else TiledSRM(channels, kernel)


def train(block: str, data: network.Data) -> DigitsAttentionNet:
    """Train the float network with the SE network's recipe (seeded, one thread)."""
    return network.train(data, recipe(block), build=lambda: DigitsAttentionNet(block))


def load_or_train(block: str, path=None, data: network.Data | None = None,
                  retrain: bool = False, log=None) -> tuple[DigitsAttentionNet, dict]:
    """The trained float network and its metadata, from the cache when it holds this
    block's recipe, else trained now and written there."""
    path = Path(path) if path else weights_path(block)
    r = recipe(block)
    if path.is_file() and not retrain:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:              # noqa: BLE001 (any unreadable file)
            raise InputError(f"weights: {str(path)!r} is not a readable weight cache "
                             f"({type(e).__name__}); allowed: a file written by tse network, "
                             "or --retrain") from None
        meta = blob.get("meta", {}) if isinstance(blob, dict) else {}
        if meta.get("recipe") == r:
            model = DigitsAttentionNet(block)
            model.load_state_dict(blob["state_dict"])
            return model.eval(), meta
    data = data or network.load_data()
    if log:
        log(f"training the digits CNN with {NAMES[block]} blocks ({r['epochs']} epochs, seed "
            f"{r['seed']})")
    t0 = time.perf_counter()
    model = train(block, data)
    meta = {"recipe": r, "torch": str(torch.__version__),
            "train_seconds": round(time.perf_counter() - t0, 1),
            "float_test_accuracy": network.accuracy(model, data.x_test, data.y_test)}
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "meta": meta}, path)
    return model, meta


def with_tile(model: DigitsAttentionNet, tile: str) -> DigitsAttentionNet:
    """The same weights with every block tiled (no retraining)."""
    other = DigitsAttentionNet(model.block, tile)
    other.load_state_dict(model.state_dict())
    return other.eval()


def float_rows(block: str, tiles=network.FLOAT_TILES, weights=None, retrain=False,
               log=None, model: DigitsAttentionNet | None = None,
               data: network.Data | None = None) -> list[dict]:
    """Top-1 on the test split of the trained float network and of every tiled variant
    (model, data: already loaded)."""
    data = data or network.load_data()
    if model is None:
        model, _ = load_or_train(block, weights, data, retrain, log)
    with network.threads(1):
        rows = [{"variant": f"float {NAMES[block]}" + (
            "" if TRAIN_TILE[block] == "HxW" else f" {TRAIN_TILE[block]} (as trained)"),
                 "tile": TRAIN_TILE[block],
                 "accuracy": network.accuracy(model, data.x_test, data.y_test)}]
        for t in tiles:
            rows.append({"variant": f"float {NAMES[block]} tiled {t} (no retraining)",
                         "tile": t, "accuracy": network.accuracy(with_tile(model, t),
                                                                 data.x_test, data.y_test)})
    return rows


# =====================================================================================
# Quantized network, its blocks through the models, the report
# =====================================================================================

class InNetwork:
    """A quantized ECA / SRM block inside the network (the 3x1 excite's: network.NetworkSE):
    its input comes quantized (the preceding conv's output) and its output stays quantized,
    so its own stubs at the ends are identities; `replace` may hold the bit-accurate model
    instead (q -> q)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.quant, self.dequant = nn.Identity(), nn.Identity()
        self.replace = None

    def forward(self, q):
        return self.replace(q) if self.replace is not None else self.stages(q)["output"]


class NetworkECA(InNetwork, QuantECA):
    pass


class NetworkSRM(InNetwork, QuantSRM):
    pass


class QuantDigitsAttentionNet(network.QuantDigitsSENet):
    """The quantizable ECA / SRM / 3x1-excite network (network.quantize(..., net=this))."""

    def __init__(self, block: str, tile: str = "HxW"):
        check_block(block)
        self.block = block
        super().__init__(tile)

    def _se(self, channels, kernel):
        if self.block == "se3x1":
            return network.NetworkSE(channels, kernel, network.REDUCTION, excite_kernel="3x1")
        return (NetworkECA if self.block == "eca" else NetworkSRM)(channels, kernel)

    def block_fuse(self) -> list[list[str]]:
        """SRM's channel FC with its batch norm (folded); the 3x1 excite's fc1 with its ReLU,
        as SE's; ECA fuses nothing."""
        if self.block == "srm":
            return [[f"{name}.cfc", f"{name}.bn"] for name, *_ in network.SE_LAYERS]
        if self.block == "se3x1":
            return super().block_fuse()
        return []


def quantize(model: DigitsAttentionNet, calibration: torch.Tensor, engine: str,
             tile: str) -> QuantDigitsAttentionNet:
    q = network.quantize(model, calibration, engine, tile,
                         net=QuantDigitsAttentionNet(model.block, tile))
    for name, *_ in network.SE_LAYERS:     # the blocks' own stages run on the net's engine
        getattr(q, name).engine = engine
    return q


@dataclass
class AttentionBlock:
    """One quantized ECA / SRM block of the network in ref_model's form."""

    name: str
    cfg: TSEConfig                 # base configuration (hw = DEFAULT_HW)
    quant: object                  # EcaQuantParams or SrmQuantParams
    module: nn.Module = field(repr=False)


def extract_blocks(q: QuantDigitsAttentionNet, probe: torch.Tensor) -> list[AttentionBlock]:
    """Every block's torch-free parameters (read on its input in a probe run) and config."""
    from .quantized_block import engine as use_engine
    from .quantized_block import quiet

    inputs = network.block_inputs(q, probe)
    blocks = []
    for name, c, h, w in network.SE_LAYERS:
        mod = getattr(q, name)
        extract = {"eca": extract_eca_params, "srm": extract_srm_params,
                   "se3x1": excite3x1_params}[q.block]
        with quiet(), use_engine(q.engine):
            quant = extract(mod, inputs[name])
        extra = ({"eca_kernel": mod.conv.kernel_size[0], "block": "eca"} if q.block == "eca"
                 else {"excite_kernel": "3x1", "reduction": network.REDUCTION}
                 if q.block == "se3x1" else {"block": q.block})
        cfg = TSEConfig(channels=c, height=h, width=w,
                        tile=network.tile_text(mod.kernel, h, w),
                        lanes=8 if c % 8 == 0 else 1, engine=q.engine, hw=DEFAULT_HW, **extra)
        blocks.append(AttentionBlock(name, cfg, quant, mod))
    return blocks


def _replacement(cfg: TSEConfig, quant, profile: str):
    """q -> q: the block's output codes from the torch profile (attention_numerics) or the
    hw profile (attention_vectors.build, the vectors' kernels), with PyTorch's output qparams."""
    from tse.ref_model import attention_numerics as an
    from tse.ref_model import attention_vectors

    tile = (cfg.tile_rows, cfg.tile_cols)
    three = cfg.excite_kernel == "3x1"
    scale, zero_point = ((quant.out_scale, quant.out_zp) if three
                         else (quant.scales["output"], quant.zero_points["output"]))

    def run(q):
        x = q.int_repr().numpy()
        if profile == "torch" and three:
            out = an.excite3x1_stages(x, tile, quant)["output"]
        elif profile == "torch":
            prepare, stages = ((an.prepare_eca, an.eca_stages) if cfg.block == "eca"
                               else (an.prepare_srm, an.srm_stages))
            out = stages(x, tile, prepare(quant))["output"]
        else:
            out = np.moveaxis(attention_vectors.build(
                cfg, quant, np.ascontiguousarray(np.moveaxis(x, 1, -1)))["output"], -1, 1)
        return torch._make_per_tensor_quantized_tensor(
            torch.from_numpy(np.ascontiguousarray(out)), scale, zero_point)
    return run


def model_predict(q: QuantDigitsAttentionNet, blocks: list[AttentionBlock], x: torch.Tensor,
                  profile: str, hw: HwProfile | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and logits with every block replaced by the model (profile "torch" or
    "hw"; hw: the widths, legalized per block as the sweep does)."""
    fns = {}
    for b in blocks:
        cfg = b.cfg if hw is None else b.cfg.replace(hw=sweep_grid.legalize(b.cfg, hw))
        fns[b.name] = _replacement(cfg, b.quant, profile)
    return network.predict_replaced(q, fns, x)


def report(block: str, grid: sweep_grid.Grid | None = None, *, engine: str = "fbgemm",
           tile: str = network.DEFAULT_TILE, float_tiles=network.FLOAT_TILES, weights=None,
           retrain: bool = False, quick: bool = False, progress: bool = True,
           log=None) -> dict:
    """Top-1 of every variant (module docstring) on the test split: network.report's rows."""
    from .sweep import Progress

    t0 = time.perf_counter()
    check_block(block)
    for t in (tile, *float_tiles):
        network.layer_tile(t, 8, 8)
    kind = "excite3x1" if block == "se3x1" else block
    grid = grid if grid is not None else sweep_grid.load_grid(block=kind)
    if grid.block != kind:
        raise ConfigError(f"grid: {grid.source} was checked for block = {grid.block!r}; "
                          f"allowed: a grid of the {kind} block's widths")
    data = network.load_data()
    model, meta = load_or_train(block, weights, data, retrain, log)
    name = NAMES[block]
    xt, yt = data.x_test, data.y_test.numpy()
    rows = float_rows(block, float_tiles, weights, retrain, log, model=model, data=data)
    calib = data.x_train[:network.CALIBRATION_IMAGES]
    preds = {}
    for t in dict.fromkeys((TRAIN_TILE[block], tile)):
        q = quantize(model, calib, engine, t)
        preds[t], logits_q = network.quantized_predict(q, xt)
        rows.append({"variant": f"quantized PyTorch ({engine}) {name} {t}", "tile": t,
                     "accuracy": float((preds[t] == yt).mean())})
    pred_q = preds[tile]
    blocks = extract_blocks(q, xt)
    pred_t, logits_t = model_predict(q, blocks, xt, "torch")
    rows.append({"variant": f"torch profile (model), {name} {tile}", "tile": tile,
                 "accuracy": float((pred_t == yt).mean()),
                 "agreement": float((pred_t == pred_q).mean()),
                 "logits_equal_pytorch": bool(np.array_equal(logits_t, logits_q))})
    pts = network.network_points(grid, quick)
    bar = Progress(len(pts), 0, progress, what="network")
    hw_rows = []
    for label, axis, value, hw in pts:
        pred, _ = model_predict(q, blocks, xt, "hw", hw)
        widths = {k: v for k, v in hw.to_dict().items() if k not in ("saturate", "exact_mean")}
        hw_rows.append({"label": label, "axis": axis, "value": "" if value is None else value,
                        **widths, "accuracy": float((pred == yt).mean()),
                        "agreement": float((pred == pred_q).mean())})
        bar.step(label)
    bar.close()
    quant_acc = float((pred_q == yt).mean())
    base = next(r for r in hw_rows if r["label"] == "base")
    return {"network": f"digits CNN with {name} blocks (conv 16, block, conv 32, block, pool, "
                       "conv 64, block, linear)", "block": block, "block_name": name,
            "blocks": [{"name": b.name, "channels": b.cfg.channels,
                        "shape": [b.cfg.height, b.cfg.width], "tile": b.cfg.tile,
                        **({"eca_kernel": b.cfg.eca_taps} if block == "eca" else {})}
                       for b in blocks],
            "engine": engine, "tile": tile, "test_images": int(len(yt)),
            "weights": str(weights or weights_path(block)), "meta": meta, "rows": rows,
            "quantized_accuracy": quant_acc, "hw_base_accuracy": base["accuracy"],
            "hw_points": hw_rows, "narrowest": network.narrowest(hw_rows, quant_acc),
            "grid": grid.source, "seconds": round(time.perf_counter() - t0, 1)}
