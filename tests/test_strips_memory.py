"""Memory-bounded reference and vectors (issue 14 item 4): strip-wise runs equal whole-frame
runs code for code, the streaming writers write what the in-memory ones write, calibration
is bounded and unchanged for the default configuration, and a measured sample of the memory
command stays under a bound per element derived from what the commands must hold."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tse.bench import bench_memory
from tse.quant import calibration, reference
from tse.quant.quantized_block import run_stages
from tse.ref_model import artifacts, hexfmt
from tse.ref_model.config import TSEConfig


def plain_synthetic(cfg, frames, seed, height=None):
    """The synthetic activations as first written (whole tensors, out of place)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (frames, cfg.channels, cfg.height if height is None else height, cfg.width)
    noise = torch.randn(shape, generator=gen)
    t = torch.arange(-6, 7, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / 2.0) ** 2)
    k = k / k.sum()
    n, c, h, w = shape
    y = noise.reshape(n * c, 1, h, w)
    y = F.conv2d(F.pad(y, (6, 6, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    y = F.conv2d(F.pad(y, (0, 0, 6, 6), mode="replicate"), k.view(1, 1, -1, 1))
    smooth = y.reshape(shape)
    smooth = smooth / smooth.std().clamp_min(1e-6)
    texture = 0.3 * torch.randn(shape, generator=gen)
    offset = 0.3 * torch.randn((1, c, 1, 1), generator=gen)
    scale = torch.exp(0.5 * torch.randn((1, c, 1, 1), generator=gen))
    return torch.relu((smooth + texture + offset) * scale)


@pytest.mark.parametrize("shape", [(128, 28, 28, 8), (16, 37, 41, 3), (3, 1, 5, 2)])
def test_synthetic_activations_are_the_plain_formula(monkeypatch, shape):
    c, h, w, n = shape
    cfg = TSEConfig(channels=c, height=h, width=w, tile="HxW", reduction=1, lanes=1)
    assert torch.equal(calibration.synthetic_activations(cfg, n, seed=5),
                       plain_synthetic(cfg, n, seed=5))
    # beyond BLUR_ELEMENTS, planes are blurred a few at a time: conv2d rounds otherwise
    monkeypatch.setattr(calibration, "BLUR_ELEMENTS", 3 * h * w)
    assert torch.allclose(calibration.synthetic_activations(cfg, n, seed=5),
                          plain_synthetic(cfg, n, seed=5), rtol=1e-5, atol=1e-5)


def test_default_calibration_unchanged():
    cfg = TSEConfig()
    assert calibration.calibration_shape(cfg) == (8, 28)
    # the default configuration's parameters as quantized before calibration was bounded,
    # on one torch thread as conftest sets. The float convolutions' last bits (hence the
    # observed hidden range) depend on the thread count and on the CPU's conv kernel: a CI
    # machine measured hidden = 0.02719973213970661 against 0.027199728414416313 here
    # (relative 1.4e-7, 2 float32 ulps), so the activation scales are checked to 1e-6
    # relative (a changed calibration moves them by far more) and the integer facts exactly
    assert torch.get_num_threads() == 1
    p = reference.prepare(cfg, frames=1).params
    assert p.scales["input"] == pytest.approx(0.11568837612867355, rel=1e-6)
    assert p.scales["hidden"] == pytest.approx(0.027199728414416313, rel=1e-6)
    assert p.scales["excite"] == pytest.approx(0.06970199942588806, rel=1e-6)
    assert p.scales["output"] == pytest.approx(0.06194038689136505, rel=1e-6)
    assert p.zero_points["excite"] == 64
    assert (int(p.w1.sum()), int(p.w2.sum())) == (-2231, -1252)


@pytest.mark.parametrize("tile,expect", [("7xW", (8, 14)), ("8x8", (8, 16)),
                                         ("HxW", (1, 1024)), ("Hx16", (1, 1024))])
def test_calibration_is_bounded_on_big_frames(tile, expect):
    cfg = TSEConfig(channels=16, height=1024, width=2048, tile=tile, lanes=16)
    frames, rows = calibration.calibration_shape(cfg)
    assert (frames, rows) == expect
    if rows < cfg.height:     # whole strips, within the bound
        assert rows % cfg.tile_rows == 0
        assert frames * rows * cfg.width * cfg.channels <= calibration.CALIBRATION_ELEMENTS


PIECE_CONFIGS = [
    TSEConfig(channels=8, height=23, width=10, tile="5xW", reduction=2, lanes=8),   # partial strip
    TSEConfig(channels=6, height=13, width=11, tile="4x3", reduction=3, lanes=6),   # partial both
    TSEConfig(channels=6, height=13, width=11, tile="4x3", reduction=3, lanes=6,
              engine="qnnpack"),
    TSEConfig(channels=4, height=9, width=12, tile="Hx5", reduction=2, lanes=4),    # column strips
    TSEConfig(channels=4, height=6, width=7, tile="HxW", reduction=2, lanes=4),     # plain SE
]


@pytest.mark.parametrize("cfg", PIECE_CONFIGS, ids=lambda c: f"{c.tile}-{c.engine}")
@pytest.mark.parametrize("strips", [1, 2])
def test_strip_pieces_equal_the_whole_frame(cfg, strips):
    p = reference.prepare(cfg, frames=3)
    whole = run_stages(p.model, p.x)
    budget = strips * cfg.channels * cfg.tile_rows * cfg.width
    parts = reference.pieces(cfg, 3, budget)
    if cfg.tile_rows < cfg.height:
        assert len(parts) == 3 * -(-cfg.tiles_y // strips)      # really strip by strip
        assert parts[-1][1].stop - parts[-1][1].start <= strips * cfg.tile_rows
    covered = np.zeros((3, cfg.height), int)
    for fs, rs in parts:
        covered[fs, rs] += 1
        piece = reference.run_piece(p, fs, rs, float_output=False)
        ts = reference.tile_rows_of(cfg, rs)
        for role, arr in piece.items():
            expect = whole[role][fs, :, ts if role in reference.TILE_ROLES else rs]
            assert arr.shape == expect.shape, role
            assert np.array_equal(arr, expect), (role, fs, rs)
    assert (covered == 1).all()


def test_channels_last_codes_are_run_stages(monkeypatch):
    cfg = PIECE_CONFIGS[0]
    p = reference.prepare(cfg, frames=2)
    whole = run_stages(p.model, p.x)
    monkeypatch.setattr(reference, "PIECE_ELEMENTS", cfg.channels * cfg.tile_rows * cfg.width)
    codes = reference.channels_last_codes(p)
    for role, arr in codes.items():
        assert np.array_equal(arr, whole[role].transpose(0, 2, 3, 1)), role


def test_streaming_reference_writes_what_the_in_memory_one_writes(tmp_path, monkeypatch):
    cfg = PIECE_CONFIGS[1]
    reference.write(reference.build(cfg, frames=2), tmp_path / "whole")
    monkeypatch.setattr(reference, "PIECE_ELEMENTS", cfg.channels * cfg.tile_rows * cfg.width)
    summary = reference.write_streaming(reference.prepare(cfg, frames=2), tmp_path / "strips")
    assert artifacts.verify(tmp_path / "strips") == []
    a = artifacts.load_arrays(tmp_path / "whole")
    b = artifacts.load_arrays(tmp_path / "strips")
    assert a.keys() == b.keys()
    for role in a:
        assert a[role].dtype == b[role].dtype and np.array_equal(a[role], b[role]), role
    ma, mb = (artifacts.read_manifest(tmp_path / d) for d in ("whole", "strips"))
    acc_a, acc_b = ma.pop("accuracy"), mb.pop("accuracy")
    assert {k: v for k, v in ma.items() if k != "files"} == \
        {k: v for k, v in mb.items() if k != "files"}
    for key, value in acc_a.items():
        assert acc_b[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert summary["gate_code_range"] == [int(a["gate"].min()), int(a["gate"].max())]


def test_npy_blocks_write_the_bytes_np_save_writes(tmp_path):
    arr = np.arange(2 * 3 * 7 * 5, dtype=np.float32).reshape(2, 3, 7, 5) / 3
    f = artifacts.NpyFile(tmp_path / "a.npy", arr.shape, arr.dtype)
    f.write((0, 0, 4), arr[0:1, :, 4:])       # out of order, a partial last strip
    f.write((0, 0, 0), arr[0:1, :, :4])
    f.write((1,), arr[1:])
    f.close()
    np.save(tmp_path / "b.npy", arr)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()


def hex_by_hand(values, bits, lanes):
    words = []
    for i in range(0, len(values), lanes):
        word = 0
        for lane, v in enumerate(values[i:i + lanes]):
            word |= (int(v) & ((1 << bits) - 1)) << (lane * bits)
        words.append(format(word, f"0{-(-lanes * bits // 4)}x"))
    return ("\n".join(words) + "\n").encode()


@pytest.mark.parametrize("bits,lanes", [(8, 16), (8, 1), (20, 3), (3, 5), (1, 9), (24, 4)])
def test_hex_writer_in_chunks(tmp_path, monkeypatch, bits, lanes):
    monkeypatch.setattr(hexfmt, "CHUNK_VALUES", 7)       # many chunks, words across no chunk
    rng = np.random.default_rng(bits * 100 + lanes)
    values = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=lanes * 11)
    with open(tmp_path / "v.hex", "wb") as f:
        hexfmt.writer(values, bits, lanes)(f)
    assert (tmp_path / "v.hex").read_bytes() == hex_by_hand(values, bits, lanes)
    assert hexfmt.to_text(values, bits, lanes) == hex_by_hand(values, bits, lanes)


# What `tse reference` must hold per input element, beyond what does not grow with the
# frame: the float input frames (4 B) and, while they are generated, one float noise tensor of
# their size (4 B); every stage is written a piece at a time, and the blur works on at most
# BLUR_ELEMENTS. 2 B more of slack for allocator and page-granularity noise.
BOUND_BYTES_PER_ELEMENT = 4 + 4 + 2


def test_memory_per_element_is_bounded(tmp_path):
    """The memory command on two frames above BLUR_ELEMENTS: the growth of peak RSS per added
    input element stays under the bound (before strips, ~500 B per element)."""
    small, big = (bench_memory.measure("reference", (h, 512, 16), tmp_path)
                  for h in (1024, 2048))
    assert small["elements"] >= calibration.BLUR_ELEMENTS
    assert small["exit_status"] == 0 and big["exit_status"] == 0, (small, big)
    grown = (big["peak_rss_bytes"] - small["peak_rss_bytes"]) / (big["elements"] - small["elements"])
    assert grown <= BOUND_BYTES_PER_ELEMENT, (grown, small, big)


def test_bench_numpy_baseline_runs_strips_that_join_to_the_whole_frame(monkeypatch):
    """tse bench's numpy row works a few strips at a time (its int64 temporaries would
    otherwise set the peak on 1024x2048 frames); joined, the strips are the whole-frame
    model's output, a short last strip included."""
    from tse.bench import bench_kernels
    from tse.ref_model import numerics, numpy_model

    cfg = TSEConfig(channels=16, height=23, width=9, tile="7xW", lanes=8)
    ref = reference.prepare(cfg, frames=1)
    x = np.random.default_rng(3).integers(0, 256, (2, 23, 9, 16), dtype=np.uint8)
    whole = numpy_model.run(cfg, numerics.derive(ref.params, cfg), x)["output"]
    monkeypatch.setattr(bench_kernels, "NUMPY_PIECE_ELEMENTS", 2 * 7 * 9 * 16)  # 2 strips
    parts = bench_kernels.impl_fn("numpy", cfg, ref, x)()
    assert [p["output"].shape[1] for p in parts] == [14, 9]
    np.testing.assert_array_equal(np.concatenate([p["output"] for p in parts], axis=1), whole)
