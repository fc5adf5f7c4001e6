"""SE dialects (issue 17) through the chain: free hidden width, SiLU after fc1, a hard sigmoid
gate of any slope. The float block against loops written here; the torch profile against
quantized PyTorch run here (0 mismatches on every stage); the streaming model, the numba
kernels (fast and per-element) and the numpy model against each other; the tables against
torch's own activation kernels on every code."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tse.quant.float_block import TSE
from tse.quant.reference import build
from tse.quant.quantized_block import extract_params, quantize, seeded_weights
from tse.ref_model import kernels, numpy_model, streaming
from tse.ref_model import numerics as nm
from tse.ref_model.config import TSEConfig
from tse.ref_model.errors import ConfigError

from test_numerics import SETTINGS, examples

DIALECTS = {
    "silu": dict(hidden_activation="silu"),
    "hardsigmoid": dict(gate="hardsigmoid"),
    "hardsigmoid-0.2": dict(gate="hardsigmoid", gate_slope=0.2),
    "silu-hardsigmoid-0.2-offset": dict(hidden_activation="silu", gate="hardsigmoid",
                                        gate_slope=0.25, gate_offset=0.375),
    "hidden5": dict(hidden=5),
}
C, H, W = 12, 9, 10


def _cfg(name, **kw):
    base = dict(channels=C, height=H, width=W, tile="4x3", lanes=4, **DIALECTS[name])
    return TSEConfig(**{**base, **kw})


# ---- float block -------------------------------------------------------------------------

def loops(x, w1, b1, w2, b2, th, tw, act, slope, offset, gate):
    """The block from its definition, float64 loops: per tile the mean, fc1, the hidden
    activation, fc2, the gate, and every pixel times its tile's gate."""
    n, c, h, w = x.shape
    y = np.empty_like(x)
    for b in range(n):
        for r0 in range(0, h, th):
            for c0 in range(0, w, tw):
                tile = x[b, :, r0:r0 + th, c0:c0 + tw]
                mean = tile.reshape(c, -1).sum(axis=1) / tile[0].size
                a = w1 @ mean + b1
                hid = a / (1 + np.exp(-a)) if act == "silu" else np.maximum(a, 0)
                e = w2 @ hid + b2
                g = (1 / (1 + np.exp(-e)) if gate == "sigmoid"
                     else np.clip(slope * e + offset, 0, 1))
                y[b, :, r0:r0 + th, c0:c0 + tw] = tile * g[:, None, None]
    return y


@pytest.mark.parametrize("name", DIALECTS)
def test_float_block_matches_loops(name):
    cfg = _cfg(name)
    torch.manual_seed(1)
    block = TSE(C, (4, 3), hidden=cfg.hidden, hidden_activation=cfg.hidden_activation,
                gate=cfg.gate, gate_slope=cfg.gate_slope, gate_offset=cfg.gate_offset)
    block = seeded_weights(block, 5).double().eval()
    x = torch.rand(2, C, H, W, dtype=torch.float64) * 4
    with torch.no_grad():
        got = block(x).numpy()
    p = {k: v.numpy() for k, v in block.state_dict().items()}
    want = loops(x.numpy(), p["conv1.weight"][:, :, 0, 0], p["conv1.bias"],
                 p["conv2.weight"][:, :, 0, 0], p["conv2.bias"], 4, 3, cfg.hidden_activation,
                 cfg.gate_slope, cfg.gate_offset, cfg.gate)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert block.conv1.out_channels == cfg.hidden


# ---- the tables against torch's kernels ----------------------------------------------------

def _qcodes(scale, zp):
    return torch._make_per_tensor_quantized_tensor(torch.arange(256, dtype=torch.uint8),
                                                   scale, zp)


@pytest.mark.parametrize("engine", ["fbgemm", "qnnpack"])
def test_activation_tables_equal_torch_on_every_code(engine):
    """1500 random (scale, zero point) pairs: the quantized Hardsigmoid kernel, the float hard
    sigmoid of slope 0.2 and SiLU between dequantize and quantize_per_tensor (the stubs),
    every code."""
    rng = np.random.default_rng(7)
    torch.backends.quantized.engine = engine
    for _ in range(1500):
        s, zp = float(np.exp(rng.uniform(-7, -1))), int(rng.integers(0, 256))
        s2, zp2 = float(np.exp(rng.uniform(-7, -2))), int(rng.integers(0, 256))
        q = _qcodes(s, zp)
        hs = torch.nn.functional.hardsigmoid(q)
        assert (hs.q_scale(), hs.q_zero_point()) == (1 / 256, 0)
        assert np.array_equal(nm.hardsigmoid_table(s, zp, 1 / 6, 0.5, engine),
                              hs.int_repr().numpy())
        xf = q.dequantize()
        for slope, offset in ((0.2, 0.5), (0.125, 0.3), (1.7, -0.2)):
            y = torch.clamp(xf * slope + offset, 0.0, 1.0)
            want = torch.quantize_per_tensor(y, 1 / 256, 0, torch.quint8).int_repr().numpy()
            assert np.array_equal(nm.hardsigmoid_table(s, zp, slope, offset), want)
        want = torch.quantize_per_tensor(torch.nn.functional.silu(xf), s2, zp2,
                                         torch.quint8).int_repr().numpy()
        assert np.array_equal(nm.silu_table(s, zp, s2, zp2), want)


