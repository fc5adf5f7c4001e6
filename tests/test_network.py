"""Accuracy on a trained network (tse.quant.network, tse network): the cached digits SE-CNN,
seeded training, TSE replacement, quantization, and every SE block replaced by the
bit-accurate models (torch profile: the same logits as quantized PyTorch)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tse.quant import network as nw
from tse.ref_model.hw_profile import DEFAULT_HW

ROOT = Path(__file__).resolve().parents[1]


def tse(*args):
    return subprocess.run([sys.executable, "-m", "tse", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def trained():
    data = nw.load_data()
    with nw.threads(1):
        model, meta = nw.load_or_train(nw.WEIGHTS, data)   # trains only without the cache
    return data, model, meta


def test_cached_weights_load_without_retraining(trained):
    data, model, meta = trained
    assert nw.WEIGHTS.is_file() and nw.WEIGHTS.stat().st_size < 400_000
    assert meta["recipe"] == nw.RECIPE
    acc = nw.accuracy(model, data.x_test, data.y_test)
    assert acc == meta["float_test_accuracy"] and acc >= 0.95
    assert data.x_test.shape == (360, 1, 8, 8) and data.x_train.shape[0] == 1437


def test_training_and_split_are_seeded():
    a, b = nw.load_data(), nw.load_data()
    assert torch.equal(a.x_test, b.x_test) and torch.equal(a.y_train, b.y_train)
    small = nw.Data(a.x_train[:192], a.y_train[:192], a.x_test, a.y_test)
    m1, m2 = nw.train(small, epochs=1), nw.train(small, epochs=1)
    for (k, v1), v2 in zip(m1.state_dict().items(), m2.state_dict().values()):
        assert torch.equal(v1, v2), k


def test_tse_replacement_keeps_the_weights(trained):
    data, model, _ = trained
    tse_model = nw.with_tile(model, "2xW")
    assert tse_model.se1.kernel == (2, 8) and tse_model.se3.kernel == (2, 4)
    assert nw.with_tile(model, "4xW").se3.kernel == (4, 4)          # whole 4x4 map: SE
    assert torch.equal(tse_model.se2.conv1.weight, model.se2.conv1.weight)
    full = nw.with_tile(model, "HxW")
    x = data.x_test[:32]
    with torch.no_grad():
        assert torch.equal(full(x), model(x))


@pytest.mark.parametrize("engine", ["fbgemm", "qnnpack"])
def test_models_replace_every_quantized_block(trained, engine):
    """torch profile in place of every quantized TSE block: the quantized network's logits,
    bit for bit. The default hw preset too on this network; narrow widths move them."""
    data, model, _ = trained
    with nw.threads(1):
        q = nw.quantize(model, data.x_train[:128], engine, "2xW")
        blocks = nw.extract_blocks(q, data.x_test)
        assert [b.cfg.tile for b in blocks] == ["2xW", "2xW", "2xW"]
        assert all(b.params.scales["gate"] == 1 / 256 for b in blocks)
        x = data.x_test[:120]
        pred_q, logits_q = nw.quantized_predict(q, x)
        _, logits_t, _ = nw.model_predict(q, blocks, x, "torch")
        assert np.array_equal(logits_t, logits_q)
        _, logits_h, sat = nw.model_predict(q, blocks, x, "hw", DEFAULT_HW)
        assert np.array_equal(logits_h, logits_q) and sum(sat.values()) == 0
        narrow = DEFAULT_HW.replace(gate_bits=2, sum_bits=8, saturate=True)
        _, logits_n, sat = nw.model_predict(q, blocks, x, "hw", narrow)
        assert not np.array_equal(logits_n, logits_q) and sat["tile_sums"] > 0
        assert all(b.module.replace is None for b in blocks)          # restored


def test_network_report_prints_its_accuracy_table(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text("[axes]\ngate_bits = [1, 4, 8]\nfc2_acc_bits = [10, 40]\n")
    r = tse("network", "--grid", str(grid), "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    for text in ("float SE", "float TSE 1xW (no retraining)", "float TSE 4xW",
                 "quantized PyTorch (fbgemm) SE", "quantized PyTorch (fbgemm) TSE 2xW",
                 "torch profile (model), TSE 2xW", "logits bit-identical",
                 "hw profile (model, every block replaced)", "gate_bits=1", "widest"):
        assert text in r.stdout, text
    rep = json.loads((tmp_path / "o" / "network.json").read_text())
    by = {p["label"]: p for p in rep["hw_points"]}
    assert by["base"]["agreement"] == 1.0 and by["widest"]["agreement"] == 1.0
    assert by["fc2_acc_bits=10"]["saturated_excite"] > 0
    assert by["gate_bits=1"]["agreement"] < 1.0
    assert rep["narrowest"]["fc2_acc_bits"]["agreement"] == 32                  # the base
    assert rep["narrowest"]["gate_bits"]["agreement"] in (4, 8)
    assert (tmp_path / "o" / "network.csv").read_text().count("\n") == len(rep["hw_points"]) + 1
    r = tse("network", "--quick", "--json", "--float-tiles", "2xW")
    assert r.returncode == 0 and r.stderr == ""
    rep = json.loads(r.stdout)
    assert [p["label"] for p in rep["hw_points"]] == ["base", "widest"]
    r = tse("network", "--quick", "--tile", "0xW")
    assert r.returncode == 2 and r.stderr.startswith("tse: error: tile: '0xW'")
