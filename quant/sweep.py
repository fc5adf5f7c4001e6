"""Fixed-point width sweeps of the hw numerics profile: accuracy against width, and cost.

A hardware team's question is how narrow each part of the datapath can be before accuracy
moves. A sweep evaluates the hw profile (ref_model.numerics, bit-accurate) over a grid of
widths and roundings of the configuration's [hw] table and measures, per point:

  against the torch profile   exact-match rate of the output codes, largest and mean
                              absolute error in output LSB, per-stage mismatch rates
  against the float block     SQNR (dB) and cosine similarity of the dequantized output
  saturation                  registers that saturated, per stage (narrow accumulators)
  hardware cost               storage bits and multiplier input widths from the widths and
                              the configuration (hardware_cost); Yosys cells where rtl/ has
                              a resource estimate (rtl_cost, the hook) and the user asks

    grid = load_grid(path)                      # TOML; None: quant/sweep_grid_default.toml
    summary = run_sweep(cfg, grid, out_dir, workers=2)            # local processes
    summary = run_sweep(cfg, grid, out_dir, scheduler="tcp://...")  # a Dask cluster

Outputs in out_dir: points.jsonl (one finished point a line: an interrupted sweep resumes
from it and skips finished points), sweep.csv and sweep.json (every point, the Pareto front
of cost against error, the summary), and PNG plots (quant.plots). docs/sweeps.md explains
how to read them and has the default sweep's results.

Widths narrower than the configuration would accept are evaluated as the less accurate
hardware they are: an accumulator below the safe width (hw_profile.required_bits) gets
hw.saturate = true (saturating registers, counted), a reciprocal too short for the mean's
promise gets hw.exact_mean = false (legalize).
"""
from __future__ import annotations

import csv
import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import os
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ref_model import hw_profile
from ref_model.config import TSEConfig
from ref_model.errors import ConfigError, InputError
from ref_model.hw_profile import HwProfile, required_bits, reciprocal_exact, tile_counts

DEFAULT_GRID = Path(__file__).with_name("sweep_grid_default.toml")
MODES = ("axes", "product")
MAX_POINTS = 20000
"""Largest grid (after expanding a product) a sweep accepts."""
QUICK_FRAMES = 8
CONNECT_TIMEOUT = "15s"
"""How long to wait for a Dask scheduler (--scheduler) to answer."""

INT_AXES = {
    "reciprocal_bits": (2, hw_profile.MAX_RECIPROCAL_BITS),
    "fc1_multiplier_bits": (2, hw_profile.MAX_MULTIPLIER_BITS),
    "fc2_multiplier_bits": (2, hw_profile.MAX_MULTIPLIER_BITS),
    "mul_multiplier_bits": (2, hw_profile.MAX_MULTIPLIER_BITS),
    "bias_frac_bits": (0, hw_profile.MAX_BIAS_FRAC_BITS),
    "sum_bits": (2, hw_profile.MAX_REGISTER_BITS),
    "fc1_acc_bits": (2, hw_profile.MAX_REGISTER_BITS),
    "fc2_acc_bits": (2, hw_profile.MAX_REGISTER_BITS),
    "gate_bits": (1, hw_profile.GATE_BITS),
}
"""Width axes: a field of HwProfile and its range (the accumulators' upper bound also
leaves room for bias_frac_bits: checked per point)."""
CHOICE_AXES = {
    "mean_rounding": hw_profile.MEAN_ROUNDINGS,
    "fc1_rounding": hw_profile.ROUNDINGS,
    "fc2_rounding": hw_profile.ROUNDINGS,
    "mul_rounding": hw_profile.ROUNDINGS,
}
ALIASES = {
    "multiplier_bits": ("fc1_multiplier_bits", "fc2_multiplier_bits", "mul_multiplier_bits"),
    "acc_bits": ("fc1_acc_bits", "fc2_acc_bits"),
    "requant_rounding": ("fc1_rounding", "fc2_rounding", "mul_rounding"),
}
"""Group axes: one value sets every field of the group."""
AXES = tuple(INT_AXES) + tuple(CHOICE_AXES) + tuple(ALIASES)
HW_FIELDS = tuple(f.name for f in dataclasses.fields(HwProfile))
STAGE_NAMES = ("pooled", "hidden", "excite", "gate")
ERROR_KEY = "mean_abs_err_lsb"
COST_KEY = "cost_bits"


# =====================================================================================
# Grids
# =====================================================================================

@dataclass(frozen=True)
class Grid:
    """A validated grid: axes (name -> values, in the file's order), mode, frames, extra
    points ((name, {axis: value}) pairs) and where it came from."""

    axes: dict
    mode: str = "axes"
    frames: int | None = None
    points: tuple = ()
    source: str = "grid"


def load_grid(path=None) -> Grid:
    """Read and validate a grid TOML file (None: the default grid that ships with the tool).
    Any problem is a one-line ConfigError naming the file, the axis and what is allowed."""
    path = Path(path) if path is not None else DEFAULT_GRID
    source = f"grid {str(path)!r}"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{source}: file does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{source}: not valid TOML: {str(e).splitlines()[0]}") from None
    return parse_grid(data, source)


