"""The tiled ECA and SRM float blocks against loops written from the seeds' formulas (seed 002:
ECA, seed 003: SRM), and the whole-frame tile against the seeds' published PyTorch code."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from tse.quant.attention_blocks import TiledECA, TiledSRM, eca_kernel_size

SHAPES = [  # (C, H, W, tile): odd sizes, partial edge tiles, C not a power of two
    (6, 7, 5, (3, 5)),
    (11, 9, 10, (4, 3)),
    (5, 6, 6, (6, 6)),
    (8, 5, 7, (2, 7)),
]


def tiles(h, w, kh, kw):
    for i in range(0, h, kh):
        for j in range(0, w, kw):
            yield i, j, range(i, min(i + kh, h)), range(j, min(j + kw, w))


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def random_input(c, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, c, h, w, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("channels, k", [(2, 1), (8, 3), (64, 3), (96, 3), (128, 5),
                                         (200, 5), (256, 5), (1024, 5), (2048, 7)])
def test_eca_kernel_size_is_the_nearest_odd_with_ties_up(channels, k):
    # |(log2 C + 1) / 2|: 64 -> 3.5 -> 3; 128 -> 4.0 (a tie) -> 5; 200 -> 4.32 -> 5;
    # 2048 -> 6.0 (a tie) -> 7; 2 -> 1.0 -> 1
    assert eca_kernel_size(channels) == k


@pytest.mark.parametrize("c, h, w, tile", SHAPES)
@pytest.mark.parametrize("k", [None, 1, 5])
def test_tiled_eca_is_the_formula(c, h, w, tile, k):
    block = TiledECA(c, tile, k).double()
    with torch.no_grad():
        block.conv.weight.copy_(torch.linspace(-1.5, 2.0, block.conv.weight.numel())
                                .reshape(block.conv.weight.shape))
    x = random_input(c, h, w, seed=c + h)
    y = block(x).detach().numpy()
    taps = block.conv.weight.detach().numpy().reshape(-1)
    half = (len(taps) - 1) // 2
    xn = x.numpy()
    expected = np.empty_like(xn)
    for n in range(xn.shape[0]):
        for i, j, rows, cols in tiles(h, w, *tile):
            mean = [sum(xn[n, ch, r, s] for r in rows for s in cols) / (len(rows) * len(cols))
                    for ch in range(c)]
            for ch in range(c):
                z = sum(taps[t] * mean[ch + t - half] for t in range(len(taps))
                        if 0 <= ch + t - half < c)                      # zero padding
                for r in rows:
                    for s in cols:
                        expected[n, ch, r, s] = xn[n, ch, r, s] * sigmoid(z)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


SRM_SHAPES = [*SHAPES[:1], (11, 9, 10, (4, 4)), *SHAPES[2:]]   # edge tile 1x2: 2 elements


@pytest.mark.parametrize("c, h, w, tile", SRM_SHAPES)
def test_tiled_srm_is_the_formula(c, h, w, tile):
    block = TiledSRM(c, tile).double().eval()
    g = torch.Generator().manual_seed(c)
    with torch.no_grad():
        block.cfc.weight.copy_(torch.randn(block.cfc.weight.shape, generator=g))
        block.bn.weight.copy_(torch.rand(c, generator=g) + 0.5)
        block.bn.bias.copy_(torch.randn(c, generator=g))
        block.bn.running_mean.copy_(torch.randn(c, generator=g))
        block.bn.running_var.copy_(torch.rand(c, generator=g) + 0.2)
    x = random_input(c, h, w, seed=h * w)
    y = block(x).detach().numpy()
    w_cfc = block.cfc.weight.detach().numpy().reshape(c, 2)
    bn = block.bn
    gamma, beta = bn.weight.detach().numpy(), bn.bias.detach().numpy()
    rm, rv = bn.running_mean.numpy(), bn.running_var.numpy()
    xn = x.numpy()
    expected = np.empty_like(xn)
    for n in range(xn.shape[0]):
        for i, j, rows, cols in tiles(h, w, *tile):
            count = len(rows) * len(cols)
            for ch in range(c):
                values = [xn[n, ch, r, s] for r in rows for s in cols]
                mean = sum(values) / count
                std = math.sqrt(sum((v - mean) ** 2 for v in values) / (count - 1))
                z = w_cfc[ch, 0] * mean + w_cfc[ch, 1] * std
                z = (z - rm[ch]) / math.sqrt(rv[ch] + bn.eps) * gamma[ch] + beta[ch]
                for r in rows:
                    for s in cols:
                        expected[n, ch, r, s] = xn[n, ch, r, s] * sigmoid(z)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)


class SeedSRMLayer(nn.Module):
    """Seed 003's PyTorch SRM code, as published (global style pooling)."""

    def __init__(self, channel):
        super().__init__()
        self.cfc = nn.Conv1d(channel, channel, kernel_size=2, bias=False, groups=channel)
        self.bn = nn.BatchNorm1d(channel)

    def forward(self, x):
        b, c, _, _ = x.size()
        mean = x.view(b, c, -1).mean(-1).unsqueeze(-1)
        std = x.view(b, c, -1).std(-1).unsqueeze(-1)
        u = torch.cat((mean, std), -1)
        z = self.bn(self.cfc(u))
        g = torch.sigmoid(z)
        return x * g.view(b, c, 1, 1).expand_as(x)


def test_whole_frame_srm_is_the_seeds_code():
    c, h, w = 12, 9, 7
    seed = SeedSRMLayer(c).double().eval()
    ours = TiledSRM(c, (h, w)).double().eval()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in (*seed.parameters(), *seed.buffers()):
            if p.dtype.is_floating_point:
                p.copy_(torch.rand(p.shape, generator=g, dtype=p.dtype) + 0.1)
    ours.load_state_dict(seed.state_dict())
    x = random_input(c, h, w, seed=3)
    torch.testing.assert_close(ours(x), seed(x), rtol=1e-12, atol=1e-12)


