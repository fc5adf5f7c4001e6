"""`tse vectors` against quantized PyTorch run here, in the test: the written vectors of the
torch profile equal its codes on every stage, and the "vs quantized PyTorch" counts the tool
reports for the hw profile (narrowed so that it differs) equal the counts measured here.
The test brings its own weights, calibration and input, and runs the eager-mode quantized
block itself (no code of tse.quant.reference or tse.ref_model.vectors computes the expectation)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tse.quant.float_block import TSE
from tse.quant.quantized_block import quantize

C, H, W, TILE, R, LANES = 12, 9, 10, (4, 3), 3, 4
STAGES = ("input", "pooled", "hidden", "excite", "gate", "output")
# a narrow output multiplier: the hw profile then differs from quantized PyTorch
NARROW_HW = "[hw]\nmul_multiplier_bits = 5\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("pt")
    gen = torch.Generator().manual_seed(11)
    hidden = C // R
    sd = {"se.fc1.weight": torch.randn(hidden, C, generator=gen) * 0.4,
          "se.fc1.bias": torch.randn(hidden, generator=gen) * 0.2,
          "se.fc2.weight": torch.randn(C, hidden, generator=gen) * 0.8,
          "se.fc2.bias": torch.randn(C, generator=gen) * 0.5}
    torch.save(sd, d / "w.pt")
    calib = torch.rand(6, C, H, W, generator=gen) * torch.linspace(0.5, 3.0, C)[:, None, None]
    x = torch.rand(2, C, H, W, generator=gen) * torch.linspace(0.5, 3.0, C)[:, None, None]
    np.save(d / "calib.npy", calib.numpy())
    np.save(d / "x.npy", x.numpy())
    (d / "narrow.toml").write_text(NARROW_HW)

    block = TSE(C, TILE, R).eval()
    with torch.no_grad():
        block.conv1.weight.copy_(sd["se.fc1.weight"][:, :, None, None])
        block.conv1.bias.copy_(sd["se.fc1.bias"])
        block.conv2.weight.copy_(sd["se.fc2.weight"][:, :, None, None])
        block.conv2.bias.copy_(sd["se.fc2.bias"])
    model = quantize(block, calib, "fbgemm")
    torch.backends.quantized.engine = "fbgemm"
    with torch.no_grad():
        out = model.stages(x)
    # channels last, as the vectors are written (frame, row|tile_row, column|tile_col, channel)
    expected = {s: out[s].int_repr().numpy().transpose(0, 2, 3, 1) for s in STAGES}
    assert np.array_equal(torch.quantize_per_tensor(  # the forward really is torch's own
        out["output"].dequantize(), out["output"].q_scale(), out["output"].q_zero_point(),
        torch.quint8).int_repr().numpy().transpose(0, 2, 3, 1), expected["output"])
    return d, expected


def vectors(d, out, *extra):
    cmd = [sys.executable, "-m", "tse", "vectors", "--channels", str(C), "--height", str(H),
           "--width", str(W), "--tile", f"{TILE[0]}x{TILE[1]}", "--reduction", str(R),
           "--lanes", str(LANES), "--weights", str(d / "w.pt"), "--calibration",
           str(d / "calib.npy"), "--input", str(d / "x.npy"), "--out", str(out), "--json",
           *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_torch_profile_vectors_equal_quantized_pytorch(data, tmp_path):
    d, expected = data
    summary = vectors(d, tmp_path / "v", "--profile", "torch")
    for s in STAGES:
        got = np.load(tmp_path / "v" / f"{s}.npy")
        assert got.shape == expected[s].shape, s
        assert np.array_equal(got, expected[s]), f"{s}: {(got != expected[s]).sum()} differ"
    assert all(summary["vs_quantized_pytorch"][s]["mismatches"] == 0 for s in STAGES[1:])


def test_hw_profile_reported_distance_is_the_measured_one(data, tmp_path):
    d, expected = data
    summary = vectors(d, tmp_path / "v", "--profile", "hw", "--config", str(d / "narrow.toml"))
    got = {s: np.load(tmp_path / "v" / f"{s}.npy") for s in STAGES}
    assert np.array_equal(got["input"], expected["input"])
    measured = {s: int((got[s].astype(int) != expected[s].astype(int)).sum())
                for s in STAGES[1:]}
    assert measured["output"] > 0        # the narrowed profile does differ
    reported = {s: summary["vs_quantized_pytorch"][s]["mismatches"] for s in STAGES[1:]}
    assert reported == measured
    worst = int(np.abs(got["output"].astype(int) - expected["output"].astype(int)).max())
    assert summary["vs_quantized_pytorch"]["output"]["max_err_lsb"] == worst
