"""Accuracy on a trained network: a small CNN with SE blocks on scikit-learn's digits.

Layer-level error is not what users care about in the end, so this module measures top-1
accuracy of a real (small) network whose every SE block goes through the models of this
project:

    float SE                     the trained network
    float TSE kxW                each SE replaced by a row-strip TSE, no retraining (the
                                 paper's Table 2 experiment), for several tile heights
    quantized PyTorch            eager-mode post-training quantization (fbgemm or qnnpack),
                                 with SE and with the TSE tile the hw model runs
    torch profile                every quantized SE/TSE block replaced by ref_model's torch
                                 profile (bit-accurate: the same predictions as PyTorch)
    hw profile, each point       every block replaced by the hw profile at a sweep point

Data: scikit-learn's digits (1797 8x8 images, 10 classes; it ships inside the package, so
nothing is downloaded), a stratified, seeded 80/20 split. The network: conv 1->16, SE, conv
16->32, SE, max pool, conv 32->64, SE, global average pool, linear 64->10; every conv 3x3 with
ReLU, every SE with reduction 4 (tse.quant.float_block.TSE with the whole frame as its tile).
Training is seeded (CPU, a few seconds); the trained weights are cached in
tse/quant/data/digits_se_cnn.pt with the recipe they came from, so tests and reports do not
retrain (load_or_train).

Long: data, network, training, quantization, extraction of every block's parameters and the
report are one experiment read top to bottom; the per-dialect networks of issue 17 will split it
(data set and training apart from the evaluation).
"""
from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.ao import quantization as tq

from tse.ref_model import kernels
from tse.ref_model.config import TSEConfig, parse_tile
from tse.ref_model.errors import ConfigError, InputError
from tse.ref_model.hw_profile import DEFAULT_HW, HwProfile
from tse.ref_model.params import ACTIVATIONS, QuantParams

from . import engine_probe, sweep, sweep_grid
from .float_block import TSE
from .quantized_block import QuantSE
from .quantized_block import engine as use_engine
from .quantized_block import quiet

WEIGHTS = Path(__file__).with_name("data") / "digits_se_cnn.pt"
RECIPE = {"arch": "digits-se-cnn-v1", "seed": 0, "epochs": 40, "batch": 64, "lr": 3e-3,
          "weight_decay": 1e-4, "test_fraction": 0.2, "threads": 1}
"""How the cached weights were trained; a cache with another recipe is retrained."""
SE_LAYERS = (("se1", 16, 8, 8), ("se2", 32, 8, 8), ("se3", 64, 4, 4))
"""(name, channels, height, width) of the network's SE blocks."""
REDUCTION = 4
CALIBRATION_IMAGES = 256
FLOAT_TILES = ("1xW", "2xW", "4xW")
DEFAULT_TILE = "2xW"


# =====================================================================================
# Data
# =====================================================================================