def parse_grid(data: dict, source: str = "grid") -> Grid:
    """Validate a grid given as a dict (the TOML file's tables)."""
    _known(data, ("sweep", "axes", "point"), source, "table")
    sweep = data.get("sweep", {})
    if not isinstance(sweep, dict):
        raise ConfigError(f"{source}: [sweep] must be a table; allowed: mode, frames")
    _known(sweep, ("mode", "frames"), source, "key in [sweep]")
    mode = sweep.get("mode", "axes")
    if mode not in MODES:
        raise ConfigError(f"{source}: sweep.mode {mode!r} is not allowed; allowed: "
                          f"{', '.join(MODES)}")
    frames = sweep.get("frames")
    if frames is not None and (not isinstance(frames, int) or isinstance(frames, bool)
                               or frames < 1):
        raise ConfigError(f"{source}: sweep.frames {frames!r} is not allowed; allowed: a "
                          "positive integer")
    raw_axes = data.get("axes", {})
    if not isinstance(raw_axes, dict):
        raise ConfigError(f"{source}: [axes] must be a table of axis = [values]; allowed "
                          f"axes: {', '.join(AXES)}")
    axes = {}
    for name, values in raw_axes.items():
        _check_axis_name(name, source)
        if not isinstance(values, list):
            raise ConfigError(f"{source}: axis {name!r} = {values!r} is not allowed; "
                              f"allowed: a list of {_allowed(name)}")
        if not values:
            raise ConfigError(f"{source}: axis {name!r} has no values; allowed: a non-empty "
                              f"list of {_allowed(name)}")
        for v in values:
            _check_value(name, v, source)
        dup = sorted({v for v in values if values.count(v) > 1}, key=str)
        if dup:
            raise ConfigError(f"{source}: axis {name!r} repeats {dup[0]!r}; allowed: each "
                              "value once")
        axes[name] = tuple(values)
    _check_overlap(axes, source)
    raw_points = data.get("point", [])
    if not isinstance(raw_points, list) or not all(isinstance(p, dict) for p in raw_points):
        raise ConfigError(f"{source}: point must be an array of tables ([[point]]); allowed: "
                          "name = \"...\" and axis = value pairs")
    points = []
    for k, p in enumerate(raw_points):
        p = dict(p)
        name = p.pop("name", f"point{k + 1}")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}: point {k + 1}: name {name!r} is not allowed; "
                              "allowed: a non-empty string")
        if not p:
            raise ConfigError(f"{source}: point {name!r} sets no axis; allowed: "
                              f"{', '.join(AXES)}")
        for axis, v in p.items():
            _check_axis_name(axis, f"{source}: point {name!r}")
            _check_value(axis, v, f"{source}: point {name!r}")
        _check_overlap(p, f"{source}: point {name!r}")
        points.append((name, p))
    if not axes and not points:
        raise ConfigError(f"{source}: no axes; allowed: an [axes] table with at least one of "
                          f"{', '.join(AXES)}")
    grid = Grid(axes=axes, mode=mode, frames=frames, points=tuple(points), source=source)
    if mode == "product":
        size = math.prod(len(v) for v in axes.values())
        if size > MAX_POINTS:
            raise ConfigError(f"{source}: the product of the axes has {size} points; allowed: "
                              f"at most {MAX_POINTS} (fewer values, or mode = \"axes\")")
    for label, changes in _raw_points(grid, HwProfile()):
        _profile(HwProfile(), changes, f"{source}: {label}")   # ranges that combine
    return grid


def _known(table, allowed, source, what):
    for key in table:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"{source}: unknown {what} {key!r}{hint}; allowed: "
                              f"{', '.join(allowed)}")


def _check_axis_name(name, source):
    if name not in AXES:
        near = difflib.get_close_matches(name, AXES, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"{source}: unknown axis {name!r}{hint}; allowed: {', '.join(AXES)}")


def _fields_of(name):
    return ALIASES.get(name, (name,))


def _allowed(name):
    first = _fields_of(name)[0]
    if first in INT_AXES:
        lo, hi = INT_AXES[first]
        return f"integers {lo}..{hi}"
    return ", ".join(repr(v) for v in CHOICE_AXES[first])


def _check_value(name, v, source):
    first = _fields_of(name)[0]
    if first in INT_AXES:
        lo, hi = INT_AXES[first]
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            what = "width 0" if v == 0 and not isinstance(v, bool) else f"value {v!r}"
            raise ConfigError(f"{source}: axis {name!r} {what} is not allowed; allowed: "
                              f"integers {lo}..{hi}")
    elif v not in CHOICE_AXES[first] or not isinstance(v, str):
        raise ConfigError(f"{source}: axis {name!r} value {v!r} is not allowed; allowed: "
                          f"{_allowed(name)}")


def _check_overlap(axes, source):
    seen = {}
    for name in axes:
        for f in _fields_of(name):
            if f in seen:
                raise ConfigError(f"{source}: axes {seen[f]!r} and {name!r} both set hw.{f}; "
                                  "allowed: each field in one axis")
            seen[f] = name


def _expand(changes: dict) -> dict:
    """Axis values (group axes included) as HwProfile field values."""
    out = {}
    for name, v in changes.items():
        for f in _fields_of(name):
            out[f] = v
    return out


def _profile(base: HwProfile, changes: dict, where: str) -> HwProfile:
    """base with the changes, validated on its own (the most permissive flags: saturating,
    approximate mean); a combination outside a field's range is a ConfigError."""
    try:
        return base.replace(**_expand(changes), saturate=True, exact_mean=False)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


