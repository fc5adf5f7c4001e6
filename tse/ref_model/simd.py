"""LLVM IR the fast path emits itself, where numba's loops do not become the SIMD code wanted.

  - ashr32, lshr32: shifts on 32-bit lanes (numba widens every shift to 64 bits).
  - madd_pairs: the excite MAC's matrix-vector product on int16 pairs, vertically: each
    step multiplies one pair of inputs, broadcast, by the matching pair of weights of 16
    outputs and adds both products into those outputs' int32 sums (x86 vpmaddwd). Written
    as a scalar loop, LLVM makes either horizontal dot products (one vector reduction per
    output: ~4x slower for 64 x 256) or 32-bit multiplies of unpaired lanes. The weights
    are stored as int8 (they are int8 codes) and widened as they are loaded: fc1 and fc2 of
    C = 256 then fit L1 together (64 KB as int16 did not: ~2x slower).

The product is exact integer arithmetic, the same on every path: ISA picks only the
instruction. VARIANT is the best the compile target supports (numba's, so that it agrees
with what numba compiles for: NUMBA_CPU_NAME / NUMBA_CPU_FEATURES included):
  AVX512 (avx512bw: 16 outputs per instruction), AVX2 (two 8-output halves), GENERIC
  (sign extensions, multiplies and shuffles in plain vector IR, lowered by LLVM for any
  target; about as fast as the scalar loop it replaces).
"""
from __future__ import annotations

import llvmlite.ir as ir
import numpy as np
from numba import types
from numba.core import cgutils
from numba.core.errors import RequireLiteralValue, TypingError
from numba.extending import intrinsic

GENERIC, AVX2, AVX512 = 0, 1, 2

LANES = 16
"""Outputs per vector: madd_pairs needs the output count padded to a multiple of it."""

PAIR_STEP = 8
"""Input pairs per unrolled step: madd_pairs needs the pair count padded to a multiple of it."""

_I8, _I16, _I32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
_W = ir.VectorType(_I16, 2 * LANES)     # 16 weight pairs
_W8 = ir.VectorType(_I8, 2 * LANES)     # the same, as stored (int8)
_ACC = ir.VectorType(_I32, LANES)       # 16 int32 sums


def supported() -> list[int]:
    """The variants the compile target can run (GENERIC always)."""
    from numba.core.registry import cpu_target
    triple, _, features = cpu_target.target_context.codegen().magic_tuple()
    have = {f[1:] for f in features.split(",") if f.startswith("+")}
    if not triple.startswith(("x86_64", "i686", "i386")):
        return [GENERIC]
    return [GENERIC] + [v for v, need in ((AVX2, "avx2"), (AVX512, "avx512bw")) if need in have]


VARIANT = supported()[-1]


@intrinsic
def ashr32(typingctx, a, k):
    """a >> k on int32 lanes (numba would widen the shift to 64 bits). 0 <= k < 32."""
    def codegen(context, builder, signature, args):
        return builder.ashr(args[0], builder.trunc(args[1], _I32))
    return types.int32(types.int32, types.int64), codegen


@intrinsic
def lshr32(typingctx, a, k):
    """a >> k on uint32 lanes (logical; numba would widen the shift to 64 bits). 0 <= k < 32."""
    def codegen(context, builder, signature, args):
        return builder.lshr(args[0], builder.trunc(args[1], _I32))
    return types.uint32(types.uint32, types.int64), codegen


def _consts(values):
    return ir.Constant(ir.VectorType(_I32, len(values)), [ir.Constant(_I32, v) for v in values])


def _pmadd(builder, w, x, variant):
    """<16 x i32>: w[2i] * x[2i] + w[2i+1] * x[2i+1] for two <32 x i16> vectors."""
    if variant == AVX512:
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_ACC, [_W, _W]), "llvm.x86.avx512.pmaddw.d.512")
        return builder.call(fn, [w, x])
    if variant == AVX2:
        half_w, half_acc = ir.VectorType(_I16, LANES), ir.VectorType(_I32, LANES // 2)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
            half_acc, [half_w, half_w]), "llvm.x86.avx2.pmadd.wd")
        lo, hi = _consts(range(LANES)), _consts(range(LANES, 2 * LANES))
        parts = [builder.call(fn, [builder.shuffle_vector(w, w, half),
                                   builder.shuffle_vector(x, x, half)]) for half in (lo, hi)]
        return builder.shuffle_vector(parts[0], parts[1], _consts(range(LANES)))
    products = []
    for first in (0, 1):
        pick = _consts(range(first, 2 * LANES, 2))
        products.append(builder.mul(builder.sext(builder.shuffle_vector(w, w, pick), _ACC),
                                    builder.sext(builder.shuffle_vector(x, x, pick), _ACC)))
    return builder.add(*products)


def _splat(builder, value):
    """<32 x i16>: the i32 value (a pair of int16) in every lane pair."""
    one = builder.insert_element(ir.Constant(_ACC, ir.Undefined), value, ir.Constant(_I32, 0))
    return builder.bitcast(builder.shuffle_vector(one, one, _consts([0] * LANES)), _W)


