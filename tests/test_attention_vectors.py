"""`tse vectors --block eca|srm`: the hw profile's golden vectors of the seeded block, checked
against quantized PyTorch's codes (computed here from the same seeds, not by the vectors
path), their checksums, and the refusals of what these blocks do not support yet."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tse import cli
from tse.quant import attention_reference
from tse.ref_model.config import TSEConfig

SHAPE = ["--channels", "12", "--height", "9", "--width", "7", "--tile", "3x3", "--lanes", "4"]


@pytest.mark.parametrize("block", ["eca", "srm"])
def test_vectors_of_the_other_blocks(block, tmp_path, capsys):
    out = tmp_path / "v"
    assert cli.main(["vectors", "--block", block, *SHAPE, "--frames", "2", "--out", str(out),
                     "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["block"] == block and manifest["config"]["block"] == block
    assert cli.main(["check", str(out)]) == 0
    cfg = TSEConfig(channels=12, height=9, width=7, tile="3x3", lanes=4, block=block)
    ref = attention_reference.build(cfg, frames=2)
    x = np.load(out / "input.npy")
    assert np.array_equal(x, ref.codes["input"].transpose(0, 2, 3, 1))
    for role in ["pooled", "excite", "gate", "output"] + (["std"] if block == "srm" else []):
        ours = np.load(out / f"{role}.npy")
        want = ref.codes[role].transpose(0, 2, 3, 1)
        assert ours.shape == want.shape, role
        d = np.abs(ours.astype(int) - want)
        assert d.max() <= 1, role
        assert summary["vs_quantized_pytorch"][role]["mismatches"] == int((d > 0).sum())
    # S1 and S2 of the first tile, by hand from the input codes
    zx = int(ref.quant.zero_points["input"])
    tile = x[0, 0:3, 0:3, :].astype(int) - zx
    assert np.array_equal(np.load(out / "tile_sums.npy")[0, 0, 0], tile.sum(axis=(0, 1)))
    if block == "srm":
        assert np.array_equal(np.load(out / "square_sums.npy")[0, 0, 0],
                              (tile * tile).sum(axis=(0, 1)))
    assert (out / "hex" / "output.hex").is_file()
    # the unit beside them: its Verilog, its ROM images, its facts in the manifest
    assert summary["unit"] == str(out / "tse_unit.v")
    assert "module tse_unit" in (out / "tse_unit.v").read_text()
    assert (out / "hex" / "rom_sigmoid.hex").is_file()
    assert (out / "hex" / "rom_srm_fc.hex").is_file() == (block == "srm")
    assert manifest["unit"]["schedule"]["strip_latency_cycles"] == cfg.excite_latency_cycles


@pytest.mark.parametrize("flags, message", [
    (["--weights", "w.pt"], "--weights: not supported with block = 'eca'"),
    (["--profile", "torch"], "profile 'torch': not supported with block = 'eca'"),
])
def test_what_the_other_blocks_do_not_support_is_refused(flags, message, tmp_path, capsys):
    out = tmp_path / "v"
    assert cli.main(["vectors", "--block", "eca", *SHAPE, "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tse: error: ") and message in err
    assert "\n" not in err and not out.exists()