# =====================================================================================
# Points
# =====================================================================================

@dataclass(frozen=True)
class Point:
    """One hw profile to evaluate: label ("base", "widest", "sum_bits=12", ...), the axis it
    varies ("" for base, widest, narrowest, product and named points), its value, the hw
    profile (legalized for the configuration) and its id (resume key)."""

    label: str
    axis: str
    value: object
    hw: HwProfile
    id: str


def _raw_points(grid: Grid, base: HwProfile):
    """(label, axis changes) of every point of the grid, before deduplication."""
    yield "base", {}
    ints = [n for n in grid.axes if _fields_of(n)[0] in INT_AXES]
    if ints:
        yield "widest", {n: max(grid.axes[n]) for n in ints}
    if grid.mode == "axes":
        for name, values in grid.axes.items():
            for v in values:
                yield f"{name}={v}", {name: v}
    else:
        names = list(grid.axes)
        for combo in itertools.product(*(grid.axes[n] for n in names)):
            changes = dict(zip(names, combo))
            yield ",".join(f"{n}={v}" for n, v in changes.items()), changes
    for name, changes in grid.points:
        yield name, dict(changes)


def legalize(cfg: TSEConfig, hw: HwProfile) -> HwProfile:
    """hw with saturate and exact_mean set as the configuration needs them: saturating when
    an accumulator is narrower than the safe width (or the base already saturates), an
    approximate mean when the reciprocal is too short for what mean_rounding promises."""
    counts = tile_counts(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols)
    need = required_bits(cfg.channels, cfg.hidden, max(counts))
    saturate = bool(cfg.hw.saturate) or any(getattr(hw, k) < v for k, v in need.items())
    if hw.mean_rounding == "f32":
        exact = hw.reciprocal_bits >= hw_profile.F32_BITS
    else:
        exact = all(reciprocal_exact(n, hw.reciprocal_bits) for n in set(counts))
    return hw.replace(saturate=saturate, exact_mean=bool(cfg.hw.exact_mean) and exact)


def point_id(cfg: TSEConfig, frames: int, hw: HwProfile) -> str:
    """Resume key: the configuration (its [hw] is the base), the frames and the point."""
    key = json.dumps({"config": cfg.to_dict(), "frames": frames, "hw": hw.to_dict()},
                     sort_keys=True, default=str)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def make_points(cfg: TSEConfig, grid: Grid, frames: int) -> list[Point]:
    """Every distinct point of the grid around cfg.hw (the base), legalized for cfg; the
    first label of a repeated profile wins (base before widest before the axes)."""
    out, seen = [], set()
    for label, changes in _raw_points(grid, cfg.hw):
        hw = legalize(cfg, _profile(cfg.hw, changes, f"{grid.source}: {label}"))
        pid = point_id(cfg, frames, hw)
        if pid in seen:
            continue
        seen.add(pid)
        axis, value = "", None
        if grid.mode == "axes" and len(changes) == 1 and label == "{}={}".format(
                *next(iter(changes.items()))):
            axis, value = next(iter(changes.items()))
        out.append(Point(label, axis, value, hw, pid))
    return out


def safe_widths(cfg: TSEConfig, params=None) -> dict:
    """The least accumulator widths that cannot overflow for cfg (hw_profile.required_bits),
    with the block's fixed-point biases added to the worst-case sums when params
    (QuantParams) are given: what numerics.derive checks without saturation."""
    from ref_model import numerics
    from ref_model.hw_profile import PRODUCT_MAX
    counts = tile_counts(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols)
    safe = required_bits(cfg.channels, cfg.hidden, max(counts))
    if params is not None:
        f = cfg.hw.bias_frac_bits
        ip = numerics.derive(params, cfg.replace(hw=cfg.hw.replace(saturate=True)))
        for name, bias, fan_in in (("fc1_acc_bits", ip.hw_fc1_bias, cfg.channels),
                                   ("fc2_acc_bits", ip.hw_fc2_bias, cfg.hidden)):
            worst = (PRODUCT_MAX * fan_in << f) + int(np.abs(bias).max())
            safe[name] = max(safe[name], worst.bit_length() + 1 - f)
    return safe


def narrowing_candidates(cfg: TSEConfig, grid: Grid, rows: list) -> dict:
    """axis -> the values below the base that matched the torch profile exactly on their
    own (every value from there up to the widest did), narrowest first; accumulators stay at
    or above their safe width unless the base saturates (a narrower one matched only because
    these frames never overflowed it)."""
    safe = required_bits(cfg.channels, cfg.hidden, max(
        tile_counts(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols)))
    out = {}
    for name in grid.axes:
        first = _fields_of(name)[0]
        if first not in INT_AXES:
            continue
        exact = {r["value"]: r["mismatches"] == 0 for r in rows if r["axis"] == name}
        ok = None
        for v in sorted(exact, reverse=True):      # widest first, down while exact
            if not exact[v]:
                break
            ok = v
        base_v = getattr(cfg.hw, first)
        floor = max(safe[f] for f in _fields_of(name)) if (
            first in safe and not cfg.hw.saturate) else 0
        vals = sorted(v for v in exact if ok is not None and max(ok, floor) <= v < base_v)
        if vals:
            out[name] = vals
    return out