@dataclass
class Data:
    x_train: torch.Tensor      # float32 [N, 1, 8, 8] in [0, 1]
    y_train: torch.Tensor      # int64 [N]
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_data(seed: int = RECIPE["seed"], test_fraction: float = RECIPE["test_fraction"]) -> Data:
    """scikit-learn's digits (shipped with the package), split stratified and seeded."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None]
    y = digits.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed,
                                          stratify=y)
    t = torch.from_numpy
    return Data(t(np.ascontiguousarray(xtr)), t(ytr), t(np.ascontiguousarray(xte)), t(yte))


# =====================================================================================
# The network: float, with TSE, quantizable
# =====================================================================================

def layer_tile(spec: str, height: int, width: int) -> tuple[int, int]:
    """A tile spec ("2xW", "HxW", "2x2") for one layer; rows or columns beyond the frame
    are the whole frame (a 4-row strip of a 4-row map is plain SE)."""
    import re
    m = re.fullmatch(r"\s*(\d+|H)\s*[xX]\s*(\d+|W)\s*", spec) if isinstance(spec, str) else None
    if not m or m[1] == "0" or m[2] == "0":
        raise ConfigError(f"tile: {spec!r} is not allowed; allowed: '<rows>x<cols>' with "
                          "positive integers, H or W, e.g. '2xW', 'HxW', '2x2'")
    rows = height if m[1] == "H" else min(int(m[1]), height)
    cols = width if m[2] == "W" else min(int(m[2]), width)
    return rows, cols


def tile_text(kernel, height, width) -> str:
    return f"{'H' if kernel[0] == height else kernel[0]}x{'W' if kernel[1] == width else kernel[1]}"


class DigitsSENet(nn.Module):
    """The float network; tile: the SE blocks' tile ("HxW": SE, as trained)."""

    def __init__(self, tile: str = "HxW"):
        super().__init__()
        self.tile = tile
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.relu2 = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.relu3 = nn.ReLU()
        for name, c, h, w in SE_LAYERS:
            setattr(self, name, self._se(c, layer_tile(tile, h, w)))
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, 10)

    def _se(self, channels, kernel):
        return TSE(channels, kernel, REDUCTION)

    def features(self, x):
        x = self.se1(self.relu1(self.conv1(x)))
        x = self.pool(self.se2(self.relu2(self.conv2(x))))
        return self.se3(self.relu3(self.conv3(x)))

    def forward(self, x):
        return self.fc(torch.flatten(self.gap(self.features(x)), 1))


class NetworkSE(QuantSE):
    """A quantizable TSE block inside the network (its input is already quantized). After
    convert, `replace` may hold a function q -> q that computes the block instead (the
    bit-accurate model); stages(q) gives every quantized intermediate."""

    def __init__(self, channels, kernel, reduction, **dialect):
        super().__init__(channels, kernel, reduction, **dialect)
        self.replace = None

    def forward(self, q):
        if self.replace is not None:
            return self.replace(q)
        return self.stages(q)["output"]


class QuantDigitsSENet(DigitsSENet):
    """The quantizable network (quant and dequant stubs, QuantSE blocks)."""

    def __init__(self, tile: str = "HxW"):
        super().__init__(tile)
        self.quant = tq.QuantStub()
        self.dequant = tq.DeQuantStub()
        self.engine = None

    def _se(self, channels, kernel):
        return NetworkSE(channels, kernel, REDUCTION)

    def block_fuse(self) -> list[list[str]]:
        """The blocks' modules eager mode fuses (each block's fc1 with its ReLU)."""
        return [[f"{name}.conv1", f"{name}.relu"] for name, *_ in SE_LAYERS]

    def forward(self, x):
        q = self.quant(x)
        y = self.fc(torch.flatten(self.gap(self.features(q)), 1))
        return self.dequant(y)


# =====================================================================================
# Training and the weight cache
# =====================================================================================

