"""`tse reference` output: the manifest, checksums, parameter round trip, atomic writes."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tse.quant import reference
from tse.ref_model import artifacts
from tse.ref_model.config import TSEConfig
from tse.ref_model.params import QuantParams

CFG = TSEConfig(channels=12, height=9, width=10, tile="4x3", reduction=3, lanes=4, seed=5)
ROLES = {"input_float", "input", "pooled", "hidden", "excite", "gate", "output",
         "w1", "b1", "w2", "b2"}


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    ref = reference.build(CFG, frames=2)
    out = tmp_path_factory.mktemp("ref") / "r"
    reference.write(ref, out)
    return ref, out


def test_manifest_lists_every_role_with_matching_sha256(written):
    ref, out = written
    m = artifacts.read_manifest(out)
    assert ROLES <= {f["role"] for f in m["files"]}
    assert artifacts.verify(out) == []
    for f in m["files"]:
        arr = np.load(out / f["path"])
        assert list(arr.shape) == f["shape"] and str(arr.dtype) == f["dtype"]
    assert m["engine"] == "fbgemm" and m["seed"] == 5 and m["versions"]["torch"].startswith("2.13.0")
    assert m["config"] == CFG.to_dict()
    q = m["quant"]
    for role in ("input", "pooled", "hidden", "excite", "gate", "output"):
        assert isinstance(q[f"{role}_scale"], float) and isinstance(q[f"{role}_zero_point"], int)
    assert len(q["w1_scale"]) == CFG.hidden and len(q["w2_scale"]) == CFG.channels
    assert np.load(out / "w1.npy").dtype == np.int8 and np.load(out / "b1.npy").dtype == np.float32


def test_params_round_trip_without_torch(written):
    ref, out = written
    m = artifacts.read_manifest(out)
    loaded = QuantParams.from_artifacts(m["engine"], m["quant"], artifacts.load_arrays(out))
    assert loaded.equals(ref.params)
    # and a changed code is noticed
    loaded.w1[0, 0] ^= 1
    assert not loaded.equals(ref.params)


def test_params_round_trip_per_tensor(tmp_path):
    ref = reference.build(CFG.replace(engine="qnnpack"))
    reference.write(ref, tmp_path / "q")
    m = artifacts.read_manifest(tmp_path / "q")
    assert isinstance(m["quant"]["w1_scale"], float)
    loaded = QuantParams.from_artifacts(m["engine"], m["quant"], artifacts.load_arrays(tmp_path / "q"))
    assert loaded.equals(ref.params)


def test_ref_model_does_not_import_torch():
    code = ("import sys, tse.ref_model, tse.ref_model.params, tse.ref_model.artifacts, "
            "tse.ref_model.plan; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_changed_file_is_detected(written, tmp_path):
    _, out = written
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    arr = np.load(copy / "gate.npy")
    arr.flat[0] ^= 1
    np.save(copy / "gate.npy", arr)
    problems = artifacts.verify(copy)
    assert len(problems) == 1 and "gate.npy (gate): sha256" in problems[0]
    (copy / "w2.npy").unlink()
    assert any("w2.npy (w2): missing" in p for p in artifacts.verify(copy))


def test_failed_write_leaves_the_old_directory(tmp_path):
    out = tmp_path / "d"
    artifacts.write_artifacts(out, {"a": np.arange(3)}, {"k": 1})

    class Boom:
        def __array__(self, *a, **k):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        artifacts.write_artifacts(out, {"a": np.arange(4), "b": Boom()}, {"k": 2})
    assert artifacts.read_manifest(out)["k"] == 1 and np.array_equal(np.load(out / "a.npy"), np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["d"]


def test_cli_reference_with_user_files(tmp_path):
    cfg_args = ["--channels", "8", "--height", "5", "--width", "6", "--tile", "2x4",
                "--reduction", "2", "--lanes", "8"]
    x = np.random.default_rng(0).random((3, 8, 5, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run([sys.executable, "-m", "tse", "reference", *cfg_args, "--out",
                        str(tmp_path / "o"), "--input", str(tmp_path / "x.npy"),
                        "--calibration", str(tmp_path / "x.npy"), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["frames"] == 3
    assert np.array_equal(np.load(tmp_path / "o" / "input_float.npy"), x)
    # a wrongly shaped file is one clear error
    np.save(tmp_path / "bad.npy", x[:, :4])
    r = subprocess.run([sys.executable, "-m", "tse", "reference", *cfg_args, "--out",
                        str(tmp_path / "o2"), "--input", str(tmp_path / "bad.npy")],
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "input:" in r.stderr and "[3, 4, 5, 6]" in r.stderr and "[N, 8, 5, 6]" in r.stderr
    assert not (tmp_path / "o2").exists()