def greedy_narrowest(cfg: TSEConfig, grid: Grid, rows: list, frames: int, evaluate_one):
    """The narrowest combination found greedily: axes in order of the cost they save on
    their own, each narrowed to the narrowest of its candidates (narrowing_candidates) that
    keeps the output equal to the torch profile together with the axes already narrowed,
    and (unless the base saturates) keeps every accumulator from saturating, its block's
    biases included. evaluate_one(point) -> row. Returns the chosen point (None if nothing
    narrows)."""
    cands = narrowing_candidates(cfg, grid, rows)
    if not cands:
        return None
    base_cost = hardware_cost(cfg)[COST_KEY]

    def saved(name):
        hw = legalize(cfg, _profile(cfg.hw, {name: cands[name][0]}, grid.source))
        return base_cost - hardware_cost(cfg.replace(hw=hw))[COST_KEY]

    current, chosen = {}, None
    for name in sorted(cands, key=saved, reverse=True):
        for v in cands[name]:
            changes = {**current, name: v}
            hw = legalize(cfg, _profile(cfg.hw, changes, f"{grid.source}: narrowest"))
            label = "trial " + ",".join(f"{n}={x}" for n, x in changes.items())
            p = Point(label, "", None, hw, point_id(cfg, frames, hw))
            row = evaluate_one(p)
            if row["mismatches"] == 0 and (cfg.hw.saturate or not row["saturate"]):
                current, chosen = changes, p
                break
    return chosen


def beyond_points(cfg: TSEConfig, grid: Grid, best: Point, frames: int) -> list[Point]:
    """The narrowest combination with one width axis narrower still, at each grid value
    below the combination's: where the cost/error trade-off (the Pareto front) lives once
    every width is as narrow as it can be without error."""
    base = best.hw.to_dict()
    out = []
    for name, values in grid.axes.items():
        first = _fields_of(name)[0]
        if first not in INT_AXES:
            continue
        for v in sorted(values, reverse=True):
            if v >= base[first]:
                continue
            changes = {f: base[f] for f in HW_FIELDS if f not in ("saturate", "exact_mean")}
            changes.update(_expand({name: v}))
            hw = legalize(cfg, cfg.hw.replace(**changes, saturate=True, exact_mean=False))
            out.append(Point(f"narrowest+{name}={v}", "", None, hw,
                             point_id(cfg, frames, hw)))
    return out


# =====================================================================================
# Evaluation
# =====================================================================================

@dataclass
class Context:
    """What every point is measured against (numpy only: ships to workers): the block's
    parameters, the input codes (channels last), the torch profile's stages, the float
    block's output (channels last) and the output's quantization."""

    cfg: TSEConfig
    frames: int
    params: object                 # ref_model.params.QuantParams
    x: np.ndarray                  # uint8 [N, H, W, C]
    torch_stages: dict             # stage -> array (ref_model.kernels.run, "torch")
    float_output: np.ndarray       # float32 [N, H, W, C]
    out_scale: float
    out_zero_point: int
    baseline: dict = field(default_factory=dict)


def build_context(cfg: TSEConfig, frames: int) -> Context:
    """Quantize the block of cfg (quant.reference.build: seeded weights, synthetic frames)
    and run the torch profile once; baseline: the torch profile against quantized PyTorch
    (codes) and against the float block."""
    from ref_model import kernels

    from . import reference
    ref = reference.build(cfg, frames=frames)
    x = kernels.nhwc(ref.codes["input"])
    torch_out = kernels.run(cfg, ref.params, x, "torch")
    stages = {s: torch_out[s] for s in STAGE_NAMES + ("output",)}
    ctx = Context(cfg, frames, ref.params, x, stages,
                  np.ascontiguousarray(kernels.nhwc(ref.float_output), np.float32),
                  float(ref.params.scales["output"]), int(ref.params.zero_points["output"]))
    pytorch_out = kernels.nhwc(ref.codes["output"])
    sq, cos = _float_metrics(ctx, stages["output"])
    ctx.baseline = {
        "torch_profile_vs_pytorch_mismatches": int((pytorch_out != stages["output"]).sum()),
        "torch_profile_sqnr_db": sq, "torch_profile_cosine": cos,
        "output_values": int(stages["output"].size)}
    return ctx


def _float_metrics(ctx: Context, codes: np.ndarray) -> tuple[float, float]:
    y = (codes.astype(np.float64) - ctx.out_zero_point) * ctx.out_scale
    f = ctx.float_output.astype(np.float64)
    noise = float(((y - f) ** 2).sum())
    signal = float((f ** 2).sum())
    sqnr = 300.0 if noise == 0 else min(300.0, 10 * math.log10(max(signal, 1e-300) / noise))
    denom = math.sqrt(float((y ** 2).sum()) * signal)
    cos = float((y * f).sum()) / denom if denom > 0 else 1.0
    return sqnr, cos