@contextlib.contextmanager
def threads(n: int = 1):
    """torch on n threads: the network is tiny, and more threads on a shared machine only
    contend (one thread also keeps training bit-reproducible)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(data: Data, recipe: dict = RECIPE, epochs: int | None = None,
          build=DigitsSENet) -> DigitsSENet:
    """Train the float network on the training split, seeded and reproducible; build()
    makes it after the seed is set (default the SE network; tse.quant.network_attention
    passes its ECA / SRM / 3x1-excite networks)."""
    epochs = recipe["epochs"] if epochs is None else epochs
    with threads(recipe["threads"]):
        return _train(data, recipe, epochs, build)


def _train(data, recipe, epochs, build):
    torch.manual_seed(recipe["seed"])
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"],
                           weight_decay=recipe["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, epochs))
    gen = torch.Generator().manual_seed(recipe["seed"] + 1)
    n = data.x_train.shape[0]
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        for k in range(0, n, recipe["batch"]):
            idx = order[k:k + recipe["batch"]]
            opt.zero_grad()
            loss_fn(model(data.x_train[idx]), data.y_train[idx]).backward()
            opt.step()
        sched.step()
    return model.eval()


def load_or_train(path=WEIGHTS, data: Data | None = None, retrain: bool = False,
                  log=None) -> tuple[DigitsSENet, dict]:
    """The trained float network and its metadata: from the cache when it holds weights of
    this recipe, else trained now and written to the cache."""
    path = Path(path)
    if path.is_file() and not retrain:
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:              # noqa: BLE001 (any unreadable file)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise InputError(f"weights: {str(path)!r} is not a readable weight cache ({first}); "
                             "allowed: a file written by tse network, or --retrain") from None
        meta = blob.get("meta", {}) if isinstance(blob, dict) else {}
        if meta.get("recipe") == RECIPE:
            model = DigitsSENet()
            model.load_state_dict(blob["state_dict"])
            return model.eval(), meta
    data = data or load_data()
    if log:
        log(f"training the digits SE-CNN ({RECIPE['epochs']} epochs, seed {RECIPE['seed']})")
    t0 = time.perf_counter()
    model = train(data)
    meta = {"recipe": dict(RECIPE), "torch": str(torch.__version__),
            "train_seconds": round(time.perf_counter() - t0, 1),
            "float_test_accuracy": accuracy(model, data.x_test, data.y_test),
            "train_images": int(data.x_train.shape[0]), "test_images": int(data.x_test.shape[0])}
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "meta": meta}, path)
    return model, meta


def with_tile(model: DigitsSENet, tile: str) -> DigitsSENet:
    """The same weights with every SE block replaced by a TSE of this tile (no retraining)."""
    other = DigitsSENet(tile)
    other.load_state_dict(model.state_dict())
    return other.eval()


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    return model(x).argmax(1).numpy()


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((predict(model, x) == y.numpy()).mean())


# =====================================================================================
# Quantization and the bit-accurate blocks
# =====================================================================================

def quantize(model: DigitsSENet, calibration: torch.Tensor, engine_name: str = "fbgemm",
             tile: str = "HxW", net: QuantDigitsSENet | None = None) -> QuantDigitsSENet:
    """Eager-mode post-training quantization of the float network with its SE blocks as
    TSE blocks of `tile`, calibrated on the given images; net: the quantizable network to
    load the weights into (default QuantDigitsSENet(tile); the ECA / SRM networks pass theirs)."""
    if engine_name not in ("fbgemm", "qnnpack"):
        raise ConfigError(f"engine: {engine_name!r} is not allowed; allowed: fbgemm, qnnpack")
    q = net if net is not None else QuantDigitsSENet(tile)
    q.load_state_dict(model.state_dict())
    q.eval()
    fuse = [["conv1", "relu1"], ["conv2", "relu2"], ["conv3", "relu3"]] + q.block_fuse()
    with quiet(), use_engine(engine_name):
        tq.fuse_modules(q, fuse, inplace=True)
        q.qconfig = tq.get_default_qconfig(engine_name)
        tq.prepare(q, inplace=True)
        with torch.no_grad():
            q(calibration)
        tq.convert(q, inplace=True)
    q.engine = engine_name
    return q


@torch.no_grad()
def quantized_predict(q: QuantDigitsSENet, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, logits) of the quantized network, on its engine."""
    with quiet(), use_engine(q.engine):
        logits = q(x)
    return logits.argmax(1).numpy(), logits.numpy()


@dataclass
class Block:
    """One quantized SE/TSE block of the network in ref_model's form."""

    name: str
    cfg: TSEConfig                 # base configuration (hw = DEFAULT_HW)
    params: QuantParams
    module: QuantSE = field(repr=False)


def block_inputs(q: QuantDigitsSENet, probe: torch.Tensor) -> dict:
    """name -> the quantized input of each block on the probe's first image (its qparams
    are the preceding conv's)."""
    inputs = {}
    hooks = [getattr(q, name).register_forward_pre_hook(
        lambda m, args, name=name: inputs.setdefault(name, args[0]))
        for name, *_ in SE_LAYERS]
    try:
        quantized_predict(q, probe[:1])
    finally:
        for h in hooks:
            h.remove()
    return inputs


