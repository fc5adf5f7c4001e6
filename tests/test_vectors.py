"""`tse vectors` and `tse bench`: golden vectors round-trip, agree with quantized PyTorch,
and every hex image decodes to its .npy; the benchmark prints what it promises."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tse.ref_model import artifacts, hexfmt

SMALL = ["--channels", "12", "--height", "9", "--width", "10", "--tile", "4x3", "--reduction",
         "3", "--lanes", "4", "--seed", "2"]


def tse(*args):
    return subprocess.run([sys.executable, "-m", "tse", *args], capture_output=True, text=True)


@pytest.fixture(scope="module", params=["torch", "hw"])
def vectors_dir(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("v") / request.param
    r = tse("vectors", *SMALL, "--frames", "2", "--profile", request.param, "--out", str(out),
            "--json")
    assert r.returncode == 0, r.stderr
    return request.param, out, json.loads(r.stdout)


def test_torch_profile_equals_quantized_pytorch(vectors_dir):
    profile, out, summary = vectors_dir
    m = artifacts.read_manifest(out)
    assert m["profile"] == profile and m["engine"] == "fbgemm" and m["frames"] == 2
    if profile == "torch":
        assert all(d["mismatches"] == 0 for d in summary["vs_quantized_pytorch"].values())
    assert set(summary["vs_quantized_pytorch"]) == {"pooled", "hidden", "excite", "gate", "output"}


def test_every_hex_image_decodes_to_its_array(vectors_dir):
    _, out, _ = vectors_dir
    m = artifacts.read_manifest(out)
    assert artifacts.verify(out) == []
    arrays = artifacts.load_arrays(out)
    for stage in ("input", "tile_sums", "pooled", "hidden", "excite", "gate", "output"):
        lay = m["hex"][stage]
        got = hexfmt.read(out / lay["path"], lay["bits"], lay["lanes"], lay["signed"])
        assert np.array_equal(got, arrays[stage].reshape(-1)), stage
    # input and output are AXI beats: P lanes per line, lane 0 = lowest channel of the beat
    assert m["hex"]["input"]["lanes"] == 4
    first = (out / "hex/input.hex").read_text().splitlines()[0]
    x = arrays["input"]
    assert int(first, 16) == sum(int(x[0, 0, 0, c]) << (8 * c) for c in range(4))
    assert len((out / "hex/output.hex").read_text().splitlines()) == 2 * 9 * 10 * 12 // 4
    for image in ("rom_w1", "rom_w2", "rom_fc1", "rom_fc2", "rom_sigmoid", "param_reciprocal",
                  "param_mul_multiplier"):      # ROM contents: tests/test_rom_images.py
        lay = m["hex"][image]
        assert (out / lay["path"]).is_file()
    sig = hexfmt.read(out / "hex/rom_sigmoid.hex", 8, 1, False)
    assert sig.size == 256 and np.all(np.diff(sig) >= 0)   # a sigmoid table is monotone


def test_check_pins_a_wrong_output_to_its_coordinates(vectors_dir, tmp_path):
    _, out, _ = vectors_dir
    words = (out / "hex/output.hex").read_text().splitlines()
    # beat 95 of frame 0: pixel 95 // 3 = 31 -> row 3, column 1; channels 4*(95 % 3) = 8..11
    lanes = int(words[95], 16)
    words[95] = format(lanes ^ (1 << 16), "08x")          # flip a bit of lane 2: channel 10
    (tmp_path / "output.hex").write_text("\n".join(words) + "\n")
    r = tse("check", str(out), "--against", str(tmp_path / "output.hex"), "--json")
    assert r.returncode == 1
    first = json.loads(r.stdout)["comparison"]["first"]
    assert (first["frame"], first["row"], first["column"], first["channel"]) == (0, 3, 1, 10)


def test_bad_vectors_input_is_one_clear_error(tmp_path):
    r = tse("vectors", *SMALL, "--frames", "0", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "frames: 0 is not allowed" in r.stderr
    r = tse("vectors", *SMALL[:-2], "--lanes", "5", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "lanes: 5 does not divide channels=12" in r.stderr


def test_bench_prints_one_json_object_per_line():
    r = tse("bench", "--quick", "--repeats", "1", "--json")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    rows = [l for l in lines if "impl" in l]
    assert {r["impl"] for r in rows} == {
        "copy", "numba_hw", "numba_torch", "numpy", "torch_quantized",
        "eca_numba_hw", "eca_numpy_hw", "srm_numba_hw", "srm_numpy_hw",
        "excite3x1_numba_hw", "excite3x1_numpy_hw"}
    assert all(set(r) == {"shape", "impl", "melem_s"} and r["melem_s"] > 0 for r in rows)
    targets = [l["target"] for l in lines if "target" in l]
    assert targets and all({"ratio", "target", "met"} <= set(t) for t in targets)


def test_torch_profile_tile_sums_fit_their_hex_whatever_the_hw_sum_width(tmp_path):
    """The torch profile's sums are exact: with a narrowed (saturating) hw sum register of 12
    bits, a 7x14 tile's sums (up to 255 * 98 = 24990) still round-trip through their hex."""
    (tmp_path / "narrow.toml").write_text("[hw]\nsum_bits = 12\nsaturate = true\n")
    out = tmp_path / "v"
    r = tse("vectors", "--config", str(tmp_path / "narrow.toml"), "--channels", "8",
            "--height", "14", "--width", "14", "--tile", "7xW", "--lanes", "4",
            "--profile", "torch", "--out", str(out))
    assert r.returncode == 0, r.stderr[-2000:]
    sums = np.load(out / "tile_sums.npy")
    assert np.abs(sums).max() >= 2 ** 11                      # beyond the hw register
    lay = json.loads((out / "manifest.json").read_text())["hex"]["tile_sums"]
    got = hexfmt.read(out / lay["path"], lay["bits"], lay["lanes"], lay["signed"])
    np.testing.assert_array_equal(got.reshape(-1), sums.reshape(-1))