def evaluate(ctx: Context, point: Point) -> dict:
    """Every measurement of one point (one row of the sweep's tables)."""
    from ref_model import kernels, numerics

    t0 = time.perf_counter()
    hw = point.hw
    cfg = ctx.cfg.replace(hw=hw)
    try:
        ip = numerics.derive(ctx.params, cfg)
    except ConfigError:
        if hw.saturate:
            raise
        hw = hw.replace(saturate=True)          # a bias that does not fit: saturate
        cfg = ctx.cfg.replace(hw=hw)
        ip = numerics.derive(ctx.params, cfg)
    out = kernels.run(cfg, ip, ctx.x, "hw")
    t_out = ctx.torch_stages["output"]
    d = np.abs(out["output"].astype(np.int16) - t_out.astype(np.int16))
    mism = int(np.count_nonzero(d))
    sqnr, cos = _float_metrics(ctx, out["output"])
    row = {"id": point.id, "label": point.label, "axis": point.axis,
           "value": point.value if point.value is not None else ""}
    row.update(hw.to_dict())
    row.update({
        "exact_match": 1.0 - mism / d.size,
        "mismatches": mism,
        "max_abs_err_lsb": int(d.max()),
        "mean_abs_err_lsb": float(d.mean()),
        "sqnr_db": sqnr,
        "cosine": cos,
    })
    for s in STAGE_NAMES:
        a, b = out[s], ctx.torch_stages[s]
        row[f"{s}_mismatch_rate"] = float(np.count_nonzero(a != b) / a.size)
    for s, n in out["saturated"].items():
        row[f"saturated_{s}"] = int(n)
    row.update(hardware_cost(cfg))
    row["yosys_cells"] = ""
    row["seconds"] = round(time.perf_counter() - t0, 4)
    return row


# =====================================================================================
# Hardware cost
# =====================================================================================

SHIFT_BITS = 7
"""Width of a stored requantizer shift (shifts stay below 128)."""


def hardware_cost(cfg: TSEConfig) -> dict:
    """Hardware cost of the configuration's widths without RTL: storage bits and multiplier
    input widths (docs/sweeps.md). Width-dependent storage:
      reciprocal ROM   4 tile kinds x (reciprocal_bits + 1)   (R[n] <= 2**bits)
      bias ROMs        hidden x (fc1_acc_bits + f) + C x (fc2_acc_bits + f)
      multiplier ROMs  hidden x (fc1_multiplier_bits + 7) + C x (fc2_multiplier_bits + 7)
                       + mul_multiplier_bits + 7            (multiplier and shift)
      sigmoid ROM      256 x gate_bits
      tile sums        tiles_x x C x sum_bits               (line accumulator registers)
      accumulators     Q x (max(fc1_acc_bits, fc2_acc_bits) + f)   (excite MAC, Q MACs)
      gate memory      2 banks x tiles_x x C x gate_bits
    Multipliers (a x b input bits, instances): mean sum_bits x (reciprocal_bits + 1);
    fc1/fc2 requantizers (acc + f) x multiplier_bits; broadcaster, per lane, 9 x gate_bits
    and (9 + gate_bits) x mul_multiplier_bits; the excite MAC's Q 9 x 8 (fixed).
    cost_bits = storage_bits + multiplier_cells (sum of a x b over instances: the cells of
    array multipliers), a one-number area proxy: a flip-flop and a full adder are of
    similar size in standard cells. The weights and the strip buffer do not depend on the
    widths and are reported apart (fixed_storage_bits)."""
    hw, f = cfg.hw, cfg.hw.bias_frac_bits
    c, hid, p, q, tx = cfg.channels, cfg.hidden, cfg.lanes, cfg.excite_multipliers, cfg.tiles_x
    g = hw.gate_bits
    storage = {
        "reciprocal_rom_bits": 4 * (hw.reciprocal_bits + 1),
        "bias_rom_bits": hid * (hw.fc1_acc_bits + f) + c * (hw.fc2_acc_bits + f),
        "multiplier_rom_bits": (hid * (hw.fc1_multiplier_bits + SHIFT_BITS)
                                + c * (hw.fc2_multiplier_bits + SHIFT_BITS)
                                + hw.mul_multiplier_bits + SHIFT_BITS),
        "sigmoid_rom_bits": 256 * g,
        "tile_sum_bits": tx * c * hw.sum_bits,
        "accumulator_bits": q * (max(hw.fc1_acc_bits, hw.fc2_acc_bits) + f),
        "gate_memory_bits": 2 * tx * c * g,
    }
    mults = {   # name: (a, b, instances)
        "mean": (hw.sum_bits, hw.reciprocal_bits + 1, 1),
        "fc1_requant": (hw.fc1_acc_bits + f, hw.fc1_multiplier_bits, 1),
        "fc2_requant": (hw.fc2_acc_bits + f, hw.fc2_multiplier_bits, 1),
        "gate_mul": (9, g, p),
        "out_requant": (9 + g, hw.mul_multiplier_bits, p),
    }
    cells = sum(a * b * n for a, b, n in mults.values())
    storage_bits = sum(storage.values())
    fixed = 8 * 2 * c * hid + 8 * cfg.lanes * cfg.full_throughput_depth
    out = {"storage_bits": storage_bits, "multiplier_cells": cells,
           COST_KEY: storage_bits + cells, "fixed_storage_bits": fixed,
           "mac_multiplier_cells": 9 * 8 * q}
    out.update(storage)
    for name, (a, b, n) in mults.items():
        out[f"{name}_multiplier"] = f"{a}x{b}" + (f" x{n}" if n > 1 else "")
    return out


def rtl_cost(cfg: TSEConfig, params) -> dict | None:
    """Yosys cells of the unit's RTL synthesized for cfg (rtl.resources.yosys_cells, iCE40),
    when rtl/ and Yosys are available; None otherwise."""
    from ref_model import numerics
    try:
        from rtl import resources            # optional: the RTL and a Yosys install
    except ImportError:
        return None
    cells = resources.yosys_cells(cfg, numerics.derive(params, cfg))
    return None if cells is None else {"yosys_cells": cells}