def extract_blocks(q: QuantDigitsSENet, probe: torch.Tensor) -> list[Block]:
    """QuantParams of every block, read from a probe run."""
    inputs = block_inputs(q, probe)
    blocks = []
    for name, c, h, w in SE_LAYERS:
        mod = getattr(q, name)
        with quiet(), use_engine(q.engine), torch.no_grad():
            st = mod.stages(inputs[name])
        scales = {r: float(st[r].q_scale()) for r in ACTIVATIONS}
        zps = {r: int(st[r].q_zero_point()) for r in ACTIVATIONS}

        def weight(conv):
            wq = conv.weight()
            per_channel = wq.qscheme() in (torch.per_channel_symmetric,
                                           torch.per_channel_affine)
            if per_channel:
                scale = wq.q_per_channel_scales().numpy().astype(np.float64)
            else:
                scale = np.full(wq.shape[0], wq.q_scale(), np.float64)
            codes = wq.int_repr().numpy().reshape(wq.shape[0], wq.shape[1]).astype(np.int8)
            return codes, scale, conv.bias().detach().numpy().astype(np.float32), per_channel

        w1, s1, b1, pc1 = weight(mod.conv1)
        w2, s2, b2, pc2 = weight(mod.conv2)
        params = QuantParams(engine=q.engine, scales=scales, zero_points=zps, w1=w1,
                             w1_scale=s1, b1=b1, w2=w2, w2_scale=s2, b2=b2,
                             per_channel=pc1 and pc2,
                             pair_saturation=engine_probe.pair_saturation(q.engine))
        lanes = 8 if c % 8 == 0 else 1
        cfg = TSEConfig(channels=c, height=h, width=w, tile=tile_text(mod.kernel, h, w),
                        reduction=REDUCTION, lanes=lanes, engine=q.engine, hw=DEFAULT_HW)
        blocks.append(Block(name, cfg, params, mod))
    return blocks


def _replacement(cfg: TSEConfig, ip, profile: str, scale: float, zero_point: int,
                 saturated: dict):
    """q -> q: the block computed by tse.ref_model.kernels on the input codes, its output codes
    with the PyTorch block's output qparams; saturation counts added to `saturated`."""
    def run(q):
        res = kernels.run(cfg, ip, kernels.nhwc(q.int_repr().numpy()), profile)
        for k, v in res["saturated"].items():
            saturated[k] += v
        out = torch.from_numpy(kernels.nchw(res["output"]))
        return torch._make_per_tensor_quantized_tensor(out, scale, zero_point)
    return run