@intrinsic
def madd_pairs(typingctx, wp, pairs, acc, variant):
    """acc[j] = sum over k of lo(pairs[k]) * wp[k, 2j] + hi(pairs[k]) * wp[k, 2j + 1], where
    lo and hi are the int16 halves of an int32 (low half first), for every j < acc.shape[0].

    wp: int8 [K, 2 * acc.shape[0]], C-contiguous; pairs: int32 [K]; acc: int32. The caller
    guarantees K % PAIR_STEP == 0 and acc.shape[0] % LANES == 0 (pair_layout pads them) and
    that no sum leaves int32 (wraps otherwise). variant: a compile-time constant (VARIANT).
    Accumulators: four outputs vectors at a time, two pairs each (eight independent sums
    hide the multiply-add latency); then two vectors and one, for the rest."""
    want = ((types.int8, 2), (types.int32, 1), (types.int32, 1))
    got = tuple((getattr(a, "dtype", a), getattr(a, "ndim", 0)) for a in (wp, pairs, acc))
    if got != want or any(getattr(a, "layout", "") != "C" for a in (wp, pairs, acc)):
        raise TypingError(f"madd_pairs takes C-contiguous int8 [K, 2N], int32 [K], int32 [N], "
                        f"got {(wp, pairs, acc)}")
    if not isinstance(variant, types.IntegerLiteral):
        raise RequireLiteralValue(variant)
    kind = variant.literal_value
    if kind not in (GENERIC, AVX2, AVX512):
        raise TypingError(f"madd_pairs: variant {kind} is none of GENERIC, AVX2, AVX512")

    def codegen(context, builder, sig, args):
        W, P, A = (context.make_array(t)(context, builder, a)
                   for t, a in zip(sig.args[:3], args[:3]))
        k_count = builder.extract_value(W.shape, 0)
        row = builder.extract_value(W.shape, 1)
        idx = k_count.type
        c = lambda v: ir.Constant(idx, v)                      # noqa: E731
        blocks = builder.udiv(builder.extract_value(A.shape, 0), c(LANES))
        zero = ir.Constant(_ACC, None)

        def outputs(first, n_vec, n_pair):
            """Vectors first .. first + n_vec - 1 of acc, n_pair pairs per loop step."""
            sums = [[cgutils.alloca_once_value(builder, zero) for _ in range(n_pair)]
                    for _ in range(n_vec)]
            with cgutils.for_range(builder, builder.udiv(k_count, c(n_pair))) as loop:
                for u in range(n_pair):
                    k = builder.add(builder.mul(loop.index, c(n_pair)), c(u))
                    x = _splat(builder, builder.load(builder.gep(P.data, [k])))
                    base = builder.mul(k, row)
                    for v in range(n_vec):
                        vec = builder.add(first, c(v))
                        at = builder.add(base, builder.mul(vec, c(2 * LANES)))
                        w = builder.sext(builder.load(builder.bitcast(
                            builder.gep(W.data, [at]), _W8.as_pointer()), align=1), _W)
                        s = sums[v][u]
                        builder.store(builder.add(builder.load(s), _pmadd(builder, w, x, kind)), s)
            for v in range(n_vec):
                parts = [builder.load(s) for s in sums[v]]
                while len(parts) > 1:
                    parts = [builder.add(parts[i], parts[i + 1]) for i in range(0, len(parts), 2)]
                dst = builder.gep(A.data, [builder.mul(builder.add(first, c(v)), c(LANES))])
                builder.store(parts[0], builder.bitcast(dst, _ACC.as_pointer()), align=4)

        groups = builder.udiv(blocks, c(4))
        with cgutils.for_range(builder, groups) as loop:
            outputs(builder.mul(loop.index, c(4)), 4, 2)
        done = builder.mul(groups, c(4))
        for n_vec in (2, 1):
            fits = builder.icmp_unsigned(">=", builder.sub(blocks, done), c(n_vec))
            with builder.if_then(fits):
                outputs(done, n_vec, PAIR_STEP // n_vec)
            done = builder.select(fits, builder.add(done, c(n_vec)), done)
        return context.get_dummy_value()

    return types.none(wp, pairs, acc, variant), codegen


def pair_layout(w: np.ndarray) -> np.ndarray:
    """wp for madd_pairs from int8 weights w [N, C]: wp[k, 2j + e] = w[j, 2k + e],
    zeros where N or C are padded (N to LANES, C to 2 * PAIR_STEP), the array 64-byte aligned
    (a row is a multiple of 32 bytes, so no 32-byte load of 16 weight pairs crosses a cache
    line)."""
    n, c = w.shape
    if w.size and (w.min() < -2 ** 7 or w.max() >= 2 ** 7):
        raise ValueError(f"pair_layout: weights must fit int8, got {w.min()}..{w.max()}")
    n_pad = -(-n // LANES) * LANES
    k_pad = -(-c // (2 * PAIR_STEP)) * PAIR_STEP
    padded = np.zeros((n_pad, 2 * k_pad), np.int8)
    padded[:n, :c] = w
    layout = padded.reshape(n_pad, k_pad, 2).transpose(1, 0, 2).reshape(k_pad, 2 * n_pad)
    return aligned_copy(layout)


def aligned_copy(a: np.ndarray, alignment: int = 64) -> np.ndarray:
    """A C-contiguous copy of a whose data starts on an `alignment`-byte boundary (vector
    loads that straddle cache lines run at half speed)."""
    raw = np.empty(a.nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    out = raw[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out