# =====================================================================================
# Pareto front
# =====================================================================================

def pareto(rows: list, cost_key: str = COST_KEY, err_key: str = ERROR_KEY) -> list[str]:
    """Ids of the points no other point beats on both cost and error (lower is better for
    both; of equal points the first), ordered by cost."""
    order = sorted(range(len(rows)), key=lambda k: (rows[k][cost_key], rows[k][err_key], k))
    front, best = [], math.inf
    for k in order:
        if rows[k][err_key] < best:
            front.append(rows[k]["id"])
            best = rows[k][err_key]
    return front


# =====================================================================================
# Running: resume log, local processes, Dask
# =====================================================================================

class Progress:
    """A progress bar on stderr (off with enabled=False): one line redrawn on a terminal,
    a line per tenth in a log. The total may grow (points added as results come in)."""

    def __init__(self, total: int, done: int, enabled: bool, what: str = "sweep",
                 stream=None):
        self.total, self.done, self.enabled, self.what = total, done, enabled, what
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self.last_decile = -1
        self.last_written = None
        self.show()

    def step(self, label: str = "") -> None:
        self.done += 1
        self.show(label)

    def _line(self, label: str = "") -> str:
        frac = self.done / self.total if self.total else 1.0
        bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
        return (f"{self.what} [{bar}] {self.done}/{self.total} points "
                f"{time.perf_counter() - self.t0:5.1f} s {label}")[:110]

    def show(self, label: str = "") -> None:
        if not self.enabled:
            return
        decile = int(10 * self.done / self.total) if self.total else 10
        if self.tty:
            self.stream.write("\r" + self._line(label).ljust(110))
        elif decile > self.last_decile:
            self.last_decile = decile
            self.last_written = (self.done, self.total)
            self.stream.write(self._line(label) + "\n")
        self.stream.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\n")
        elif self.last_written != (self.done, self.total):
            self.stream.write(self._line() + "\n")
        self.stream.flush()


def read_log(path: Path) -> dict:
    """Finished points of an earlier run: id -> row (a torn last line is skipped)."""
    rows = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and "id" in row:
                rows[row["id"]] = row
    return rows


_WORKER_CTX: list = []


def _init_worker(ctx: Context) -> None:
    _WORKER_CTX[:] = [ctx]


def _evaluate_in_worker(point: Point) -> dict:
    return evaluate(_WORKER_CTX[0], point)


def _run_local(ctx: Context, todo: list, workers: int, on_row) -> None:
    if workers <= 1 or len(todo) <= 1:
        for p in todo:
            on_row(evaluate(ctx, p))
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    # spawn: the workers need numpy and numba only, never the parent's torch threads
    with ProcessPoolExecutor(max_workers=min(workers, len(todo)),
                             mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(ctx,)) as pool:
        pending = {pool.submit(_evaluate_in_worker, p) for p in todo}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_row(fut.result())
        except BaseException:
            for fut in pending:
                fut.cancel()
            raise


def _run_dask(ctx: Context, todo: list, scheduler: str, workers: int, on_row) -> None:
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ConfigError("scheduler: Dask is not installed; allowed: pip install "
                          "'dask[distributed]', or leave --scheduler out for local "
                          "processes") from None
    cluster = None
    try:
        if scheduler == "local":
            cluster = LocalCluster(n_workers=max(1, workers), threads_per_worker=1,
                                   processes=True, dashboard_address=None)
            client = Client(cluster)
        else:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as e:
        if cluster is not None:
            cluster.close()
        raise InputError(f"scheduler: cannot connect to {scheduler!r} ({e}); allowed: a "
                         "running Dask scheduler's address, e.g. tcp://host:8786, or "
                         "'local'") from None
    try:
        ctx_future = client.scatter(ctx, broadcast=True)
        futures = [client.submit(evaluate, ctx_future, p, pure=False) for p in todo]
        try:
            for fut in as_completed(futures):
                on_row(fut.result())
        except BaseException:
            client.cancel(futures)
            raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _evaluate_all(ctx, todo, workers, scheduler, on_row):
    if not todo:
        return
    if scheduler:
        _run_dask(ctx, todo, scheduler, workers, on_row)
    else:
        _run_local(ctx, todo, workers, on_row)


