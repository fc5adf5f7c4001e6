"""tse.ref_model.simd: the excite MAC's int16-pair multiply-add, on every variant this machine
runs, against int64 matrix products in numpy."""
import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from tse.ref_model import simd


def compiled(variant):
    @njit
    def madd(wp, pairs, acc):
        simd.madd_pairs(wp, pairs, acc, variant)
    return madd


def packed(u, k):
    """int32 pairs of the int16 values u, low half first, zero-padded to k pairs."""
    v = np.zeros(2 * k, np.int64)
    v[:u.size] = u
    return ((v[0::2] & 0xFFFF) | ((v[1::2] & 0xFFFF) << 16)).astype(np.uint32).view(np.int32)


SHAPES = [(1, 1), (5, 3), (16, 16), (17, 33), (48, 130), (64, 256), (256, 64), (33, 7)]


@pytest.mark.parametrize("variant", simd.supported())
@pytest.mark.parametrize("n, c", SHAPES)
def test_madd_pairs_is_the_matrix_product(variant, n, c):
    rng = np.random.default_rng(n * 1000 + c)
    w = rng.integers(-128, 128, (n, c))
    u = rng.integers(-255, 256, c)
    w[:, :2], u[:2] = -128, -255           # the extremes of the operands: codes minus zero points
    w[:, 2:4], u[2:4] = 127, 255
    wp = simd.pair_layout(w)
    acc = np.full(wp.shape[1] // 2, 7, np.int32)
    compiled(variant)(wp, packed(u, wp.shape[0]), acc)
    assert np.array_equal(acc[:n], w @ u)
    assert not acc[n:].any()                # padded outputs: zero weights


@pytest.mark.parametrize("variant", simd.supported())
def test_madd_pairs_keeps_the_largest_sums(variant):
    """C = 8192 inputs at the extremes: |sum| = 8192 * 255 * 128 ~ 2**28, exact in int32."""
    c = 8192
    w = np.full((16, c), -128)
    w[1::2] = 127
    u = np.full(c, -255)
    wp = simd.pair_layout(w)
    acc = np.zeros(16, np.int32)
    compiled(variant)(wp, packed(u, wp.shape[0]), acc)
    assert np.array_equal(acc, w @ u)


def test_pair_layout_pads_and_aligns():
    w = np.arange(5 * 3).reshape(5, 3) - 7
    wp = simd.pair_layout(w)
    assert wp.dtype == np.int8 and wp.flags.c_contiguous
    assert wp.shape == (simd.PAIR_STEP, 2 * simd.LANES)
    assert wp.ctypes.data % 64 == 0
    assert wp[0, 2 * 4] == w[4, 0] and wp[0, 2 * 4 + 1] == w[4, 1] and wp[1, 2 * 4] == w[4, 2]
    assert not wp[1, 2 * 4 + 1] and not wp[:, 2 * 5:].any()


@pytest.mark.parametrize("bad", [128, -129])
def test_pair_layout_rejects_weights_beyond_int8(bad):
    with pytest.raises(ValueError, match="int8"):
        simd.pair_layout(np.array([[0, bad]]))


def test_madd_pairs_names_what_it_takes():
    @njit
    def wrong(wp, pairs, acc):
        simd.madd_pairs(wp, pairs, acc, simd.GENERIC)
    with pytest.raises(TypingError, match="madd_pairs takes"):
        wrong(np.zeros((8, 32), np.int16), np.zeros(8, np.int32), np.zeros(16, np.int32))


def test_the_variants_follow_the_host_cpu():
    """Without NUMBA_CPU_NAME numba compiles for this CPU: the variants offered follow the
    host's features as llvmlite reports them, and VARIANT is the widest."""
    import os

    import llvmlite.binding as ll

    if os.environ.get("NUMBA_CPU_NAME") or os.environ.get("NUMBA_CPU_FEATURES"):
        pytest.skip("a compile target other than the host was asked for")
    host = ll.get_host_cpu_features()
    want = [simd.GENERIC] + [v for v, f in ((simd.AVX2, "avx2"), (simd.AVX512, "avx512bw"))
                             if host.get(f, False)]
    assert simd.supported() == want and simd.VARIANT == want[-1]