def test_whole_frame_eca_is_the_global_eca():
    # ECA's published form: GAP, conv1d across channels (k taps, zero padding), sigmoid.
    c, h, w = 16, 5, 6
    block = TiledECA(c, (h, w)).double()
    x = random_input(c, h, w, seed=9)
    gap = x.mean(dim=(-2, -1))                                    # [N, C]
    z = block.conv(gap.unsqueeze(1)).squeeze(1)
    expected = x * torch.sigmoid(z)[:, :, None, None]
    torch.testing.assert_close(block(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("tile, h, w", [((1, 1), 3, 3), ((3, 3), 7, 7), ((2, 1), 5, 4)])
def test_srm_refuses_a_one_element_tile(tile, h, w):
    with pytest.raises(ValueError, match="one element"):
        TiledSRM(4, tile)(torch.zeros(1, 4, h, w))


def test_eca_refuses_an_even_kernel():
    with pytest.raises(ValueError, match="eca kernel: 4"):
        TiledECA(8, (2, 2), k=4)


# ---- quantized references -------------------------------------------------------------------

@pytest.mark.parametrize("engine_name", ["fbgemm", "qnnpack"])
@pytest.mark.parametrize("kind", ["eca", "srm"])
def test_quantized_reference_tracks_the_float_block(kind, engine_name):
    # Inputs inside the calibration range, so the measured gap is the block's quantization,
    # not input clipping. Measured over 30 seeds, largest gate error in codes of 1/256: ECA
    # 6.8 (fbgemm) and 5.4 (qnnpack); SRM 9.1 on both (mean, float deviation and their
    # requantized pair feed one channel-wise FC); this seed: 4.3, 2.5, 6.3, 3.3. A float bound cannot see a subtle error (a
    # biased deviation is 3.6 codes off); it sees a gross one (no batch norm: 77 codes). The
    # integer model will be compared code for code.
    from tse.quant.attention_quantized import quantize_attention, run_attention_stages

    c, h, w, tile = 24, 9, 7, (3, 7)
    g = torch.Generator().manual_seed(11)
    block = TiledECA(c, tile) if kind == "eca" else TiledSRM(c, tile)
    block.eval()
    if kind == "eca":
        with torch.no_grad():
            block.conv.weight.copy_(torch.randn(block.conv.weight.shape, generator=g))
    if kind == "srm":
        with torch.no_grad():
            block.cfc.weight.copy_(torch.randn(block.cfc.weight.shape, generator=g))
            block.bn.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            block.bn.bias.copy_(torch.randn(c, generator=g))
    calibration = torch.randn(16, c, h, w, generator=g).clamp(-3, 3)
    model = quantize_attention(block, calibration, engine_name)
    assert model.engine == engine_name
    x = torch.randn(2, c, h, w, generator=g).clamp(-3, 3)
    codes = run_attention_stages(model, x)
    ty, tx = 3, 1
    assert codes["gate"].shape == codes["excite"].shape == (2, c, ty, tx)
    assert codes["output"].shape == (2, c, h, w) and codes["output"].dtype == np.uint8
    gate = codes["gate"].astype(np.float64) / 256                # fixed qparams 1/256, 0
    expected = block.gate(x).detach().numpy()
    assert np.abs(gate - expected).max() < (8 if kind == "eca" else 12) / 256
    assert np.abs(codes["output_float"] - block(x).detach().numpy()).max() < 0.1
    if kind == "srm":
        assert "bn" not in dict(model.named_children()) or isinstance(model.bn, nn.Identity)


def test_3x1_excite_is_the_formula():
    # The paper's Appendix B excite: both convolutions 3x1 over the rows of tiles, zero
    # padding at the frame's top and bottom.
    from tse.quant.float_block import TSE

    c, hidden, h, w, tile = 6, 3, 7, 5, (2, 5)
    block = TSE(c, tile, hidden=hidden, excite_kernel="3x1").double()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = random_input(c, h, w, seed=8)
    y = block(x).detach().numpy()
    w1, b1 = block.conv1.weight.detach().numpy(), block.conv1.bias.detach().numpy()
    w2, b2 = block.conv2.weight.detach().numpy(), block.conv2.bias.detach().numpy()
    xn = x.numpy()
    ty = -(-h // tile[0])
    expected = np.empty_like(xn)
    for n in range(xn.shape[0]):
        mean = np.zeros((c, ty))
        for i, j, rows, cols in tiles(h, w, *tile):
            for ch in range(c):
                mean[ch, i // tile[0]] = np.mean([xn[n, ch, r, s] for r in rows for s in cols])
        hid = np.zeros((hidden, ty))
        for i in range(ty):
            for k in range(hidden):
                z = b1[k] + sum(w1[k, ch, t, 0] * mean[ch, i + t - 1] for t in range(3)
                                for ch in range(c) if 0 <= i + t - 1 < ty)
                hid[k, i] = max(z, 0.0)
        for i, j, rows, cols in tiles(h, w, *tile):
            ti = i // tile[0]
            for ch in range(c):
                z = b2[ch] + sum(w2[ch, k, t, 0] * hid[k, ti + t - 1] for t in range(3)
                                 for k in range(hidden) if 0 <= ti + t - 1 < ty)
                for r in rows:
                    for s in cols:
                        expected[n, ch, r, s] = xn[n, ch, r, s] * sigmoid(z)
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="excite_kernel: '5x1'"):
        TSE(c, tile, hidden=hidden, excite_kernel="5x1")