def run_sweep(cfg: TSEConfig, grid: Grid | None, out_dir, *, frames: int | None = None,
              workers: int | None = None, scheduler: str | None = None,
              progress: bool = True, plots: bool = True, yosys=(),
              context: Context | None = None) -> dict:
    """Evaluate every point of the grid around cfg.hw and write the outputs to out_dir.
    Finished points found in out_dir/points.jsonl (same configuration, frames and point)
    are not evaluated again. Returns the summary (also in sweep.json)."""
    grid = grid if grid is not None else load_grid()
    frames = frames or grid.frames or 32
    workers = workers if workers is not None else (os.cpu_count() or 1)
    if not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"workers: {workers!r} is not allowed; allowed: a positive integer")
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"out: cannot create {str(out_dir)!r} ({e.strerror})") from None
    log_path = out_dir / "points.jsonl"
    points = make_points(cfg, grid, frames)
    previous = read_log(log_path)
    rows = {p.id: previous[p.id] for p in points if p.id in previous}
    resumed = len(rows)
    ctx = context or build_context(cfg, frames)
    bar = Progress(len(points), resumed, progress)
    labels = {p.id: p for p in points}
    with open(log_path, "a") as log:
        if log.tell() and not log_path.read_bytes().endswith(b"\n"):
            log.write("\n")                       # after a torn last line
        def on_row(row):
            p = labels.get(row["id"])
            if p is not None:                     # the label of this run, not the log's
                row["label"], row["axis"] = p.label, p.axis
                row["value"] = p.value if p.value is not None else ""
            rows[row["id"]] = row
            log.write(json.dumps(row) + "\n")
            log.flush()
            bar.step(row["label"])

        todo = [p for p in points if p.id not in rows]
        _evaluate_all(ctx, todo, workers, scheduler, on_row)

        def evaluate_one(p):
            if p.id not in labels:
                points.append(p)
                labels[p.id] = p
                bar.total += 1
                if p.id in previous:
                    rows[p.id] = dict(previous[p.id], label=p.label, axis="", value="")
                    bar.step(p.label)
                else:
                    _evaluate_all(ctx, [p], 1, None, on_row)
            return rows[p.id]

        if grid.mode == "axes":
            best = greedy_narrowest(cfg, grid, [rows[p.id] for p in points], frames,
                                    evaluate_one)
            if best is not None:
                rows[best.id]["label"] = "narrowest"
                labels[best.id] = dataclasses.replace(best, label="narrowest")
                more = [p for p in beyond_points(cfg, grid, best, frames)
                        if p.id not in labels]
                for p in more:
                    points.append(p)
                    labels[p.id] = p
                    if p.id in previous:
                        rows[p.id] = dict(previous[p.id], label=p.label, axis="", value="")
                bar.total += len(more)
                bar.done += sum(p.id in rows for p in more)
                _evaluate_all(ctx, [p for p in more if p.id not in rows], workers,
                              scheduler, on_row)
    bar.close()
    table = [rows[p.id] for p in points]
    notes = []
    if yosys:
        notes += _add_yosys(cfg, ctx.params, table, yosys)
    resumed = sum(p.id in previous for p in points)
    return write_outputs(cfg, grid, frames, ctx.baseline, table, out_dir, plots=plots,
                         resumed=resumed, notes=notes, safe=safe_widths(cfg, ctx.params))


def _add_yosys(cfg, params, table, wanted) -> list:
    """Yosys cells for the points the user named (labels or ids), where rtl/ can say."""
    names = set(wanted)
    chosen = [r for r in table if r["label"] in names or r["id"] in names]
    unknown = names - {r["label"] for r in chosen} - {r["id"] for r in chosen}
    if unknown:
        raise ConfigError(f"yosys: no point {sorted(unknown)[0]!r}; allowed: a point's label "
                          "or id from sweep.csv (e.g. base, widest, narrowest, sum_bits=16)")
    notes = []
    for r in chosen:
        hw = HwProfile(**{k: r[k] for k in HW_FIELDS})
        res = rtl_cost(cfg.replace(hw=hw), params)
        if res is None:
            return ["yosys: no RTL synthesis available (rtl/ or yosys missing); storage bits "
                    "and multiplier widths only"]
        r.update(res)
    return notes


# =====================================================================================
# Outputs
# =====================================================================================

def axis_slices(cfg: TSEConfig, grid: Grid, rows: list) -> dict:
    """axis -> rows in which only that axis differs from the base (the others at their
    defaults), ordered by value: what the error-against-width plots show."""
    base = cfg.hw.to_dict()
    free = ("saturate", "exact_mean")
    out = {}
    for name, values in grid.axes.items():
        fields = _fields_of(name)
        got = {}
        for r in rows:
            if any(r[k] != base[k] for k in HW_FIELDS if k not in fields and k not in free):
                continue
            vals = {r[f] for f in fields}
            if len(vals) == 1:
                v = vals.pop()
                if v in values or v == base[fields[0]]:
                    got.setdefault(v, r)
        order = (sorted(got) if fields[0] in INT_AXES
                 else [v for v in CHOICE_AXES[fields[0]] if v in got])
        out[name] = [(v, got[v]) for v in order]
    return out


def lossless_widths(cfg: TSEConfig, grid: Grid, rows: list, safe: dict | None = None) -> dict:
    """axis -> {"narrowest_exact": narrowest value with zero mismatches from which every
    wider value also has none (None if not even the widest), "base": base value, and the
    first narrower value's error}."""
    out = {}
    for name, pts in axis_slices(cfg, grid, rows).items():
        if _fields_of(name)[0] not in INT_AXES or not pts:
            continue
        ok, below = None, None
        for v, r in reversed(pts):
            if r["mismatches"] == 0:
                ok = v
            else:
                below = (v, r)
                break
        safe = safe if safe is not None else safe_widths(cfg)
        out[name] = {"base": getattr(cfg.hw, _fields_of(name)[0]), "narrowest_exact": ok,
                     "safe": max((safe[f] for f in _fields_of(name) if f in safe),
                                 default=None),
                     "next_narrower": below[0] if below else None,
                     "next_narrower_mean_abs_err_lsb": below[1][ERROR_KEY] if below else None,
                     "next_narrower_exact_match": below[1]["exact_match"] if below else None}
    return out