# ---- the whole block: torch profile == quantized PyTorch ------------------------------------

def _quantized(cfg, engine, seed=3):
    """A block of cfg's dialect quantized here, its input codes and every stage's codes
    (channels last) as PyTorch computes them."""
    gen = torch.Generator().manual_seed(seed)
    block = TSE(C, (cfg.tile_rows, cfg.tile_cols), hidden=cfg.hidden,
                hidden_activation=cfg.hidden_activation, gate=cfg.gate,
                gate_slope=cfg.gate_slope, gate_offset=cfg.gate_offset)
    block = seeded_weights(block, seed).eval()
    scales = torch.linspace(0.5, 3.0, C)[:, None, None]
    calib = torch.rand(6, C, cfg.height, cfg.width, generator=gen) * scales
    x = torch.rand(3, C, cfg.height, cfg.width, generator=gen) * scales * 1.3  # past calibration
    model = quantize(block, calib, engine)
    torch.backends.quantized.engine = engine
    with torch.no_grad():
        out = model.stages(x)
    codes = {k: v.int_repr().numpy().transpose(0, 2, 3, 1) for k, v in out.items()
             if k != "output_float"}
    return extract_params(model), codes


@pytest.mark.parametrize("engine", ["fbgemm", "qnnpack"])
@pytest.mark.parametrize("name", DIALECTS)
def test_torch_profile_equals_quantized_pytorch(name, engine):
    cfg = _cfg(name, engine=engine, profile="torch")
    qp, want = _quantized(cfg, engine)
    x = np.ascontiguousarray(want["input"])
    ip = nm.derive(qp, cfg)
    for fast in (True, False):
        got = kernels.run(cfg, ip, x, "torch", fast=fast)
        for stage in ("pooled", "hidden", "excite", "gate", "output"):
            assert np.array_equal(got[stage], want[stage]), (
                f"{stage} fast={fast}: {(got[stage] != want[stage]).sum()} mismatches")
    if cfg.hidden_activation == "silu":     # SiLU really sits between two qparams
        assert qp.zero_points["hidden_pre"] != qp.zero_points["hidden"] or \
            qp.scales["hidden_pre"] != qp.scales["hidden"]
    assert len(np.unique(want["gate"])) > 20     # the gate's table is exercised


# ---- implementations agree: streaming == kernels == numpy model -----------------------------

@pytest.mark.parametrize("name", DIALECTS)
def test_streaming_kernels_numpy_agree(name):
    cfg = _cfg(name)
    qp, want = _quantized(cfg, "fbgemm", seed=4)
    ip = nm.derive(qp, cfg)
    x = np.ascontiguousarray(want["input"][:2])
    fast = kernels.run(cfg, ip, x, "hw")
    slow = kernels.run(cfg, ip, x, "hw", fast=False)
    st = streaming.run(cfg, ip, x)
    ref = numpy_model.run(cfg, ip, x)
    for stage in nm.STAGES:
        for other, label in ((slow, "per-element"), (st, "streaming"), (ref, "numpy")):
            assert np.array_equal(fast[stage], other[stage]), f"{stage}: fast vs {label}"


def test_int_params_round_trip_with_silu_table(tmp_path):
    cfg = _cfg("silu")
    qp, _ = _quantized(cfg, "fbgemm")
    ip = nm.derive(qp, cfg)
    assert ip.hidden_lut is not None and not np.array_equal(ip.hidden_lut, np.arange(256))
    ip.save(tmp_path / "ip")
    back = nm.IntParams.load(tmp_path / "ip")
    assert back.equals(ip) and np.array_equal(back.hidden_lut, ip.hidden_lut)
    with pytest.raises(Exception, match="hidden activation"):
        nm.int_params_for(cfg.replace(hidden_activation="relu"), back)


# ---- configuration ------------------------------------------------------------------------

