"""The float block (Appendix A) against an implementation written from the formula."""
import numpy as np
import pytest
import torch

from tse.quant.float_block import TSE


def tse_loops(x, w1, b1, w2, b2, th, tw):
    """TSE from its definition: per tile, the mean over the elements it really holds, the
    excite MLP, and every pixel of the tile scaled by its gate. float64, explicit loops."""
    n, c, h, w = x.shape
    y = np.empty_like(x)
    for b in range(n):
        for r0 in range(0, h, th):
            for c0 in range(0, w, tw):
                tile = x[b, :, r0:r0 + th, c0:c0 + tw]
                mean = tile.reshape(c, -1).sum(axis=1) / tile[0].size
                hidden = np.maximum(w1 @ mean + b1, 0.0)
                gate = 1.0 / (1.0 + np.exp(-(w2 @ hidden + b2)))
                y[b, :, r0:r0 + th, c0:c0 + tw] = tile * gate[:, None, None]
    return y


def check_against_loops(c, h, w, th, tw, r, seed=0):
    torch.manual_seed(seed)
    block = TSE(c, (th, tw), r).double().eval()
    x = torch.rand(2, c, h, w, dtype=torch.float64) * 3
    with torch.no_grad():
        got = block(x).numpy()
    p = {k: v.numpy() for k, v in block.state_dict().items()}
    hidden = c // r
    want = tse_loops(x.numpy(), p["conv1.weight"].reshape(hidden, c), p["conv1.bias"],
                     p["conv2.weight"].reshape(c, hidden), p["conv2.bias"], th, tw)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c, h, w, th, tw, r", [
    (8, 28, 28, 7, 28, 4),    # row strips that divide the frame
    (6, 13, 11, 5, 11, 2),    # row strips, partial last strip
    (5, 13, 11, 13, 3, 1),    # column strips, partial last strip
    (12, 10, 9, 4, 4, 3),     # patches, partial in both directions
    (7, 9, 9, 7, 7, 7),       # patch with a 2-row, 2-column edge
    (3, 5, 7, 5, 7, 3),       # plain SE
    (16, 1, 1, 1, 1, 4),      # 1x1 frame
])
def test_float_block_matches_the_formula(c, h, w, th, tw, r):
    check_against_loops(c, h, w, th, tw, r)


def test_se_is_the_whole_frame_tile():
    """TSE with tile HxW is the SE block: global average pool, excite, channel scale."""
    torch.manual_seed(3)
    c, h, w = 10, 9, 7
    block = TSE(c, (h, w), 2).double().eval()
    x = torch.rand(3, c, h, w, dtype=torch.float64)
    with torch.no_grad():
        gap = x.mean(dim=(2, 3), keepdim=True)
        se = x * block.sigmoid(block.conv2(torch.relu(block.conv1(gap))))
        assert torch.allclose(block(x), se, rtol=1e-12, atol=1e-12)
