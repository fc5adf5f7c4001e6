"""Every bad input of issue 14 (item 3) is one `tse: error:` line naming the bad value and what
is allowed, exit status 2, no traceback, nothing written; silent results now say what happened."""
import json

import numpy as np
import pytest
import torch

from tse.quant import calibration_check, memory
from tse.ref_model.config import MAX_SEED, TSEConfig
from tse.ref_model.errors import ConfigError
from tse.cli import main

SMALL = ["--channels", "8", "--height", "4", "--width", "4", "--tile", "2xW", "--lanes", "8",
         "--reduction", "2"]


def error_line(capsys, argv, *must_contain) -> str:
    rc = main(argv)
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert rc == 2, (rc, captured.out[-400:], err)
    assert err.startswith("tse: error:") and "\n" not in err and "Traceback" not in err, err
    for part in must_contain:
        assert part in err, (part, err)
    return err


# ---- the torch profile does not use the hw profile's widths -----------------------------
TORCH_ONLY = [  # shapes of the issue; with NARROW_HW the hw profile's accumulators overflow
    ["--channels", "79", "--height", "10", "--width", "26", "--tile", "10x10", "--reduction",
     "69", "--lanes", "79"],
    ["--channels", "68", "--height", "28", "--width", "29", "--tile", "HxW", "--reduction",
     "41", "--lanes", "68"],
]


NARROW_HW = "[hw]\nfc1_acc_bits = 14\n"