def test_regnet_s4_b1_is_representable():
    cfg = TSEConfig(channels=768, height=14, width=14, tile="HxW", hidden=80)
    assert (cfg.hidden, cfg.reduction) == (80, 0)
    assert TSEConfig.from_dict(cfg.to_dict()) == cfg
    assert TSEConfig().replace(channels=768, hidden=80).hidden == 80
    assert TSEConfig().replace(channels=64).hidden == 16      # hidden follows the reduction


@pytest.mark.parametrize("flags, words", [
    (["--channels", "768", "--hidden", "80", "--reduction", "4"], ["hidden: 80", "192"]),
    (["--hidden", "129"], ["hidden: 129", "1..128"]),
    (["--gate", "hardsigmoid", "--gate-slope", "0"], ["gate_slope: 0.0", "> 0"]),
    (["--gate", "hardsigmoid", "--gate-slope", "abc"], ["gate_slope", "a number"]),
    (["--gate-slope", "0.2"], ["gate = 'hardsigmoid'"]),
    (["--hidden-activation", "gelu"], ["hidden_activation: 'gelu'", "relu, silu"]),
    (["--gate", "tanh"], ["gate: 'tanh'", "sigmoid, hardsigmoid"]),
])
def test_cli_rejects_bad_dialect_flags(flags, words):
    r = subprocess.run([sys.executable, "-m", "tse", "config", *flags], capture_output=True,
                       text=True)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_config_accepts_dialects():
    cfg = TSEConfig(gate="hardsigmoid", gate_slope=0.2, gate_offset=0.5,
                    hidden_activation="silu")
    assert cfg.dialect == {"hidden_activation": "silu", "gate": "hardsigmoid",
                           "gate_slope": 0.2, "gate_offset": 0.5}
    with pytest.raises(ConfigError, match="gate_offset: nan"):
        TSEConfig(gate="hardsigmoid", gate_offset=float("nan"))


# ---- the RTL (Amaranth's simulator) == the model, per dialect --------------------------------

@pytest.mark.parametrize("name", DIALECTS)
def test_rtl_unit_matches_model(name):
    from rtl_helpers import frame_beats, gates_of, outputs_of, run_unit
    from tse.rtl.unit import TSEUnit
    cfg = _cfg(name, height=7, width=12, tile="4xW", lanes=2, excite_multipliers=4)
    assert cfg.excite_keeps_up          # so the timing is compared too
    qp, want = _quantized(cfg, "fbgemm", seed=6)
    ip = nm.derive(qp, cfg)
    x = np.ascontiguousarray(want["input"][:2])
    res = run_unit(TSEUnit(cfg, ip), frame_beats(x, cfg.lanes))
    ref = kernels.run(cfg, ip, x, "hw")
    model = streaming.run(cfg, ip, x, profile="hw")
    np.testing.assert_array_equal(outputs_of(res, cfg), ref["output"])
    np.testing.assert_array_equal(outputs_of(res, cfg), model["output"])
    np.testing.assert_array_equal(gates_of(res, cfg), ref["gate"])
    assert res["error"] == 0
    assert res["in_stalls"] == 0 == model["stats"]["input_stall_cycles"]
    assert max(res["levels"]) == model["stats"]["peak_strip_buffer_occupancy"]


