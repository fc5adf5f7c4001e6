"""Fashion-MNIST (tse.quant.fashion_mnist) and the three cached networks (tse.quant.zoo): the
IDX loader against the data set's published facts, the seeded split, one-line errors for a
missing or broken file, and every cache against its recipe, its accuracy and its ONNX export.
Training never runs here (python -m tse.quant.zoo --retrain does)."""
import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tse.quant import fashion_mnist as fm
from tse.quant import zoo
from tse.ref_model.artifacts import sha256_of
from tse.ref_model.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def test_set():
    return fm.load("test")


def test_test_file_matches_the_published_facts(test_set):
    x, y = test_set
    assert x.shape == (10_000, 1, 28, 28) and x.dtype == np.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert np.bincount(y).tolist() == [1000] * 10          # balanced: 1,000 per class
    assert y[:5].tolist() == [9, 2, 1, 1, 6]               # ankle boot, pullover, trouser x2, shirt


def test_split_is_seeded_and_disjoint():
    a, b = fm.split(3, 500, 100), fm.split(3, 500, 100)
    assert np.array_equal(a.x_train, b.x_train) and np.array_equal(a.y_val, b.y_val)
    c = fm.split(4, 500, 100)
    assert not np.array_equal(a.x_train, c.x_train)
    rows = {r.tobytes() for r in a.x_train}
    assert not any(r.tobytes() in rows for r in a.x_val)
    assert a.x_test.shape[0] == 10_000


def test_missing_data_is_one_line_naming_path_and_setup(tmp_path, monkeypatch):
    monkeypatch.setenv(fm.ENV, str(tmp_path))
    with pytest.raises(InputError) as e:
        fm.load("test")
    msg = str(e.value)
    assert "\n" not in msg and str(tmp_path / "t10k-images-idx3-ubyte.gz") in msg
    assert "apt-get install dataset-fashion-mnist" in msg


def test_broken_idx_is_refused(tmp_path):
    bad = tmp_path / "x.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") * 3 + b"\x00"))
    with pytest.raises(InputError, match="holds 1 bytes for shape"):
        fm.read_idx(bad)
    (tmp_path / "y").write_bytes(b"PK\x03\x04")
    with pytest.raises(InputError, match="not an unsigned-byte IDX"):
        fm.read_idx(tmp_path / "y")


@pytest.mark.parametrize("name", list(zoo.NETS))
def test_cache_holds_its_recipe_and_accuracy(name, test_set):
    model, meta = zoo.load(name)
    assert meta["recipe"] == zoo.RECIPE and meta["recipe_hash"] == zoo.recipe_hash(name)
    assert zoo.weights_path(name).stat().st_size < 400_000
    x, y = test_set
    acc = zoo.top1(model, x, y)
    assert acc == meta["test_top1"] and acc >= 0.75, acc


@pytest.mark.parametrize("name", list(zoo.NETS))
def test_onnx_cache_computes_the_same_logits(name, test_set):
    import onnxruntime as ort
    path = zoo.onnx_path(name)
    model, meta = zoo.load(name)
    assert sha256_of(path) == meta["onnx_sha256"]
    x = test_set[0][:256]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert np.abs(got - want).max() < 1e-3


def test_another_recipe_is_refused(monkeypatch):
    monkeypatch.setitem(zoo.RECIPE, "epochs", zoo.RECIPE["epochs"] + 1)
    with pytest.raises(InputError, match="another recipe"):
        zoo.load("senet")
    monkeypatch.undo()
    r = subprocess.run([sys.executable, "-m", "tse.quant.zoo", "--retrain", "resnet"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2 and r.stdout.strip().count("\n") == 0
    assert "'resnet' is not allowed; allowed: senet, efficientnet, mobilenetv3" in r.stdout


def test_training_is_seeded():
    small = fm.split(0, 256, 0)
    a, b = zoo.train("mobilenetv3", small, epochs=1), zoo.train("mobilenetv3", small, epochs=1)
    for (k, v1), v2 in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v1, v2), k