@pytest.mark.parametrize("shape", TORCH_ONLY)
def test_torch_profile_skips_the_hw_overflow_check(shape, tmp_path, capsys):
    (tmp_path / "narrow.toml").write_text(NARROW_HW)
    narrow = ["--config", str(tmp_path / "narrow.toml"), *shape]
    error_line(capsys, ["vectors", *narrow, "--out", str(tmp_path / "hw")], "hw.fc1_acc_bits: 14")
    assert not (tmp_path / "hw").exists()
    assert main(["vectors", *narrow, "--profile", "torch", "--out", str(tmp_path / "t"),
                 "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert all(d["mismatches"] == 0 for d in summary["vs_quantized_pytorch"].values())
    assert main(["reference", *narrow, "--profile", "torch", "--out", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    # the commands that run the hw numerics whatever the profile still check them
    error_line(capsys, ["rtl", *narrow, "--profile", "torch", "--out", str(tmp_path / "u")],
               "hw.fc1_acc_bits: 14")
    error_line(capsys, ["run", *narrow, "--profile", "torch", "--out", str(tmp_path / "o")],
               "hw.fc1_acc_bits: 14")


# ---- tracebacks that became one line ----------------------------------------------------
def test_input_with_zero_frames(tmp_path, capsys):
    np.save(tmp_path / "empty.npy", np.zeros((0, 8, 4, 4), np.float32))
    for flag in ("--input", "--calibration"):
        error_line(capsys, ["vectors", *SMALL, flag, str(tmp_path / "empty.npy"), "--out",
                            str(tmp_path / "v")], "empty.npy", "no frames", "N >= 1")
    assert not (tmp_path / "v").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_with_nan_or_inf(bad, tmp_path, capsys):
    sd = {"fc1.weight": torch.ones(4, 8), "fc1.bias": torch.zeros(4),
          "fc2.weight": torch.ones(8, 4), "fc2.bias": torch.zeros(8)}
    sd["fc2.weight"][1, 2] = bad
    torch.save(sd, tmp_path / "w.pt")
    error_line(capsys, ["reference", *SMALL, "--weights", str(tmp_path / "w.pt"), "--out",
                        str(tmp_path / "r")], "fc2.weight", "NaN or infinite", "finite")


@pytest.mark.parametrize("seed", [str(2**64), str(2**70), str(MAX_SEED + 1), "-1"])
def test_seed_beyond_64_bits(seed, capsys):
    error_line(capsys, ["config", "--seed", seed], f"seed: {seed}", str(MAX_SEED))


def test_largest_seed_runs(tmp_path):
    assert main(["reference", *SMALL, "--seed", str(MAX_SEED), "--out", str(tmp_path / "r")]) == 0


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", '{"files": [{"path": 3}]}', "\xff"])
def test_check_a_corrupt_manifest(body, tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    (d / "manifest.json").write_bytes(body.encode("latin-1"))
    error_line(capsys, ["check", str(d)], "manifest.json", "allowed")


def test_check_without_a_manifest(tmp_path, capsys):
    error_line(capsys, ["check", str(tmp_path / "missing")], "missing", "no manifest.json")


def test_cosim_vectors_missing_or_wrong(tmp_path, capsys):
    error_line(capsys, ["cosim", "--sim", "icarus", "--vectors", str(tmp_path / "nope")],
               "nope", "no manifest.json")
    assert main(["reference", *SMALL, "--out", str(tmp_path / "ref")]) == 0
    capsys.readouterr()
    error_line(capsys, ["cosim", "--sim", "icarus", "--vectors", str(tmp_path / "ref")],
               "ref", "tse vectors")


def test_too_large_for_memory_is_refused_up_front(tmp_path, capsys):
    err = error_line(capsys, ["vectors", "--channels", "1024", "--height", "8192", "--width",
                              "8192", "--lanes", "8", "--out", str(tmp_path / "v")],
                     "memory:", "needs about", "available", "GB")
    assert not (tmp_path / "v").exists()
    need, have = [float(w) for w in err.split() if w.replace(".", "").isdigit()][-2:]
    assert need > have


def test_memory_estimate_is_conservative_and_monotonic():
    cfg = TSEConfig(channels=16, height=256, width=512, tile="8xW", lanes=16)
    # measured: 1.09 GB peak for tse vectors on one frame of this shape (tse/quant/memory.py)
    assert memory.estimate_bytes(cfg, 1) >= 1.09e9
    assert memory.estimate_bytes(cfg, 16) >= memory.estimate_bytes(cfg, 1)
    assert memory.estimate_bytes(cfg, 64) > memory.estimate_bytes(cfg, 16)
    with pytest.raises(ConfigError, match="needs about"):
        memory.check_fits(cfg, 1, "test", available=10**8)
    assert memory.check_fits(cfg, 1, "test", available=10**12) > 0


# ---- calibration that clips or collapses the input --------------------------------------
@pytest.mark.parametrize("name,value,says", [
    ("zero", 0.0, "clipped"), ("constant", 0.05, "clipped"), ("absurd", 1e30, "spans")])
def test_bad_calibration_refused_then_forced(name, value, says, tmp_path, capsys):
    np.save(tmp_path / "c.npy", np.full((2, 8, 4, 4), value, np.float32))
    out = tmp_path / "v"
    argv = ["vectors", *SMALL, "--calibration", str(tmp_path / "c.npy"), "--out", str(out)]
    error_line(capsys, argv, "calibration:", says, calibration_check.ALLOW_FLAG)
    assert not out.exists()
    assert main([*argv, "--allow-bad-calibration", "--json"]) == 0
    captured = capsys.readouterr()
    assert "tse: warning: calibration:" in captured.err
    fit = json.loads(captured.out)["calibration"]
    if says == "clipped":
        assert fit["input_clipped_fraction"] > calibration_check.MAX_CLIPPED
    else:
        assert fit["input_span_codes"] < calibration_check.MIN_SPAN_CODES


def test_clipped_fraction_reported_by_every_quantizing_command(tmp_path, capsys):
    assert main(["vectors", *SMALL, "--out", str(tmp_path / "v")]) == 0
    assert "calibration: 0.000 % of the input clipped" in capsys.readouterr().out
    assert main(["reference", *SMALL, "--out", str(tmp_path / "r")]) == 0
    assert "clipped by calibration" in capsys.readouterr().out
    assert main(["run", *SMALL, "--sim", "none", "--frames", "1", "--out",
                 str(tmp_path / "o")]) == 0
    assert "clipped by calibration" in capsys.readouterr().out


def test_calibration_fit_measures():
    x = np.linspace(0.0, 1.0, 1000, dtype=np.float32)
    f = calibration_check.fit(x, scale=1.0 / 255, zero_point=0)
    assert f["input_clipped_fraction"] == 0 and round(f["input_span_codes"]) == 255
    f = calibration_check.fit(x, scale=0.5 / 255, zero_point=0)   # the top half clips
    assert abs(f["input_clipped_fraction"] - 0.5) < 0.01


# ---- excite multipliers beyond what the unit builds --------------------------------------
def test_excite_multipliers_used_are_reported(tmp_path, capsys):
    assert main(["rtl", *SMALL, "--excite-multipliers", "1000000", "--out",
                 str(tmp_path / "r")]) == 0
    out = capsys.readouterr().out
    assert "excite multipliers: 1000000 configured, 8 built" in out
    report = json.loads((tmp_path / "r" / "resources.json").read_text())
    assert report["excite_multipliers_built"] == 8
    assert main(["rtl", *SMALL, "--excite-multipliers", "4", "--out", str(tmp_path / "r")]) == 0
    assert "configured" not in capsys.readouterr().out
