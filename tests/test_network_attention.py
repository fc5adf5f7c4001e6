"""The digits CNN with ECA / SRM blocks (tse.quant.network_attention): cached weights, float
rows, the quantized network through the torch and hw profiles, one-line errors. The caches
are committed, so nothing here trains."""
import numpy as np
import pytest

from tse.quant import network, network_attention as na
from tse.ref_model.errors import ConfigError


@pytest.fixture(scope="module")
def data():
    return network.load_data()


@pytest.mark.parametrize("block", na.BLOCKS)
def test_cache_holds_this_recipe(block):
    # a cache miss would retrain (and rewrite the committed file); the recipe is the key
    _, meta = na.load_or_train(block, log=lambda m: pytest.fail(f"retrained: {m}"))
    assert meta["recipe"]["arch"] == f"digits-{block}-cnn-v1"
    assert meta["recipe"]["seed"] == network.RECIPE["seed"]
    # the 3x1 excite is trained at 1xW (the paper's TSE_1xW C_3x1), the others whole-frame
    assert meta["recipe"].get("tile", "HxW") == na.TRAIN_TILE[block]
    assert na.TRAIN_TILE["se3x1"] == "1xW"


@pytest.mark.parametrize("block", na.BLOCKS)
def test_trained_network_learns_and_whole_frame_tile_is_the_block(block, data):
    model, _ = na.load_or_train(block)
    # 10 classes: chance is 10 %; measured 96.1 % (ECA), 98.6 % (SRM), 97.2 % (3x1 excite)
    assert network.accuracy(model, data.x_test, data.y_test) > 0.9
    # the training tile is the cached network's own: the same predictions
    same = na.with_tile(model, na.TRAIN_TILE[block])
    assert np.array_equal(network.predict(same, data.x_test), network.predict(model, data.x_test))


@pytest.mark.parametrize("block", na.BLOCKS)
def test_float_rows_exist(block):
    rows = na.float_rows(block, tiles=("1xW", "4xW"))
    assert [r["tile"] for r in rows] == [na.TRAIN_TILE[block], "1xW", "4xW"]
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)


def test_bad_block_is_one_line_error():
    with pytest.raises(ConfigError) as e:
        na.weights_path("cbam")
    assert "\n" not in str(e.value) and "'cbam'" in str(e.value) and "eca, srm" in str(e.value)


def run_cli(*argv):
    import subprocess
    import sys
    return subprocess.run([sys.executable, "-m", "tse", "network", *argv],
                          capture_output=True, text=True, timeout=120)


def test_cli_block_rows_and_bad_combination(tmp_path):
    import json
    out = tmp_path / "net"
    r = run_cli("--block", "eca", "--json", "--float-tiles", "2xW", "--quick", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert [x["tile"] for x in rep["rows"][:2]] == ["HxW", "2xW"]
    assert [h["label"] for h in rep["hw_points"]] == ["base", "widest"]
    assert json.loads((out / "network.json").read_text())["block"] == "eca"
    assert (out / "network.csv").read_text().splitlines()[0].startswith("label,axis,value")
    for argv, names in ((("--block", "srm", "--model", "senet"), "srm"),
                        (("--block", "eca", "--grid", str(na.sweep_grid.DEFAULT_GRIDS["srm"])),
                         "fc1_multiplier_bits")):
        bad = run_cli(*argv)
        assert bad.returncode != 0 and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and names in bad.stderr


@pytest.fixture(scope="module", params=na.BLOCKS)
def quantized(request, data):
    """block, the quantized 2xW network, its blocks, its predictions and logits."""
    model, _ = na.load_or_train(request.param)
    with network.threads(1):
        q = na.quantize(model, data.x_train[:network.CALIBRATION_IMAGES], "fbgemm", "2xW")
        pred, logits = network.quantized_predict(q, data.x_test)
        return request.param, q, na.extract_blocks(q, data.x_test), pred, logits


def test_blocks_are_read_from_the_quantized_network(quantized):
    block, q, blocks, *_ = quantized
    kind = ("se", "3x1") if block == "se3x1" else (block, "1x1")
    assert [(b.name, (b.cfg.block, b.cfg.excite_kernel), b.cfg.channels, b.cfg.tile)
            for b in blocks] == [("se1", kind, 16, "2xW"), ("se2", kind, 32, "2xW"),
                                 ("se3", kind, 64, "2xW")]
    # the block's input qparams are the preceding conv's output qparams
    if block == "se3x1":
        assert blocks[0].quant.zx == q.conv1.zero_point
    else:
        assert blocks[0].quant.scales["input"] == pytest.approx(q.conv1.scale, rel=0, abs=0)
        assert blocks[0].quant.zero_points["input"] == q.conv1.zero_point


def test_torch_profile_is_quantized_pytorch_bit_for_bit(quantized, data):
    """Every block replaced by the torch profile: the network's logits are PyTorch's, bit
    for bit (measured: ECA, SRM and the 3x1 excite, 360 images, fbgemm)."""
    _, q, blocks, pred, logits = quantized
    pred_t, logits_t = na.model_predict(q, blocks, data.x_test, "torch")
    assert np.array_equal(logits_t, logits) and np.array_equal(pred_t, pred)
    assert all(b.module.replace is None for b in blocks)          # restored


def test_hw_profile_runs_the_blocks_and_reports_its_distance(quantized, data):
    """The hw profile at the default widths: its predictions' agreement with quantized
    PyTorch is a measured figure (ECA 100 %, SRM 99.7 %: one image of 360, the integer
    deviation and the float32 one differ; 3x1 excite 100 %); a 1-bit gate must change
    predictions, which shows the replacement is what runs."""
    from tse.ref_model.hw_profile import DEFAULT_HW
    _, q, blocks, pred, _ = quantized
    pred_h, _ = na.model_predict(q, blocks, data.x_test, "hw", DEFAULT_HW)
    assert (pred_h == pred).mean() >= 0.99
    pred_1, _ = na.model_predict(q, blocks, data.x_test, "hw", DEFAULT_HW.replace(gate_bits=1))
    assert (pred_1 != pred).sum() > 10


def test_cli_excite3x1_and_its_refusals():
    import json
    r = run_cli("--excite-kernel", "3x1", "--json", "--quick", "--float-tiles", "2xW")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["block"] == "se3x1" and rep["tile"] == "1xW"
    torch_row = next(x for x in rep["rows"] if x["variant"].startswith("torch profile"))
    assert torch_row["logits_equal_pytorch"] is True
    for argv, names in ((("--excite-kernel", "3x1", "--block", "eca"), "excite-kernel"),
                        (("--excite-kernel", "5x5"), "'5x5'"),
                        (("--block", "se3x1"), "'se3x1'")):
        bad = run_cli(*argv)
        assert bad.returncode != 0 and "Traceback" not in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and names in bad.stderr