def test_vectors_carry_the_dialect(tmp_path):
    """`tse vectors` of a SiLU, ONNX-hard-sigmoid unit with a free hidden width: the manifest
    carries the fields and SiLU's input qparams, the gate ROM holds the hard sigmoid torch
    computes on the excite qparams, the silu ROM is written, and the torch profile's vectors
    equal quantized PyTorch."""
    import json
    out = tmp_path / "v"
    r = subprocess.run([sys.executable, "-m", "tse", "vectors", "--channels", "12", "--hidden",
                        "5", "--height", "6", "--width", "6", "--tile", "3xW", "--lanes", "4",
                        "--hidden-activation", "silu", "--gate", "hardsigmoid",
                        "--gate-slope", "0.2", "--profile", "torch", "--out", str(out),
                        "--json"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert all(v["mismatches"] == 0 for v in summary["vs_quantized_pytorch"].values())
    m = json.loads((out / "manifest.json").read_text())
    assert {k: m["config"][k] for k in ("hidden", "hidden_activation", "gate", "gate_slope",
                                        "gate_offset")} == {
        "hidden": 5, "hidden_activation": "silu", "gate": "hardsigmoid", "gate_slope": 0.2,
        "gate_offset": 0.5}
    q = m["quant"]
    assert q["hidden_pre_scale"] > 0 and 0 <= q["hidden_pre_zero_point"] <= 255
    xf = _qcodes(q["excite_scale"], q["excite_zero_point"]).dequantize()
    want = torch.quantize_per_tensor(torch.clamp(xf * 0.2 + 0.5, 0.0, 1.0), 1 / 256, 0,
                                     torch.quint8).int_repr().numpy()
    rom = [int(v, 16) for v in (out / "hex" / "rom_sigmoid.hex").read_text().split()]
    assert rom == want.tolist()
    silu = (out / "hex" / "rom_silu.hex").read_text().split()
    assert len(silu) == 256
    assert "hex/rom_silu.hex" in [f["path"] for f in m["files"]]


# ---- property tests: random shapes of every dialect --------------------------------------

@st.composite
def dialect_configs(draw):
    """A random small configuration of a random dialect: any hidden width 1..C, ReLU or
    SiLU, sigmoid or a hard sigmoid of PyTorch's slope 1/6, ONNX's 0.2 or any slope and
    offset; any tile (partial edge tiles), lanes a divisor of C, either engine."""
    c = draw(st.integers(1, 12))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    rows = draw(st.sampled_from(["H", *map(str, range(1, h + 1))]))
    cols = draw(st.sampled_from(["W", *map(str, range(1, w + 1))]))
    gate = draw(st.sampled_from(["sigmoid", "hardsigmoid"]))
    slope, offset = 1 / 6, 0.5
    if gate == "hardsigmoid":
        slope = draw(st.sampled_from([1 / 6, 0.2, draw(st.floats(0.05, 2.0))]))
        offset = draw(st.sampled_from([0.5, draw(st.floats(-0.5, 1.0))]))
    return TSEConfig(channels=c, height=h, width=w, tile=f"{rows}x{cols}",
                     hidden=draw(st.integers(1, c)),
                     hidden_activation=draw(st.sampled_from(["relu", "silu"])),
                     gate=gate, gate_slope=slope, gate_offset=offset,
                     lanes=draw(st.sampled_from([d for d in range(1, c + 1) if c % d == 0])),
                     engine=draw(st.sampled_from(["fbgemm", "qnnpack"])),
                     seed=draw(st.integers(0, 2 ** 16)))


@settings(max_examples=examples(40), **SETTINGS)
@given(cfg=dialect_configs())
def test_dialects_property_torch_profile_and_implementations_agree(cfg):
    """Random dialect configurations: the torch profile equals quantized PyTorch on every
    stage (both kernel paths), and in both profiles the streaming model, the fast and
    per-element kernels and (hw) the numpy model agree bit for bit."""
    ref = build(cfg.replace(profile="torch"), frames=2)
    ip = nm.derive(ref.params, cfg)
    x = kernels.nhwc(ref.codes["input"])
    for fast in (True, False):
        got = kernels.run(cfg, ip, x, "torch", fast=fast)
        for stage in ("pooled", "hidden", "excite", "gate", "output"):
            assert np.array_equal(got[stage], kernels.nhwc(ref.codes[stage])), (
                f"{cfg.dialect} {stage} fast={fast}")
    for profile in ("torch", "hw"):
        want = kernels.run(cfg, ip, x, profile)
        others = {"per-element": kernels.run(cfg, ip, x, profile, fast=False),
                  "streaming": streaming.run(cfg, ip, x, profile=profile)}
        if profile == "hw":
            others["numpy"] = numpy_model.run(cfg, ip, x)
        for label, other in others.items():
            for stage in nm.STAGES:
                assert np.array_equal(want[stage], other[stage]), (
                    f"{cfg.dialect} {profile} {stage}: fast vs {label}")


# ---- the sweeps, per dialect --------------------------------------------------------------

@pytest.mark.parametrize("name", DIALECTS)
def test_sweep_widest_and_base_points_are_exact_per_dialect(name):
    """`tse sweep`'s evaluation on a dialect block: its torch profile is quantized PyTorch,
    the default grid's widest and base points reproduce it code for code, and a 2-bit gate
    does not (the comparison is live)."""
    from tse.quant import sweep
    cfg = _cfg(name)
    ctx = sweep.build_context(cfg, frames=2)
    assert ctx.cfg.dialect == cfg.dialect and ctx.cfg.hidden == cfg.hidden
    assert ctx.baseline["torch_profile_vs_pytorch_mismatches"] == 0
    pts = {p.label: p for p in sweep.make_points(cfg, sweep.load_grid(), 2)}
    for label in ("widest", "base"):
        row = sweep.evaluate(ctx, pts[label])
        assert row["exact_match"] == 1.0 and row["max_abs_err_lsb"] == 0, (name, label)
    narrow = [p for p in pts.values() if p.hw.gate_bits <= 2]
    assert narrow and sweep.evaluate(ctx, narrow[0])["exact_match"] < 1.0
