"""The vectors of a mutation campaign (tse.sim.mutate): which frames and parameter sets a
mutant runs, with golden values from the bit-accurate model, never from the RTL.

Owns the campaign's frames (the seeded ones, stress frames of extreme codes, a sweep of every
tile sum, frames that put given sums into given lanes), its vectors directories (the block's
own parameters, the other parameter sets of tse.sim.param_sets, a targeted set of integer
parameters) and the unit plan their parameters give.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from . import runner, selfcheck
from .netlist import MutationError

STRESS_BEATS = 100_000
"""Input beats of stress frames the campaign's vectors add after the seeded ones (4..256
frames): the seeded data alone leaves rare paths (rounding near a tie, saturation, the
largest codes) unexercised."""
STRESS_KINDS = ("max", "binary", "uniform", "zero", "levels", "sparse", "levels", "sparse")
"""Stress frames in turn. Uniform codes average to the middle of the range in every tile, so
half the rest are "levels": a random level per channel plus random offsets per row and
column, which spreads the tiles' means (and the excite MAC's inputs) over the whole range;
"sparse" frames sit at the input zero point but for a few codes off it by 1 to 128, so tile
sums near zero reach every binade of the mean unit's float rounding (dense frames only reach
the top few)."""


def stress_frames(cfg, count: int, seed: int, dtype, zero_point: int = 0):
    """count frames [N, H, W, C] of extreme input codes, kinds in turn: every code the
    largest, each code 0 or the largest at random, uniform random codes, all zero, levels,
    sparse (about the input's zero point)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    top = int(np.iinfo(dtype).max)
    shape = (cfg.height, cfg.width, cfg.channels)
    frames = []
    for i in range(count):
        kind = STRESS_KINDS[i % len(STRESS_KINDS)]
        if kind == "max":
            f = np.full(shape, top)
        elif kind == "binary":
            f = rng.integers(0, 2, shape) * top
        elif kind == "uniform":
            f = rng.integers(0, top + 1, shape)
        elif kind == "levels":
            spread = top // 8
            f = (rng.integers(0, top + 1, (1, 1, shape[2]))
                 + rng.integers(-spread, spread + 1, (shape[0], 1, 1))
                 + rng.integers(-spread, spread + 1, (1, shape[1], 1))).clip(0, top)
        elif kind == "sparse":
            # each code off the zero point with probability 1/16, by +-2**k (k up to 7)
            off = rng.integers(1, 3, shape) << rng.integers(0, 7, shape)
            f = (zero_point + (rng.integers(0, 16, shape) == 0) * off
                 * rng.choice((-1, 1), shape)).clip(0, top)
        else:
            f = np.zeros(shape)
        frames.append(f.astype(dtype))
    return np.stack(frames) if frames else np.zeros((0, *shape), dtype)


SWEEP_BEATS = 200_000
"""Input beats, at most, of the tile-sum sweep the campaign's vectors add (sweep_frames)."""


def sweep_frames(cfg, dtype, start: int = 0, beats: int = SWEEP_BEATS):
    """Frames [N, H, W, C] whose (tile, channel) sums sweep the whole range: in every tile the
    k-th (frame, channel) pair of the sweep (frames, then channels) sums to
    (start + k x step + offset) mod (largest x n + 1), n the tile's pixels, spread as evenly
    as the codes allow (each pixel the sum // n, the first sum % n pixels one more). step is
    1 (every sum of a full tile in turn) when `beats` input beats allow it, else the smallest
    step that spans the range, and the tiles' offsets (t x step // tiles for the t-th tile in
    raster order) interleave, so together the tiles take every step // tiles-th sum. The mean
    unit's float rounding moves a mean across a rounding tie at a few sums of the whole range
    only, which random frames reach about once in a thousand tile sums."""
    import numpy as np

    from tse.ref_model.geometry import Geometry

    geo = Geometry.of(cfg)
    top = int(np.iinfo(dtype).max)
    tiles = geo.tiles_y * geo.tiles_x
    sums = top * cfg.tile_rows * cfg.tile_cols + 1
    count = min(-(-sums // cfg.channels), max(1, beats // geo.beats_per_frame))
    step = -(-sums // (count * cfg.channels))
    frames = np.zeros((count, cfg.height, cfg.width, cfg.channels), dtype)
    k = start + step * np.arange(count * cfg.channels).reshape(count, cfg.channels)
    for ty in range(geo.tiles_y):
        rows = slice(ty * cfg.tile_rows, min((ty + 1) * cfg.tile_rows, cfg.height))
        for tx in range(geo.tiles_x):
            cols = slice(tx * cfg.tile_cols, min((tx + 1) * cfg.tile_cols, cfg.width))
            h, w = rows.stop - rows.start, cols.stop - cols.start
            offset = (ty * geo.tiles_x + tx) * step // tiles
            total = (k + offset) % (top * h * w + 1)                    # [count, C]
            rank = np.arange(h * w).reshape(1, h, w, 1)
            frames[:, rows, cols, :] = (total[:, None, None, :] // (h * w)
                                        + (rank < (total % (h * w))[:, None, None, :]))
    return frames


def stress_count(cfg) -> int:
    return max(4, min(256, STRESS_BEATS // cfg.beats_per_frame))


def campaign_vectors(cfg, frames: int = 3, stress: int | None = None, root=None,
                     sets: int = 0) -> list[Path]:
    """Cached vectors directories for the campaign: first the block's own parameters on the
    seeded frames (as `tse vectors` writes them) then `stress` stress_frames; then `sets`
    other parameter sets (tse.sim.param_sets, kinds in turn) on as many frames of other
    stress codes. Golden values from the same bit-accurate model; keyed like
    tse.sim.cosim.prepare."""
    from .cosim import source_digest

    stress = stress_count(cfg) if stress is None else stress
    root = Path(root) if root else runner.cache_root() / "mutation-vectors"
    dirs, ref = [], None
    for k in range(sets + 1):
        key = hashlib.sha256(json.dumps([cfg.to_dict(), frames, stress, source_digest()]
                                        + ([k] if k else []),
                                        sort_keys=True).encode()).hexdigest()[:20]
        out = root / key
        with runner.locked(root / f".{key}.lock"):
            if not (out / selfcheck.UNIT_FILE).is_file():
                ref = block_reference(cfg, frames) if ref is None else ref
                _write_campaign_vectors(cfg, ref, stress, k, out)
        dirs.append(out)
    return dirs


def block_reference(cfg, frames: int):
    """The quantized reference of cfg's block on `frames` seeded frames (its parameters are
    every campaign vector set's starting point)."""
    from tse.quant import reference
    return reference.build(cfg, frames)


def _write_campaign_vectors(cfg, ref, stress: int, k: int, out: Path) -> None:
    import numpy as np

    from tse.ref_model import kernels

    x = kernels.nhwc(ref.codes["input"])
    x = np.concatenate([x, stress_frames(cfg, stress, cfg.seed + 7919 * k, x.dtype,
                                         ref.params.zero_points["input"])]
                       + ([] if k else [sweep_frames(cfg, x.dtype)]))
    write_vectors(cfg, ref, x, k, out, {"stress_frames": stress})


def write_vectors(cfg, ref, x, k: int, out: Path, meta: dict, ip=None) -> None:
    """A vectors directory of frames x with parameter set k (0: the block's own), or with
    the integer parameters ip (a targeted set, tse.sim.targeted_params)."""
    import torch

    from tse.ref_model import vectors

    from . import param_sets

    params = ref.params
    if k:
        kind = param_sets.KINDS[(k - 1) % len(param_sets.KINDS)]
        found = param_sets.variant(cfg, params, kind, cfg.seed + k)
        if found is None:
            raise MutationError(f"parameter set {k} ({kind}): no draw keeps the unit's Verilog")
        params, meta = found[0], dict(meta, parameter_set=kind)
    result = vectors.build(cfg, params, x, cfg.profile, ip=ip)
    files = selfcheck.bundle(cfg, result["int_params"], int(x.shape[0]))
    vectors.write(out, cfg, params, result, cfg.profile,
                  {"versions": {"torch": torch.__version__}, "sources": ref.sources, **meta},
                  extra_files=files)


TARGETED_MIN_FRAMES = 3
"""Frames of a targeted vectors set at least (stress frames after the targeted ones): the
testbench's scenarios cut and restart frames."""


def targeted_frames(cfg, hits, dtype, zero_point: int, seed: int = 0,
                    channel: int | None = None):
    """Frames [N, H, W, C] that hand every (lane, kind, sum) of `hits` to that lane's mean
    unit: each hit gets a (tile of that kind, channel of that lane) of its own whose pixels
    sum to sum + zero_point x n (n the tile's pixels; tile sums count codes off the zero
    point), spread as evenly as the codes allow; every other pixel sits at the zero point.
    Stress frames follow up to TARGETED_MIN_FRAMES. The sums come from the mean-unit check's
    counterexamples (tse.sim.mean_check): a sum where a mutant's mean code differs. With
    `channel`, every hit goes to that channel (a targeted_params.pooled set's)."""
    import numpy as np

    from tse.ref_model.edge_tiles import kind_table

    kinds = kind_table(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols)
    slots = {}                  # (lane, kind) -> [(ty, tx, channel)], in a frame
    for (ty, tx), k in np.ndenumerate(kinds):
        for c in range(cfg.channels) if channel is None else (channel,):
            slots.setdefault((c % cfg.lanes, int(k)), []).append((ty, tx, c))
    frames, used = [], {}
    for lane, kind, total in hits:
        free = slots.get((lane, kind))
        if not free:
            raise MutationError(f"targeted sum: no tile of kind {kind} in lane {lane}")
        n = used.get((lane, kind), 0)
        f, (ty, tx, c) = divmod(n, len(free))[0], free[n % len(free)]
        used[(lane, kind)] = n + 1
        while len(frames) <= f:
            frames.append(np.full((cfg.height, cfg.width, cfg.channels), zero_point, np.int64))
        rows = slice(ty * cfg.tile_rows, min((ty + 1) * cfg.tile_rows, cfg.height))
        cols = slice(tx * cfg.tile_cols, min((tx + 1) * cfg.tile_cols, cfg.width))
        h, w = rows.stop - rows.start, cols.stop - cols.start
        codes = total + zero_point * h * w
        if not 0 <= codes <= int(np.iinfo(dtype).max) * h * w:
            raise MutationError(f"targeted sum: {total} is not allowed in a tile of {h * w} "
                                f"pixels; allowed: {-zero_point * h * w}.."
                                f"{(int(np.iinfo(dtype).max) - zero_point) * h * w}")
        rank = np.arange(h * w).reshape(h, w)
        frames[f][rows, cols, c] = codes // (h * w) + (rank < codes % (h * w))
    x = np.stack(frames).astype(dtype) if frames else \
        np.zeros((0, cfg.height, cfg.width, cfg.channels), dtype)
    pad = max(0, TARGETED_MIN_FRAMES - x.shape[0])
    return np.concatenate([x, stress_frames(cfg, pad, seed, dtype, zero_point)])


def targeted_vectors(cfg, hits, sets: int, root: Path, frames: int = 3) -> list[Path]:
    """Vectors directories of targeted_frames(hits), the block's own parameters and `sets`
    other parameter sets (as campaign_vectors(cfg, frames)), under root."""
    import numpy as np

    ref = block_reference(cfg, frames)
    x = targeted_frames(cfg, hits, np.uint8, int(ref.params.zero_points["input"]), cfg.seed)
    dirs = []
    for k in range(sets + 1):
        out = Path(root) / f"set{k}"
        write_vectors(cfg, ref, x, k, out, {"targeted_sums": [list(h) for h in hits]})
        dirs.append(out)
    return dirs


def unit_plan(cfg, frames: int = 3):
    """The unit plan of cfg's block (the parameters campaign_vectors(cfg, frames) uses)."""
    from tse.ref_model import numerics
    from tse.ref_model.unit_plan import plan_unit

    return plan_unit(cfg, numerics.derive(block_reference(cfg, frames).params, cfg))
