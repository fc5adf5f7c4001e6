"""tse.api: the Python API equals `tse vectors` bit for bit on the same weights, calibration and
input; C, hidden, H, W are inferred; bad input is one clear error; the README's and
docs/api.md's examples run; docs/formats.md names every manifest key the writers emit."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tse
from tse.quant import reference as quant_reference
from tse.ref_model import artifacts
from tse.ref_model.errors import ConfigError, InputError
from tse.cli import main

ROOT = Path(__file__).resolve().parents[1]
C, HIDDEN, H, W = 12, 4, 9, 10
OPTIONS = {"tile": "4x3", "lanes": 4, "seed": 2}


class LinearSE(torch.nn.Module):
    """An SE module as many code bases write it: Linear excite layers named fc1/fc2."""

    def __init__(self, c, hidden):
        super().__init__()
        self.fc1 = torch.nn.Linear(c, hidden)
        self.fc2 = torch.nn.Linear(hidden, c)


def activations(seed, frames, c=C, h=H, w=W):
    rng = np.random.default_rng(seed)
    return np.maximum(rng.normal(0.3, 1.0, size=(frames, c, h, w)), 0).astype(np.float32)


@pytest.fixture(scope="module")
def inputs():
    torch.manual_seed(5)
    return LinearSE(C, HIDDEN), activations(1, 2), activations(2, 6)


@pytest.fixture(scope="module")
def both(inputs, tmp_path_factory):
    """The same vectors through the CLI (files) and through the API (objects in memory)."""
    block, x, calib = inputs
    tmp = tmp_path_factory.mktemp("api")
    torch.save(block.state_dict(), tmp / "se.pt")
    np.save(tmp / "x.npy", x)
    np.save(tmp / "calib.npy", calib)
    cli = tmp / "cli"
    # in this process: the calibration's float reductions depend on torch's thread count
    # (conftest sets 1; a fresh `tse` process uses every core and may differ by an ulp)
    rc = main(["vectors", "--channels", str(C), "--height", str(H), "--width", str(W),
               "--reduction", "3", "--tile", "4x3", "--lanes", "4", "--seed", "2",
               "--weights", str(tmp / "se.pt"), "--input", str(tmp / "x.npy"),
               "--calibration", str(tmp / "calib.npy"), "--name", "se_a", "--out", str(cli),
               "--json"])
    assert rc == 0
    ref = tse.reference(block, x, calibration=calib, **OPTIONS)
    vec = tse.vectors(ref, out=tmp / "api", name="se_a")
    return cli, tmp / "api", ref, vec


def test_api_vectors_equal_the_cli_bit_for_bit(both):
    cli, api, _, vec = both
    mc, ma = artifacts.read_manifest(cli), artifacts.read_manifest(api)
    files_c = {f["path"]: f["sha256"] for f in mc["files"]}
    files_a = {f["path"]: f["sha256"] for f in ma["files"]}
    assert set(files_c) == set(files_a) and len(files_c) > 20
    assert "se_a.v" in files_a and "se_a.core" in files_a and "tse_unit.v" not in files_a
    for path in files_c:                    # every .npy, hex, ROM image, Verilog, testbench
        assert (cli / path).read_bytes() == (api / path).read_bytes(), path
    assert artifacts.verify(api) == []
    for key in set(mc) | set(ma):
        if key != "sources":                # file names on the CLI, "in memory" here
            assert mc[key] == ma[key], key
    assert ma["sources"]["weights"].startswith("in memory")
    for stage, arr in vec.stages.items():   # the returned arrays are the files' arrays
        assert np.array_equal(arr, np.load(cli / f"{stage}.npy")), stage


def test_api_without_out_writes_nothing_and_returns_the_same_arrays(both, tmp_path,
                                                                     monkeypatch):
    cli, _, ref, _ = both
    monkeypatch.chdir(tmp_path)
    vec = tse.vectors(ref)
    assert vec.out is None and list(tmp_path.iterdir()) == []
    assert np.array_equal(vec.stages["output"], np.load(cli / "output.npy"))


def test_shapes_are_inferred_from_the_weights_and_the_input():
    class TimmSE(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv_reduce = torch.nn.Conv2d(24, 6, 1)
            self.conv_expand = torch.nn.Conv2d(6, 24, 1)

    x = torch.rand(1, 24, 8, 7)
    cfg = tse.config_for(TimmSE(), x)
    assert (cfg.channels, cfg.hidden, cfg.height, cfg.width) == (24, 6, 8, 7)
    assert cfg.reduction == 4 and cfg.lanes == 8
    cfg = tse.config_for({"se.fc1.weight": torch.zeros(3, 10), "se.fc1.bias": torch.zeros(3),
                          "se.fc2.weight": torch.zeros(10, 3), "se.fc2.bias": torch.zeros(10)},
                         np.zeros((10, 7, 6), np.float32), lanes=5)
    assert (cfg.channels, cfg.hidden, cfg.height, cfg.width, cfg.lanes) == (10, 3, 7, 6, 5)
    assert cfg.reduction == 3                    # 10 // 3 == 3
    assert tse.config_for(LinearSE(12, 4), np.zeros((12, 9, 10))).lanes == 4   # gcd(12, 8)
    from tse.quant.float_block import TSE
    cfg = tse.config_for(TSE(16, (3, 5), 2), np.zeros((16, 9, 10)))
    assert (cfg.tile, cfg.hidden) == ("3x5", 8)
    # A hidden width no reduction gives (C=10, hidden 4) keeps reduction 0.
    cfg = tse.config_for(LinearSE(10, 4), np.zeros((10, 7, 6)), lanes=5)
    assert (cfg.channels, cfg.hidden, cfg.reduction) == (10, 4, 0)
    # The project's block carries its dialect into the configuration.
    block = TSE(16, (3, 5), hidden=5, hidden_activation="silu", gate="hardsigmoid",
                gate_slope=0.2, gate_offset=0.5)
    cfg = tse.config_for(block, np.zeros((16, 9, 10)))
    assert (cfg.hidden, cfg.hidden_activation, cfg.gate, cfg.gate_slope) == (5, "silu",
                                                                             "hardsigmoid", 0.2)


def bad_cases():
    good_x = activations(0, 1)
    wrong_fc2 = LinearSE(C, HIDDEN)
    wrong_fc2.fc2 = torch.nn.Linear(HIDDEN + 1, C)
    nan_block = LinearSE(C, HIDDEN)
    with torch.no_grad():
        nan_block.fc1.weight[0, 0] = float("nan")
    return [
        ("fc2 shape", wrong_fc2, good_x, {}, InputError, ["fc2.weight", "[12, 5]", "[12, 4]"]),
        ("inferred hidden", LinearSE(C, HIDDEN), good_x, {"hidden": 3}, ConfigError,
         ["hidden", "infers"]),
        ("no SE layers", torch.nn.Linear(4, 4), good_x, {}, InputError, ["no SE excite layers"]),
        ("not a module", [1, 2], good_x, {}, InputError, ["block: list", "state_dict"]),
        ("input channels", LinearSE(C, HIDDEN), activations(0, 1, c=C + 1), {}, InputError,
         ["input", "[1, 13, 9, 10]", f"[N, {C}, {H}, {W}]"]),
        ("input rank", LinearSE(C, HIDDEN), np.zeros((C, H)), {}, InputError,
         ["input", "[12, 9]", "[N, C, H, W]"]),
        ("input dtype", LinearSE(C, HIDDEN), np.zeros((1, C, H, W), np.int32), {}, InputError,
         ["int32", "float32"]),
        ("NaN weight", nan_block, good_x, {}, InputError, ["fc1.weight", "NaN"]),
        ("inferred option", LinearSE(C, HIDDEN), good_x, {"channels": 12}, ConfigError,
         ["channels", "infers"]),
        ("unknown option", LinearSE(C, HIDDEN), good_x, {"lane": 4}, ConfigError,
         ["'lane'", "did you mean 'lanes'"]),
        ("lanes", LinearSE(C, HIDDEN), good_x, {"lanes": 5}, ConfigError,
         ["lanes: 5", "divisor of 12"]),
    ]


@pytest.mark.parametrize("name, block, x, options, error, words", bad_cases(),
                         ids=[c[0] for c in bad_cases()])
def test_bad_input_is_one_clear_error(name, block, x, options, error, words):
    with pytest.raises(error) as e:
        tse.reference(block, x, **options)
    message = str(e.value)
    assert "\n" not in message and isinstance(e.value, ValueError)
    for w in words:
        assert w in message, (w, message)


def test_bad_calibration_is_refused_unless_allowed(inputs):
    block, x, _ = inputs
    flat = np.full_like(x, 0.01)       # calibrated on a constant: x clipped far past 5 %
    with pytest.raises(InputError, match="calibration"):
        tse.reference(block, x, calibration=flat, **OPTIONS)
    with pytest.warns(UserWarning, match="calibration"):
        ref = tse.reference(block, x, calibration=flat, allow_bad_calibration=True, **OPTIONS)
    assert isinstance(ref, quant_reference.Reference)


def python_blocks(path: Path, section: str | None = None) -> list[str]:
    text = path.read_text()
    if section:
        start = text.index(section)
        end = text.find("\n## ", start + len(section))
        text = text[start:end if end > 0 else None]
    return re.findall(r"```python\n(.*?)```", text, re.S)


@pytest.mark.parametrize("path, section", [("README.md", "## Python API"),
                                           ("docs/api.md", None)])
def test_documented_example_runs(path, section, tmp_path):
    blocks = python_blocks(ROOT / path, section)
    assert len(blocks) == 1
    r = subprocess.run([sys.executable, "-c", blocks[0]], cwd=tmp_path, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "se_vectors"
    assert artifacts.read_manifest(out)["kind"] == "golden-vectors"
    assert artifacts.verify(out) == []


# ---- docs/formats.md names what the writers emit -----------------------------------------

def table_keys(heading: str, column: int = 0) -> set[str]:
    """The backquoted names in a column of the table under heading in docs/formats.md."""
    text = (ROOT / "docs/formats.md").read_text()
    lines = text[text.index(heading) + len(heading):].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    keys = set()
    for line in lines[first + 2:]:         # past the header row and its rule
        if not line.startswith("|"):
            break                          # the table ends at its first non-row line
        cells = line.split("|")[1:-1]
        if len(cells) > column:
            keys.update(re.findall(r"`([^`]+)`", cells[column]))
    assert keys, f"no table under {heading!r}"
    return keys


def test_formats_md_documents_every_vectors_manifest_key(both):
    _, api, _, _ = both
    m = json.loads((api / artifacts.MANIFEST).read_text())
    assert set(m) == table_keys("### manifest.json of a vectors directory")
    assert set(m["unit"]) == table_keys("The `unit` section")
    text = (ROOT / "docs/formats.md").read_text()
    for section in ("geometry", "schedule", "memory_bits", "cost"):
        for key in m["unit"][section]:
            assert f"`{key}`" in text, (section, key)
    for entry in m["hex"].values():
        for key in entry:
            assert f"`{key}`" in text, ("hex", key)
    roles = table_keys("### Files and their roles", column=1)
    for f in m["files"]:      # rom_w1 -> rom_<name>, input_hex -> <stage>_hex
        generic = re.sub(r"^(rom|param)_[a-z0-9_]+$", r"\1_<name>", f["role"])
        generic = re.sub(r"^[a-z_]+_hex$", "<stage>_hex", generic)
        assert f["role"] in roles or generic in roles, f["role"]
    for role in roles - {"<stage>_hex", "rom_<name>", "param_<name>"}:
        assert role in {f["role"] for f in m["files"]}, role


def test_formats_md_documents_every_reference_manifest_key(both, tmp_path):
    _, _, ref, _ = both
    quant_reference.write(ref, tmp_path / "ref")
    m = json.loads((tmp_path / "ref" / artifacts.MANIFEST).read_text())
    assert set(m) == table_keys("## manifest.json of `tse reference`")