def model_predict(q: QuantDigitsSENet, blocks: list[Block], x: torch.Tensor, profile: str,
                  hw: HwProfile | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Predictions and logits of the quantized network with every block replaced by the
    bit-accurate model (profile "torch" or "hw"; hw: the widths, legalized per block as
    the sweep does), and the blocks' summed saturation counts."""
    from tse.ref_model import numerics
    sat = {"tile_sums": 0, "hidden": 0, "excite": 0}
    fns = {}
    for b in blocks:
        cfg = b.cfg
        if hw is not None:
            cfg = cfg.replace(hw=sweep.legalize(cfg, hw))
        try:
            ip = numerics.derive(b.params, cfg)
        except ConfigError:
            cfg = cfg.replace(hw=cfg.hw.replace(saturate=True))
            ip = numerics.derive(b.params, cfg)
        fns[b.name] = _replacement(cfg, ip, profile, b.params.scales["output"],
                                   b.params.zero_points["output"], sat)
    pred, logits = predict_replaced(q, fns, x)
    return pred, logits, sat


def predict_replaced(q: QuantDigitsSENet, replacements: dict, x: torch.Tensor):
    """(predictions, logits) of the quantized network with each block named in
    replacements computed by its function (q -> q) instead."""
    try:
        for name, fn in replacements.items():
            getattr(q, name).replace = fn
        return quantized_predict(q, x)
    finally:
        for name in replacements:
            getattr(q, name).replace = None


# =====================================================================================
# The report
# =====================================================================================

def network_points(grid: sweep.Grid, quick: bool = False) -> list[tuple[str, str, object, HwProfile]]:
    """(label, axis, value, hw) of the grid's points around DEFAULT_HW (not yet legalized:
    each block sets saturate and exact_mean for its own shape, sweep.legalize); quick: base
    and widest only."""
    out, seen = [], set()
    for label, changes in sweep_grid.raw_points(grid, DEFAULT_HW):
        if quick and label not in ("base", "widest"):
            continue
        hw = sweep_grid.profile_with(DEFAULT_HW, changes, f"{grid.source}: {label}")
        key = json.dumps(hw.to_dict(), sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        axis, value = "", None
        if grid.mode == "axes" and len(changes) == 1:
            axis, value = next(iter(changes.items()))
        out.append((label, axis, value, hw))
    return out


def report(grid: sweep.Grid | None = None, *, engine: str = "fbgemm",
           tile: str = DEFAULT_TILE, float_tiles=FLOAT_TILES, weights=WEIGHTS,
           retrain: bool = False, quick: bool = False, progress: bool = True,
           log=None) -> dict:
    """Top-1 accuracy of every variant (module docstring) on the test split."""
    t0 = time.perf_counter()
    layer_tile(tile, 8, 8)
    for t in float_tiles:
        layer_tile(t, 8, 8)
    data = load_data()
    model, meta = load_or_train(weights, data, retrain=retrain, log=log)
    xt, yt = data.x_test, data.y_test.numpy()
    rows = [{"variant": "float SE", "tile": "HxW", "accuracy": accuracy(model, xt, data.y_test)}]
    for t in float_tiles:
        rows.append({"variant": f"float TSE {t} (no retraining)", "tile": t,
                     "accuracy": accuracy(with_tile(model, t), xt, data.y_test)})
    calib = data.x_train[:CALIBRATION_IMAGES]
    q_se = quantize(model, calib, engine, "HxW")
    pred_se, _ = quantized_predict(q_se, xt)
    rows.append({"variant": f"quantized PyTorch ({engine}) SE", "tile": "HxW",
                 "accuracy": float((pred_se == yt).mean())})
    q = quantize(model, calib, engine, tile) if tile != "HxW" else q_se
    pred_q, logits_q = quantized_predict(q, xt) if q is not q_se else (pred_se, None)
    if q is not q_se:
        rows.append({"variant": f"quantized PyTorch ({engine}) TSE {tile}", "tile": tile,
                     "accuracy": float((pred_q == yt).mean())})
    blocks = extract_blocks(q, xt)
    pred_t, logits_t, _ = model_predict(q, blocks, xt, "torch")
    if logits_q is None:
        _, logits_q = quantized_predict(q, xt)
    torch_equal = bool(np.array_equal(logits_t, logits_q))
    rows.append({"variant": f"torch profile (model), TSE {tile}", "tile": tile,
                 "accuracy": float((pred_t == yt).mean()),
                 "agreement": float((pred_t == pred_q).mean()),
                 "logits_equal_pytorch": torch_equal})
    grid = grid if grid is not None else sweep.load_grid()
    pts = network_points(grid, quick)
    bar = sweep.Progress(len(pts), 0, progress, what="network")
    hw_rows = []
    for label, axis, value, hw in pts:
        pred, _, sat = model_predict(q, blocks, xt, "hw", hw)
        widths = {k: v for k, v in hw.to_dict().items() if k not in ("saturate", "exact_mean")}
        hw_rows.append({"label": label, "axis": axis, "value": "" if value is None else value,
                        **widths, "accuracy": float((pred == yt).mean()),
                        "agreement": float((pred == pred_q).mean()),
                        **{f"saturated_{k}": v for k, v in sat.items()}})
        bar.step(label)
    bar.close()
    quant_acc = float((pred_q == yt).mean())
    base = next(r for r in hw_rows if r["label"] == "base")
    return {"network": "digits SE-CNN (conv 16, SE, conv 32, SE, pool, conv 64, SE, linear)",
            "blocks": [{"name": b.name, "channels": b.cfg.channels,
                        "shape": [b.cfg.height, b.cfg.width], "tile": b.cfg.tile}
                       for b in blocks],
            "engine": engine, "tile": tile, "test_images": int(len(yt)),
            "weights": str(weights), "meta": meta, "rows": rows,
            "quantized_accuracy": quant_acc, "hw_base_accuracy": base["accuracy"],
            "hw_points": hw_rows, "narrowest": narrowest(hw_rows, quant_acc),
            "seconds": round(time.perf_counter() - t0, 1)}


def narrowest(hw_rows, reference_acc) -> dict:
    """width axis -> {"accuracy": the narrowest width whose accuracy (and every wider
    one's, the base included) stays at or above the quantized PyTorch network's,
    "agreement": the narrowest whose predictions (and every wider one's) all equal the
    quantized network's}; None where not even the widest does."""
    base = next((r for r in hw_rows if r["label"] == "base"), None)
    axes = {}
    for r in hw_rows:
        if r["axis"] and isinstance(r["value"], int) and not isinstance(r["value"], bool):
            axes.setdefault(r["axis"], {})[r["value"]] = r
    out = {}
    for axis, by_value in axes.items():
        fields = sweep_grid.fields_of(axis)
        if base is not None:
            by_value.setdefault(base[fields[0]], base)
        res = {}
        for key, ok_fn in (("accuracy", lambda r: r["accuracy"] >= reference_acc),
                           ("agreement", lambda r: r["agreement"] == 1.0)):
            ok = None
            for v in sorted(by_value, reverse=True):
                if not ok_fn(by_value[v]):
                    break
                ok = v
            res[key] = ok
        out[axis] = res
    return out


def format_report(rep: dict) -> str:
    lines = [f"network: {rep['network']}, {rep['test_images']} test images "
             f"(scikit-learn digits), engine {rep['engine']}",
             "  blocks: " + ", ".join(f"{b['name']} C={b['channels']} "
                                      f"{b['shape'][0]}x{b['shape'][1]} tile {b['tile']}"
                                      for b in rep["blocks"]),
             f"  {'variant':48s} {'top-1':>8s}"]
    for r in rep["rows"]:
        extra = ""
        if "agreement" in r:
            extra = (f"  (predictions equal to quantized PyTorch: {100 * r['agreement']:.1f} %, "
                     f"logits {'bit-identical' if r['logits_equal_pytorch'] else 'differ'})")
        lines.append(f"  {r['variant']:48s} {100 * r['accuracy']:7.2f} %{extra}")
    kind = rep.get("block_name", "TSE")
    lines.append(f"  hw profile (model, every block replaced), {kind} {rep['tile']}, "
                 f"{len(rep['hw_points'])} points:")
    shown = [r for r in rep["hw_points"] if r["label"] in ("base", "widest")]
    shown += [r for r in rep["hw_points"] if r["label"] not in ("base", "widest")]
    for r in shown:
        sat = sum(r[k] for k in r if k.startswith("saturated_"))
        lines.append(f"    {r['label']:46s} {100 * r['accuracy']:7.2f} %  agreement "
                     f"{100 * r['agreement']:5.1f} %" + (f"  saturated {sat}" if sat else ""))
    if rep["narrowest"]:
        lines.append("  narrowest width, the others at the default, keeping (a) the quantized "
                     f"PyTorch accuracy ({100 * rep['quantized_accuracy']:.2f} %), (b) every "
                     "prediction of the quantized network:")
        for a, v in rep["narrowest"].items():
            fmt = lambda x: "none" if x is None else str(x)      # noqa: E731
            lines.append(f"    {a:22s} (a) {fmt(v['accuracy']):>5s}   (b) {fmt(v['agreement']):>5s}")
    return "\n".join(lines)


def write_report(rep: dict, out_dir) -> dict:
    """network.json (everything) and network.csv (one row per hw point)."""
    import csv
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "network.json", "csv": out_dir / "network.csv"}
    files["json"].write_text(json.dumps(rep, indent=1, default=str))
    cols = list(rep["hw_points"][0]) if rep["hw_points"] else []
    with open(files["csv"], "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols)
        w.writeheader()
        w.writerows(rep["hw_points"])
    return {k: str(v) for k, v in files.items()}
