"""The digits CNN with ECA / SRM blocks (tse.quant.network_attention): cached weights, float
rows, one-line errors. The caches are committed, so nothing here trains."""
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


@pytest.mark.parametrize("block", na.BLOCKS)
def test_trained_network_learns_and_whole_frame_tile_is_the_block(block, data):
    model, _ = na.load_or_train(block)
    # 10 classes: chance is 10 %; measured 96.1 % (ECA) and 98.6 % (SRM)
    assert network.accuracy(model, data.x_test, data.y_test) > 0.9
    # a tile covering every frame is the untiled block, so the predictions are the same
    same = na.with_tile(model, "HxW")
    assert np.array_equal(network.predict(same, data.x_test), network.predict(model, data.x_test))


@pytest.mark.parametrize("block", na.BLOCKS)
def test_float_rows_exist(block):
    rows = na.float_rows(block, tiles=("1xW", "4xW"))
    assert [r["tile"] for r in rows] == ["HxW", "1xW", "4xW"]
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


def test_cli_block_rows_and_bad_combination():
    import json
    r = run_cli("--block", "eca", "--json", "--float-tiles", "2xW")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["rows"]
    assert [x["tile"] for x in rows] == ["HxW", "2xW"]
    bad = run_cli("--block", "srm", "--model", "senet")
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "srm" in bad.stderr