COLUMNS = (("id", "label", "axis", "value") + HW_FIELDS
           + ("exact_match", "mismatches", "max_abs_err_lsb", "mean_abs_err_lsb", "sqnr_db",
              "cosine") + tuple(f"{s}_mismatch_rate" for s in STAGE_NAMES)
           + ("saturated_tile_sums", "saturated_hidden", "saturated_excite",
              COST_KEY, "storage_bits", "multiplier_cells", "yosys_cells", "pareto"))


def write_outputs(cfg, grid, frames, baseline, rows, out_dir, *, plots=True, resumed=0,
                  notes=(), safe=None) -> dict:
    out_dir = Path(out_dir)
    front = pareto(rows)
    on_front = set(front)
    for r in rows:
        r["pareto"] = r["id"] in on_front
    by_label = {r["label"]: r for r in rows}
    if "widest" not in by_label and "base" in by_label and any(
            _fields_of(n)[0] in INT_AXES for n in grid.axes):
        by_label["widest"] = by_label["base"]      # every axis' widest value is the base's
    pick = ("id", "label", "exact_match", "mismatches", "max_abs_err_lsb", ERROR_KEY,
            "sqnr_db", "cosine", COST_KEY, "storage_bits", "multiplier_cells")
    summary = {
        "config": cfg.to_dict(), "grid": grid.source, "mode": grid.mode, "frames": frames,
        "points": len(rows), "resumed": resumed, "baseline": baseline,
        "base": {k: by_label["base"][k] for k in pick} if "base" in by_label else None,
        "widest": {k: by_label["widest"][k] for k in pick} if "widest" in by_label else None,
        "narrowest": ({k: by_label["narrowest"][k] for k in pick}
                      | {k: by_label["narrowest"][k] for k in HW_FIELDS}
                      if "narrowest" in by_label else None),
        "lossless_widths": lossless_widths(cfg, grid, rows, safe),
        "pareto": [{k: r[k] for k in pick} for r in rows if r["pareto"]],
        "notes": list(notes),
    }
    summary["pareto"].sort(key=lambda r: r[COST_KEY])
    files = {"csv": out_dir / "sweep.csv", "json": out_dir / "sweep.json",
             "log": out_dir / "points.jsonl"}
    with open(files["csv"], "w", newline="") as fh:
        extra = sorted({k for r in rows for k in r} - set(COLUMNS))
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS) + extra)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in list(COLUMNS) + extra})
    if plots:
        from . import plots as plotting
        files.update(plotting.sweep_plots(cfg, grid, rows, summary, out_dir,
                                          axis_slices(cfg, grid, rows)))
    summary["files"] = {k: str(v) for k, v in files.items()}
    files["json"].write_text(json.dumps({"summary": summary, "points": rows}, indent=1,
                                        default=str))
    return summary


def format_summary(s: dict) -> str:
    cfg = s["config"]
    b = s["baseline"]
    lines = [
        f"width sweep: C={cfg['channels']} {cfg['height']}x{cfg['width']} tile {cfg['tile']} "
        f"engine {cfg['engine']}, {s['frames']} frames, {s['points']} points "
        f"({s['resumed']} resumed), {s['grid']} ({s['mode']})",
        f"  torch profile vs quantized PyTorch: {b['torch_profile_vs_pytorch_mismatches']} "
        f"mismatching output codes of {b['output_values']}; vs float: SQNR "
        f"{b['torch_profile_sqnr_db']:.2f} dB, cosine {b['torch_profile_cosine']:.6f}",
    ]
    for key in ("base", "widest", "narrowest"):
        r = s.get(key)
        if r:
            lines.append(f"  {key:9s} exact match {r['exact_match']:.6f}, max {r['max_abs_err_lsb']}"
                         f" LSB, mean {r[ERROR_KEY]:.3g} LSB, SQNR {r['sqnr_db']:.2f} dB, "
                         f"cost {r[COST_KEY]} bits")
    lines.append("  narrowest width with output codes equal to the torch profile (the others "
                 "at the base):")
    lines.append(f"    {'axis':22s} {'base':>5s} {'safe':>5s} {'narrowest':>9s}  one narrower: "
                 "mean |err|, exact match")
    for name, v in s["lossless_widths"].items():
        nx = ("-" if v["next_narrower"] is None else
              f"{v['next_narrower']}: {v['next_narrower_mean_abs_err_lsb']:.3g} LSB, "
              f"{v['next_narrower_exact_match']:.4f}")
        ok = "none" if v["narrowest_exact"] is None else str(v["narrowest_exact"])
        safe = "" if v.get("safe") is None else str(v["safe"])
        lines.append(f"    {name:22s} {v['base']:>5} {safe:>5s} {ok:>9s}  {nx}")
    lines.append(f"  Pareto front (cost bits against mean |error| LSB), {len(s['pareto'])} "
                 f"point{'s' if len(s['pareto']) != 1 else ''}:")
    for r in s["pareto"]:
        lines.append(f"    {r[COST_KEY]:>8} bits  {r[ERROR_KEY]:<10.4g} LSB  {r['label']}")
    for n in s["notes"]:
        lines.append(f"  note: {n}")
    if "files" in s:
        lines.append(f"  wrote {', '.join(s['files'].values())}"
                     + (", plots" if "error_plot" in s["files"] else ""))
    return "\n".join(lines)
