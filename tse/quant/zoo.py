"""Three small Fashion-MNIST networks, one per SE dialect, trained once and cached with ONNX.

Each spells its SE block the way a popular library does, so the block finders
(tse.quant.model_import, tse.quant.onnx_import) meet the real variety:

    senet         RegNet/SENet style: SE of Hu et al., nn.Linear without bias in an
                  nn.Sequential `fc` (Linear, ReLU, Linear, Sigmoid), hidden = C // 4
    efficientnet  EfficientNet style: MBConv (1x1 expand, depthwise 3x3, SE, 1x1 project) with
                  timm's SqueezeExcite (conv_reduce, act1 = SiLU, conv_expand, gate = sigmoid);
                  hidden from the block's INPUT width (in_ch // 4), not the expanded C
    mobilenetv3   MobileNetV3 style: inverted residual with torchvision's SqueezeExcitation
                  (avgpool, fc1, ReLU, fc2, nn.Hardsigmoid), hidden = C // 4 rounded up to a
                  multiple of 8

Every net: 1x28x28 in, a stride-2 stem to 14x14, SE blocks at 14x14 and 7x7, global average
pool, a linear classifier. Training is seeded on the CPU (one thread, reproducible); weights
are cached as tse/quant/data/fmnist_<name>.pt with the recipe and its hash, the ONNX export
(torch.onnx, TorchScript exporter, opset 17) as fmnist_<name>.onnx. Retrain:
    python -m tse.quant.zoo --retrain [NAME ...]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tse.ref_model.errors import ConfigError, InputError

DATA = Path(__file__).with_name("data")
RECIPE = {"version": 2, "seed": 0, "train_images": 20_000, "val_images": 5_000, "epochs": 4,
          "batch": 128, "lr": 3e-3, "weight_decay": 1e-4, "threads": 1, "opset": 17}
"""How every cached net was trained; the cache records it and its hash (recipe_hash)."""


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible: round to a multiple of divisor, never below 90 %."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


# ---- SE spellings ------------------------------------------------------------------------

class SELinear(nn.Module):
    """SENet's SE (Hu et al.): global pool, Linear (no bias), ReLU, Linear, Sigmoid."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False),
                                nn.ReLU(inplace=True),
                                nn.Linear(channels // reduction, channels, bias=False),
                                nn.Sigmoid())

    def forward(self, x):
        b, c = x.shape[:2]
        return x * self.fc(self.avg_pool(x).view(b, c)).view(b, c, 1, 1)


class SqueezeExcite(nn.Module):
    """timm's SqueezeExcite of EfficientNet: x.mean, conv_reduce, act1, conv_expand, gate."""

    def __init__(self, channels: int, rd_channels: int):
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, rd_channels, 1, bias=True)
        self.act1 = nn.SiLU(inplace=True)
        self.conv_expand = nn.Conv2d(rd_channels, channels, 1, bias=True)
        self.gate = nn.Sigmoid()

    def forward(self, x):
        s = self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True)))
        return x * self.gate(self.conv_expand(s))


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation as MobileNetV3 builds it (ReLU, Hardsigmoid)."""

    def __init__(self, input_channels: int, squeeze_channels: int):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = nn.Hardsigmoid()

    def forward(self, x):
        scale = self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))
        return scale * x


# ---- the three networks ------------------------------------------------------------------

def conv_bn(cin, cout, k=3, stride=1, groups=1):
    """Conv and BatchNorm (which torch.onnx folds into the Conv in eval mode)."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout))


