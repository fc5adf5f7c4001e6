"""`tse vectors --block se --excite-kernel 3x1`: the hw profile's golden vectors of the seeded
3x1-excite block (attention_kernels.excite3x1_frames) with the 3x1 unit's Verilog, every stage
checked against the frame-level numpy profile (attention_hw.excite3x1_hw_stages) and quantized
PyTorch's codes, both computed here from the same seeds, not by the vectors path; the refusals
of what the 3x1 excite does not support yet."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tse import cli
from tse.quant import attention_reference
from tse.ref_model import attention_hw, attention_vectors
from tse.ref_model.config import TSEConfig
from tse.ref_model.errors import ConfigError

# 9 rows of 2-row tiles: five strips, the last one short; 7 columns of 3: a short last column
SHAPE = ["--channels", "12", "--height", "9", "--width", "7", "--tile", "2x3", "--lanes", "4",
         "--hidden", "4"]
ROLES = ("tile_sums", "pooled", "hidden", "excite", "gate", "output")


@pytest.mark.parametrize("engine", ["fbgemm", "qnnpack"])
def test_vectors_of_the_3x1_excite(engine, tmp_path, capsys):
    out = tmp_path / "v"
    assert cli.main(["vectors", "--block", "se", "--excite-kernel", "3x1", *SHAPE,
                     "--engine", engine, "--frames", "2", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["block"] == "se" and manifest["config"]["excite_kernel"] == "3x1"
    assert summary["unit"] == str(out / "tse_unit.v") and (out / "tse_unit.v").is_file()
    assert manifest["unit"]["schedule"]["excite_kernel"] == "3x1"       # the 3x1 unit's plan
    assert cli.main(["check", str(out)]) == 0
    cfg = TSEConfig(channels=12, height=9, width=7, tile="2x3", lanes=4, hidden=4,
                    excite_kernel="3x1", engine=engine)
    ref = attention_reference.build_excite3x1(cfg, frames=2)
    x = np.load(out / "input.npy")
    assert np.array_equal(x, ref.codes["input"].transpose(0, 2, 3, 1))
    profile = attention_hw.excite3x1_hw_stages(ref.codes["input"], cfg, ref.quant)
    for role in ROLES:
        ours = np.load(out / f"{role}.npy")
        want = profile[role].transpose(0, 2, 3, 1)
        assert ours.shape == want.shape and np.array_equal(ours, want), role
        assert (out / "hex" / f"{role}.hex").is_file(), role
    assert len(np.unique(profile["gate"])) >= 3                 # the gates are not all one code
    # against quantized PyTorch: the distance the manifest reports, within one code
    for role in attention_vectors.COMPARED["excite3x1"]:
        ours = np.load(out / f"{role}.npy")
        d = np.abs(ours.astype(int) - ref.codes[role].transpose(0, 2, 3, 1))
        assert d.max() <= 1, role
        assert summary["vs_quantized_pytorch"][role]["mismatches"] == int((d > 0).sum()), role
        assert manifest["vs_quantized_pytorch"][role] == summary["vs_quantized_pytorch"][role]
    # S1 of the first tile, by hand from the input codes
    zx = int(ref.quant.zx)
    tile = x[0, 0:2, 0:3, :].astype(int) - zx
    assert np.array_equal(np.load(out / "tile_sums.npy")[0, 0, 0], tile.sum(axis=(0, 1)))


@pytest.mark.parametrize("flags, message", [
    (["--profile", "torch"], "profile 'torch': not supported with excite_kernel = '3x1'"),
    (["--input", "x.npy"], "--input: not supported with excite_kernel = '3x1'"),
    (["--hidden-activation", "silu"], "'silu'/'sigmoid' is not allowed with excite_kernel = "
                                      "'3x1'; allowed: 'relu'/'sigmoid'"),
])
def test_what_the_3x1_excite_does_not_support_is_refused(flags, message, tmp_path, capsys):
    out = tmp_path / "v"
    assert cli.main(["vectors", "--block", "se", "--excite-kernel", "3x1", *SHAPE, "--out",
                     str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tse: error: ") and message in err
    assert "\n" not in err and not out.exists()


def test_the_vectors_kinds_refuse_the_1x1_excite():
    with pytest.raises(ConfigError, match="allowed: 'eca', 'srm', or 'se' with excite_kernel"):
        attention_vectors.kind(TSEConfig())
    with pytest.raises(ConfigError, match="allowed: block 'se' with excite_kernel '3x1'"):
        attention_reference.build_excite3x1(TSEConfig(), 1)
