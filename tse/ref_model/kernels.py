"""Whole-frame numba kernels of the TSE block, both numerics profiles: the golden vectors.

    out = run(cfg, params, x)          # x: uint8 [N, H, W, C] (channels last)
    out["tile_sums"], out["pooled"], out["hidden"], out["excite"], out["gate"]  # [N, ty, tx, C']
    out["output"]                       # uint8 [N, H, W, C]
    out["saturated"]                    # {"tile_sums": n, "hidden": n, "excite": n} (hw)

The arithmetic of every stage is tse.ref_model.numerics (the same functions the streaming model
calls); this module only walks frames, tiles and pixels. Serial by default; parallel=True
spreads strips, tiles and rows over numba's threads (same results).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import edge_tiles
from . import numerics as nm
from .config import TSEConfig
from .edge_tiles import edge_tile_kind, kind_table
from .jit_cache import flush_stale_cache
from .numerics import IntParams


def _impl(x, th, tw, T, profile, sums, sum_sat, pooled, hidden, excite, gate, out,
          sat1, sat2, h_partial, w_partial):
    n_frames, height, width, channels = x.shape
    ty, tx = sums.shape[1], sums.shape[2]
    # line accumulator: every strip of every frame on its own
    for k in prange(n_frames * ty):
        n, i = k // ty, k % ty
        for h in range(i * th, min(height, (i + 1) * th)):
            for w in range(width):
                j = w // tw
                for c in range(channels):
                    s, f = nm.tile_sum_add(sums[n, i, j, c], x[n, h, w, c], T, profile)
                    sums[n, i, j, c] = s
                    if f:
                        sum_sat[n, i, j, c] = 1
    # excite MAC: every tile on its own
    for k in prange(n_frames * ty * tx):
        n, i, j = k // (ty * tx), (k // tx) % ty, k % tx
        kind = edge_tile_kind(i, j, ty, tx, h_partial, w_partial)
        s1, s2 = nm.excite_tile(sums[n, i, j], kind, T, profile, pooled[n, i, j],
                                hidden[n, i, j], excite[n, i, j], gate[n, i, j])
        sat1[k] = s1
        sat2[k] = s2
    # tile broadcaster: every row on its own
    for k in prange(n_frames * height):
        n, h = k // height, k % height
        i = h // th
        for w in range(width):
            j = w // tw
            for c in range(channels):
                out[n, h, w, c] = nm.scale(x[n, h, w, c], gate[n, i, j, c], T, profile)


_serial = njit(cache=True)(_impl)
_U8, _I64 = np.dtype(np.uint8), np.dtype(np.int64)
_parallel = njit(cache=True, parallel=True)(_impl)


class Kernel:
    """Every stage of the block for one configuration, parameter set and profile.

        kernel = Kernel(cfg, params, "hw")      # derive, check and compile once
        out = kernel(x)                         # then only the frames: as run() returns

    params: QuantParams (derived here) or IntParams (numerics.derive(params, cfg)).
    profile: "torch" or "hw" (default cfg.profile). fast (default): tse.ref_model.fastpath's
    vectorized kernels where they apply (bit-identical, tests/test_numpy_model_fastpath.py);
    fast=False or a saturating hw profile: the per-element kernels here, which read as the
    spec. parallel: numba threads over strips, tiles and rows of the per-element kernels."""

    def __init__(self, cfg: TSEConfig, params, profile: str | None = None, *,
                 parallel: bool = False, fast: bool = True):
        self.cfg = cfg
        self.profile = cfg.profile if profile is None else profile
        self._code = nm.profile_code(self.profile)
        self.params = nm.int_params_for(cfg, params)
        self.parallel = parallel
        self._fast = None
        if fast and not parallel:
            from . import fastpath
            if fastpath.applicable(self.params, self.profile):
                self._fast = fastpath.Frames(cfg, self.params, self._code)
        self._frame_shape = (cfg.height, cfg.width, cfg.channels)
        self._tile_shape = (cfg.tiles_y, cfg.tiles_x)
        self._shapes = {}

    def _stage_shapes(self, n: int):
        """(codes, tile_sums, hidden) array shapes for a batch of n frames."""
        ty, tx = self._tile_shape
        c, hid = self.params.channels, self.params.hidden
        shapes = self._shapes[n] = ((3, n, ty, tx, c), (n, ty, tx, c), (n, ty, tx, hid))
        return shapes

    def __call__(self, x) -> dict:
        """Every stage on frames x (uint8 [N, H, W, C], channels last): a dict of stage
        arrays (numerics.STAGES) plus "saturated": per-stage counts of accumulators that
        saturated (hw with hw.saturate; zeros otherwise). Bad input raises InputError."""
        flags = (x.flags if type(x) is np.ndarray and x.dtype is _U8
                 and x.shape[1:] == self._frame_shape and x.shape[0] > 0 else None)
        if flags is None or not flags.c_contiguous:
            x = nm.check_frames(self.cfg, x)       # converts, or names what is wrong
            flags = x.flags
        n = x.shape[0]
        if self._fast:
            # Every element of every stage is written, so nothing needs clearing. For small
            # frames the allocations are a good part of the call: shapes are kept per batch
            # size, the dtypes as objects, and the three C-wide code stages share one array.
            shapes = self._shapes.get(n) or self._stage_shapes(n)
            sums, codes = np.empty(shapes[1], _I64), np.empty(shapes[0], _U8)
            hidden, out = np.empty(shapes[2], _U8), np.empty(x.shape, _U8)
            call = self._fast.calls.get(flags.writeable)
            if call is None:
                call = self._fast.bind(x, sums, codes, hidden, out)
            call(x, sums, codes, hidden, out)
            return {"tile_sums": sums, "pooled": codes[0], "hidden": hidden,
                    "excite": codes[1], "gate": codes[2], "output": out,
                    "saturated": {"tile_sums": 0, "hidden": 0, "excite": 0}}
        ty, tx = self._tile_shape
        c, hid = self.params.channels, self.params.hidden
        sums = np.zeros((n, ty, tx, c), np.int64)
        pooled = np.zeros((n, ty, tx, c), np.uint8)
        hidden = np.zeros((n, ty, tx, hid), np.uint8)
        excite = np.zeros((n, ty, tx, c), np.uint8)
        gate = np.zeros((n, ty, tx, c), np.uint8)
        out = np.zeros(x.shape, np.uint8)
        stages = {"tile_sums": sums, "pooled": pooled, "hidden": hidden, "excite": excite,
                  "gate": gate, "output": out}
        cfg = self.cfg
        sum_sat = np.zeros((n, ty, tx, c), np.uint8)
        sat1 = np.zeros(n * ty * tx, np.int64)
        sat2 = np.zeros(n * ty * tx, np.int64)
        fn = _parallel if self.parallel else _serial
        fn(x, cfg.tile_rows, cfg.tile_cols, self.params.tables(), self._code, sums, sum_sat,
           pooled, hidden, excite, gate, out, sat1, sat2, cfg.height % cfg.tile_rows != 0,
           cfg.width % cfg.tile_cols != 0)
        return {**stages, "saturated": {"tile_sums": int(sum_sat.sum()),
                                        "hidden": int(sat1.sum()), "excite": int(sat2.sum())}}


def run(cfg: TSEConfig, params, x, profile: str | None = None, *,
        parallel: bool = False, fast: bool = True) -> dict:
    """Every stage of the block on frames x (uint8 [N, H, W, C], channels last): Kernel's
    result (see there for the arguments). With IntParams, the Kernel is kept with them, so
    calling run() frame after frame derives and compiles nothing again."""
    if not isinstance(params, IntParams):
        return Kernel(cfg, params, profile, parallel=parallel, fast=fast)(x)
    key = (cfg, cfg.profile if profile is None else profile, parallel, fast)
    kernel = params._kernels.get(key)
    if kernel is None:
        kernel = params._kernels[key] = Kernel(cfg, params, profile, parallel=parallel,
                                               fast=fast)
    return kernel(x)


def nchw(a: np.ndarray) -> np.ndarray:
    """A channels-last stage array [N, h, w, C] as NCHW (PyTorch's layout)."""
    return np.ascontiguousarray(a.transpose(0, 3, 1, 2))


def nhwc(a: np.ndarray) -> np.ndarray:
    """An NCHW array as channels last [N, H, W, C] (the kernels' layout)."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def distance(a: dict, b: dict, stages=nm.STAGES[1:]) -> dict:
    """Per stage: how far stage arrays a are from b (codes; e.g. hw from torch):
    {stage: {"values", "mismatches", "mismatch_rate", "max_err_lsb"}}."""
    report = {}
    step = 1 << 20      # a chunk at a time: whole-frame int64 differences would be 24 B/value
    for stage in stages:
        fa, fb = np.reshape(a[stage], -1), np.reshape(b[stage], -1)
        if np.shape(a[stage]) != np.shape(b[stage]):
            raise ValueError(f"{stage}: {np.shape(a[stage])} vs {np.shape(b[stage])}")
        mismatches = largest = 0
        for i in range(0, fa.size, step):
            d = np.abs(fa[i:i + step].astype(np.int64) - fb[i:i + step].astype(np.int64))
            mismatches += int(np.count_nonzero(d))
            largest = max(largest, int(d.max()))
        report[stage] = {"values": int(fa.size), "mismatches": mismatches,
                         "mismatch_rate": mismatches / fa.size if fa.size else 0.0,
                         "max_err_lsb": largest}
    return report


def hw_distance(cfg: TSEConfig, params, x, *, parallel: bool = False) -> dict:
    """The hw profile's distance from the torch profile on frames x, per stage and at the
    output. "propagated": each profile runs the whole block on its own results (what the RTL
    produces against PyTorch); "local": each hw stage is given the torch profile's input to
    that stage, so a mismatch is pinned to the stage that caused it."""
    ip = nm.int_params_for(cfg, params)
    torch_out = run(cfg, ip, x, "torch", parallel=parallel)
    hw_out = run(cfg, ip, x, "hw", parallel=parallel)
    return {"propagated": distance(hw_out, torch_out),
            "local": distance(local_stages(cfg, ip, x, torch_out), torch_out),
            "saturated": hw_out["saturated"]}


@njit(cache=True)
def _local(x, th, tw, T, t_sums, t_pooled, t_hidden, t_excite, t_gate, counts_kind,
           pooled, hidden, excite, gate, out):
    n_frames, ty, tx, channels = t_sums.shape
    for n in range(n_frames):
        for i in range(ty):
            for j in range(tx):
                kind = counts_kind[i, j]
                nm.squeeze(t_sums[n, i, j], kind, T, nm.HW, pooled[n, i, j])
                nm.fc1(t_pooled[n, i, j], T, nm.HW, hidden[n, i, j])
                nm.fc2(t_hidden[n, i, j], T, nm.HW, excite[n, i, j])
                nm.sigmoid(t_excite[n, i, j], T, gate[n, i, j], nm.HW)
    for n in range(n_frames):
        for h in range(x.shape[1]):
            for w in range(x.shape[2]):
                for c in range(channels):
                    out[n, h, w, c] = nm.scale(x[n, h, w, c], t_gate[n, h // th, w // tw, c],
                                               T, nm.HW)


def local_stages(cfg: TSEConfig, ip: IntParams, x, torch_out: dict) -> dict:
    """hw stages computed from the torch profile's inputs to each stage."""
    x = nm.check_frames(cfg, x)
    ty, tx = cfg.tiles_y, cfg.tiles_x
    kinds = kind_table(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols)
    res = {k: np.zeros_like(torch_out[k]) for k in ("pooled", "hidden", "excite", "gate",
                                                    "output")}
    _local(x, cfg.tile_rows, cfg.tile_cols, ip.tables(), torch_out["tile_sums"],
           torch_out["pooled"], torch_out["hidden"], torch_out["excite"], torch_out["gate"],
           kinds, res["pooled"], res["hidden"], res["excite"], res["gate"], res["output"])
    res["tile_sums"] = torch_out["tile_sums"]
    return res


flush_stale_cache([_serial, _parallel, _local], "kernels", (*nm.JIT_SOURCES, edge_tiles))