class SENetStyle(nn.Module):
    """stem 1->16 s2, conv 16->32 + SE(32, 8) at 14x14, conv 32->64 s2 + SE(64, 16) at 7x7."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(1, 16, stride=2), nn.ReLU())
        self.s1 = nn.Sequential(conv_bn(16, 32), nn.ReLU(), SELinear(32))
        self.s2 = nn.Sequential(conv_bn(32, 64, stride=2), nn.ReLU(), SELinear(64))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.s2(self.s1(self.stem(x))))


class MBConv(nn.Module):
    """EfficientNet's MBConv: 1x1 expand, SiLU, depthwise 3x3, SiLU, SE, 1x1 project."""

    def __init__(self, cin, cout, expand=4, stride=1):
        super().__init__()
        mid = cin * expand
        self.conv_pw = conv_bn(cin, mid, 1)
        self.act1 = nn.SiLU()
        self.conv_dw = conv_bn(mid, mid, 3, stride, groups=mid)
        self.act2 = nn.SiLU()
        self.se = SqueezeExcite(mid, max(1, cin // 4))
        self.conv_pwl = conv_bn(mid, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.conv_pwl(self.se(self.act2(self.conv_dw(self.act1(self.conv_pw(x))))))
        return x + y if self.residual else y


class EfficientNetStyle(nn.Module):
    """stem 1->16 s2; MBConv 16->24 (SE on 64, hidden 4) at 14x14; MBConv 24->32 s2 (SE on
    96, hidden 6) to 7x7; 1x1 head 128."""

    def __init__(self):
        super().__init__()
        self.conv_stem = conv_bn(1, 16, stride=2)
        self.act = nn.SiLU()
        self.blocks = nn.Sequential(MBConv(16, 24), MBConv(24, 32, stride=2))
        self.conv_head = conv_bn(32, 128, 1)
        self.classifier = nn.Linear(128, 10)

    def forward(self, x):
        x = self.blocks(self.act(self.conv_stem(x)))
        return self.classifier(torch.flatten(self.act(self.conv_head(x)).mean((2, 3)), 1))


class InvertedResidual(nn.Module):
    """MobileNetV3's block: 1x1 expand, ReLU, depthwise 3x3, ReLU, SE, 1x1 project."""

    def __init__(self, cin, mid, cout, stride=1):
        super().__init__()
        self.block = nn.Sequential(conv_bn(cin, mid, 1), nn.ReLU(),
                                   conv_bn(mid, mid, 3, stride, groups=mid), nn.ReLU(),
                                   SqueezeExcitation(mid, make_divisible(mid // 4, 8)),
                                   conv_bn(mid, cout, 1))

    def forward(self, x):
        return self.block(x)


class MobileNetV3Style(nn.Module):
    """stem 1->16 s2 (hardswish); IR 16->48->24 (SE 48, hidden 16) at 14x14; IR 24->72->32 s2
    (SE 72, hidden 24) to 7x7; 1x1 head 96 (hardswish)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Sequential(conv_bn(1, 16, stride=2), nn.Hardswish()),
                                      InvertedResidual(16, 48, 24),
                                      InvertedResidual(24, 72, 32, stride=2),
                                      nn.Sequential(conv_bn(32, 96, 1), nn.Hardswish()))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(96, 10)

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


NETS = {"senet": SENetStyle, "efficientnet": EfficientNetStyle, "mobilenetv3": MobileNetV3Style}


# ---- training and the caches -------------------------------------------------------------

def recipe_hash(name: str, recipe: dict = RECIPE) -> str:
    """sha256 of the recipe with the net's name (what a cache must have been trained with)."""
    return hashlib.sha256(json.dumps({"net": name, **recipe}, sort_keys=True).encode()
                          ).hexdigest()


def weights_path(name: str) -> Path:
    return DATA / f"fmnist_{name}.pt"


def onnx_path(name: str) -> Path:
    return DATA / f"fmnist_{name}.onnx"


def check_name(name: str) -> str:
    if name not in NETS:
        raise ConfigError(f"network: {name!r} is not allowed; allowed: {', '.join(NETS)}")
    return name


def build(name: str) -> nn.Module:
    """An untrained net of this name."""
    return NETS[check_name(name)]()


def load(name: str) -> tuple[nn.Module, dict]:
    """The cached trained net (eval mode) and its metadata; an InputError naming the file and
    the retrain command when the cache is missing or from another recipe."""
    path = weights_path(check_name(name))
    retrain = f"python -m tse.quant.zoo --retrain {name}"
    if not path.is_file():
        raise InputError(f"network: {str(path)!r} does not exist; allowed: a cache written by "
                         f"{retrain}")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    meta = blob.get("meta", {}) if isinstance(blob, dict) else {}
    if meta.get("recipe_hash") != recipe_hash(name):
        raise InputError(f"network: {str(path)!r} was trained with another recipe "
                         f"(hash {meta.get('recipe_hash')!r}); allowed: the recipe of "
                         f"tse.quant.zoo.RECIPE, written by {retrain}")
    model = build(name)
    model.load_state_dict(blob["state_dict"])
    return model.eval(), meta


@torch.no_grad()
def top1(model: nn.Module, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> float:
    model.eval()
    hits = 0
    for k in range(0, len(x), batch):
        hits += int((model(torch.from_numpy(x[k:k + batch])).argmax(1).numpy()
                     == y[k:k + batch]).sum())
    return hits / len(x)


def train(name: str, data, recipe: dict = RECIPE, epochs: int | None = None) -> nn.Module:
    """Train net `name` on data.x_train (a fashion_mnist.Split), seeded, on recipe's threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(recipe["threads"])
    try:
        torch.manual_seed(recipe["seed"])
        model = build(name)
        opt = torch.optim.Adam(model.parameters(), lr=recipe["lr"],
                               weight_decay=recipe["weight_decay"])
        epochs = recipe["epochs"] if epochs is None else epochs
        steps = epochs * -(-len(data.x_train) // recipe["batch"])
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, recipe["lr"], total_steps=steps)
        gen = torch.Generator().manual_seed(recipe["seed"] + 1)
        x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(epochs):
            model.train()
            order = torch.randperm(len(x), generator=gen)
            for k in range(0, len(x), recipe["batch"]):
                idx = order[k:k + recipe["batch"]]
                opt.zero_grad()
                loss_fn(model(x[idx]), y[idx]).backward()
                opt.step()
                sched.step()
    finally:
        torch.set_num_threads(before)
    return model.eval()


def export_onnx(model: nn.Module, path, opset: int = RECIPE["opset"]) -> None:
    """torch.onnx (the TorchScript exporter: no onnxscript needed), batch dimension dynamic."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(path), dynamo=False,
                          opset_version=opset, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}})


def retrain(name: str, log=print) -> dict:
    """Train net `name`, measure float top-1 on the test file, write both caches (whole)."""
    from tse.ref_model.artifacts import sha256_of

    from . import fashion_mnist

    data = fashion_mnist.split(RECIPE["seed"], RECIPE["train_images"], RECIPE["val_images"])
    t0 = time.perf_counter()
    model = train(name, data)
    meta = {"net": name, "recipe": dict(RECIPE), "recipe_hash": recipe_hash(name),
            "torch": str(torch.__version__), "train_seconds": round(time.perf_counter() - t0, 1),
            "val_top1": top1(model, data.x_val, data.y_val),
            "test_top1": top1(model, data.x_test, data.y_test),
            "test_images": int(len(data.x_test))}
    DATA.mkdir(parents=True, exist_ok=True)
    tmp_onnx = onnx_path(name).with_suffix(".onnx.tmp")
    export_onnx(model, tmp_onnx)
    meta["onnx_sha256"] = sha256_of(tmp_onnx)
    tmp_pt = weights_path(name).with_suffix(".pt.tmp")
    torch.save({"state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "meta": meta}, tmp_pt)
    tmp_onnx.replace(onnx_path(name))
    tmp_pt.replace(weights_path(name))
    log(f"{name}: float top-1 {100 * meta['test_top1']:.2f} % on {meta['test_images']} test "
        f"images (val {100 * meta['val_top1']:.2f} %), trained in {meta['train_seconds']} s")
    return meta


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tse.quant.zoo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--retrain", nargs="*", metavar="NAME",
                   help=f"train again and rewrite the caches (default: all of {', '.join(NETS)})")
    args = p.parse_args(argv)
    try:
        for name in args.retrain or (NETS if args.retrain is not None else ()):
            retrain(check_name(name))
        if args.retrain is None:
            for name in NETS:
                _, meta = load(name)
                print(f"{name}: float top-1 {100 * meta['test_top1']:.2f} % (cached)")
    except (ConfigError, InputError) as e:
        print(f"tse: error: {e}")
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
