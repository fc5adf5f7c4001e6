"""The digits CNN of tse.quant.network with ECA or SRM blocks instead of SE (issue 18).

Owns the float ECA/SRM networks, their training (network.RECIPE, same seed and data) and their
weight caches (tse/quant/data/digits_eca_cnn.pt, digits_srm_cnn.pt), and the float rows of
their report: the trained block and every block tiled as a row strip without retraining.
Not yet here: the quantized PyTorch, torch-profile and hw-profile rows and `tse network
--block` (see the report of the session that added this module).
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import nn

from tse.ref_model.errors import ConfigError, InputError

from . import network
from .attention_blocks import TiledECA, TiledSRM

BLOCKS = ("eca", "srm")
DATA_DIR = network.WEIGHTS.parent


def weights_path(block: str) -> Path:
    check_block(block)
    return DATA_DIR / f"digits_{block}_cnn.pt"


def check_block(block: str) -> None:
    if block not in BLOCKS:
        raise ConfigError(f"block: {block!r} is not allowed; allowed: {', '.join(BLOCKS)}")


def recipe(block: str) -> dict:
    """network.RECIPE with this block's architecture name (the cache's key)."""
    return {**network.RECIPE, "arch": f"digits-{block}-cnn-v1"}


class DigitsAttentionNet(network.DigitsSENet):
    """The digits CNN with ECA (adaptive k) or SRM blocks of `tile` ("HxW": as trained)."""

    def __init__(self, block: str, tile: str = "HxW"):
        check_block(block)
        self.block = block
        super().__init__(tile)

    def _se(self, channels, kernel):
        return TiledECA(channels, kernel) if self.block == "eca" else TiledSRM(channels, kernel)


def train(block: str, data: network.Data) -> DigitsAttentionNet:
    """Train the float network with the SE network's recipe (seeded, one thread)."""
    r = recipe(block)
    with network.threads(r["threads"]):
        torch.manual_seed(r["seed"])
        model = DigitsAttentionNet(block)
        opt = torch.optim.Adam(model.parameters(), lr=r["lr"], weight_decay=r["weight_decay"])
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, r["epochs"]))
        gen = torch.Generator().manual_seed(r["seed"] + 1)
        n = data.x_train.shape[0]
        loss_fn = nn.CrossEntropyLoss()
        for _ in range(r["epochs"]):
            model.train()
            order = torch.randperm(n, generator=gen)
            for k in range(0, n, r["batch"]):
                idx = order[k:k + r["batch"]]
                opt.zero_grad()
                loss_fn(model(data.x_train[idx]), data.y_train[idx]).backward()
                opt.step()
            sched.step()
    return model.eval()


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
        log(f"training the digits {block.upper()}-CNN ({r['epochs']} epochs, seed {r['seed']})")
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
               log=None) -> list[dict]:
    """Top-1 on the test split of the trained float network and of every tiled variant."""
    data = network.load_data()
    model, _ = load_or_train(block, weights, data, retrain, log)
    with network.threads(1):
        rows = [{"variant": f"float {block.upper()}", "tile": "HxW",
                 "accuracy": network.accuracy(model, data.x_test, data.y_test)}]
        for t in tiles:
            rows.append({"variant": f"float {block.upper()} tiled {t} (no retraining)",
                         "tile": t, "accuracy": network.accuracy(with_tile(model, t),
                                                                 data.x_test, data.y_test)})
    return rows
