"""The sweep's grid and its points: what a sweep may vary and which hw profiles it evaluates.

Owns the axes (width and rounding fields of HwProfile, group axes), reading and validating a
grid TOML file (Grid, load_grid, parse_grid: one-line ConfigErrors naming the file, the axis
and what is allowed), expanding a grid into points (raw_points, make_points, Point and its
resume key point_id), legalizing a point for a configuration (legalize: saturating registers
below the safe width, an approximate mean for a short reciprocal) and the safe accumulator
widths (safe_widths). Also the names of a point's columns that the other sweep modules and
the plots share (ERROR_KEY, COST_KEY, STAGE_NAMES).
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import itertools
import json
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tse.ref_model import hw_profile
from tse.ref_model.config import TSEConfig
from tse.ref_model.errors import ConfigError
from tse.ref_model.hw_profile import HwProfile, required_bits, reciprocal_exact, tile_counts

DEFAULT_GRID = Path(__file__).with_name("sweep_grid_default.toml")
"""SE's default grid (DEFAULT_GRIDS: every block's)."""
MODES = ("axes", "product")
MAX_POINTS = 20000
"""Largest grid (after expanding a product) a sweep accepts."""

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
BLOCK_FIELDS = {
    "eca": ("reciprocal_bits", "mean_rounding", "fc2_multiplier_bits", "fc2_rounding",
            "gate_bits", "mul_multiplier_bits", "mul_rounding"),
    "srm": ("reciprocal_bits", "mean_rounding", "fc1_multiplier_bits", "fc1_rounding",
            "bias_frac_bits", "fc2_multiplier_bits", "fc2_rounding", "gate_bits",
            "mul_multiplier_bits", "mul_rounding"),
    "excite3x1": ("reciprocal_bits", "mean_rounding", "fc1_multiplier_bits", "fc1_rounding",
                  "bias_frac_bits", "fc2_multiplier_bits", "fc2_rounding", "gate_bits",
                  "mul_multiplier_bits", "mul_rounding"),
}
"""The HwProfile fields the ECA, SRM and 3x1-excite hw profiles compute with (the 3x1
excite: attention_kernels.excite3x1_hw_params, SE's requantizers on its two convolutions;
ECA and SRM: tse.ref_model.attention_hw:
the mean's reciprocal and rounding, SRM's variance reciprocal, its std and style requantizers
on fc1's multiplier bits and rounding and its folded bias on bias_frac_bits, the excite's
requantizer on fc2's, the gate table, the broadcaster). Their accumulators (sum_bits,
fc2_acc_bits) are only checked against the safe width (attention_widths: no saturating
registers), and SRM's deviation has a fixed STD_FRAC_BITS, so neither is an axis."""
BLOCK_AXES = {"se": AXES, **{
    block: tuple(a for a in AXES if all(f in used for f in ALIASES.get(a, (a,))))
    for block, used in BLOCK_FIELDS.items()}}
"""The axes a sweep of each block may vary (a group axis only where the block has all of
its fields)."""
DEFAULT_GRIDS = {"se": Path(__file__).with_name("sweep_grid_default.toml"),
                 "eca": Path(__file__).with_name("sweep_grid_eca.toml"),
                 "srm": Path(__file__).with_name("sweep_grid_srm.toml"),
                 "excite3x1": Path(__file__).with_name("sweep_grid_excite3x1.toml")}
HW_FIELDS = tuple(f.name for f in dataclasses.fields(HwProfile))
STAGE_NAMES = ("pooled", "hidden", "excite", "gate")
ERROR_KEY = "mean_abs_err_lsb"
"""A point's error column: the Pareto front's and the plots' error axis."""
COST_KEY = "cost_bits"
"""A point's cost column (tse.quant.sweep_cost): the Pareto front's and the plots' cost axis."""


@dataclass(frozen=True)
class Grid:
    """A validated grid: axes (name -> values, in the file's order), mode, frames, extra
    points ((name, {axis: value}) pairs), where it came from and the block whose axes it was
    checked against."""

    axes: dict
    mode: str = "axes"
    frames: int | None = None
    points: tuple = ()
    source: str = "grid"
    block: str = "se"


def load_grid(path=None, block: str = "se") -> Grid:
    """Read and validate a grid TOML file for a block (None: the block's default grid that
    ships with the tool). Any problem is a one-line ConfigError naming the file, the axis and
    what is allowed."""
    if block not in BLOCK_AXES:
        raise ConfigError(f"block: {block!r} is not allowed; allowed: "
                          f"{', '.join(BLOCK_AXES)}")
    path = Path(path) if path is not None else DEFAULT_GRIDS[block]
    source = f"grid {str(path)!r}"
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{source}: file does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{source}: not valid TOML: {str(e).splitlines()[0]}") from None
    return parse_grid(data, source, block)


def parse_grid(data: dict, source: str = "grid", block: str = "se") -> Grid:
    """Validate a grid given as a dict (the TOML file's tables) for a block's axes."""
    allowed_axes = BLOCK_AXES[block]
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
                          f"axes: {', '.join(allowed_axes)}")
    axes = {}
    for name, values in raw_axes.items():
        _check_axis_name(name, source, block)
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
    point_tables = data.get("point", [])
    if not isinstance(point_tables, list) or not all(isinstance(p, dict) for p in point_tables):
        raise ConfigError(f"{source}: point must be an array of tables ([[point]]); allowed: "
                          "name = \"...\" and axis = value pairs")
    points = []
    for k, p in enumerate(point_tables):
        p = dict(p)
        name = p.pop("name", f"point{k + 1}")
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{source}: point {k + 1}: name {name!r} is not allowed; "
                              "allowed: a non-empty string")
        if not p:
            raise ConfigError(f"{source}: point {name!r} sets no axis; allowed: "
                              f"{', '.join(allowed_axes)}")
        for axis, v in p.items():
            _check_axis_name(axis, f"{source}: point {name!r}", block)
            _check_value(axis, v, f"{source}: point {name!r}")
        _check_overlap(p, f"{source}: point {name!r}")
        points.append((name, p))
    if not axes and not points:
        raise ConfigError(f"{source}: no axes; allowed: an [axes] table with at least one of "
                          f"{', '.join(allowed_axes)}")
    grid = Grid(axes=axes, mode=mode, frames=frames, points=tuple(points), source=source,
                block=block)
    if mode == "product":
        size = math.prod(len(v) for v in axes.values())
        if size > MAX_POINTS:
            raise ConfigError(f"{source}: the product of the axes has {size} points; allowed: "
                              f"at most {MAX_POINTS} (fewer values, or mode = \"axes\")")
    for label, changes in raw_points(grid, HwProfile()):
        profile_with(HwProfile(), changes, f"{source}: {label}")   # ranges that combine
    return grid


def _known(table, allowed, source, what):
    for key in table:
        if key not in allowed:
            near = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ConfigError(f"{source}: unknown {what} {key!r}{hint}; allowed: "
                              f"{', '.join(allowed)}")


def _check_axis_name(name, source, block="se"):
    allowed = BLOCK_AXES[block]
    if name in AXES and name not in allowed:
        raise ConfigError(f"{source}: axis {name!r} is not a width of the {block} block's hw "
                          f"profile; allowed for block = {block!r}: {', '.join(allowed)}")
    if name not in AXES:
        near = difflib.get_close_matches(name, allowed, n=1)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"{source}: unknown axis {name!r}{hint}; allowed: "
                          f"{', '.join(allowed)}")


def fields_of(name):
    """The HwProfile fields an axis sets (a group axis sets several)."""
    return ALIASES.get(name, (name,))


def _allowed(name):
    first = fields_of(name)[0]
    if first in INT_AXES:
        lo, hi = INT_AXES[first]
        return f"integers {lo}..{hi}"
    return ", ".join(repr(v) for v in CHOICE_AXES[first])


def _check_value(name, v, source):
    first = fields_of(name)[0]
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
        for f in fields_of(name):
            if f in seen:
                raise ConfigError(f"{source}: axes {seen[f]!r} and {name!r} both set hw.{f}; "
                                  "allowed: each field in one axis")
            seen[f] = name


def expand(changes: dict) -> dict:
    """Axis values (group axes included) as HwProfile field values."""
    out = {}
    for name, v in changes.items():
        for f in fields_of(name):
            out[f] = v
    return out


def profile_with(base: HwProfile, changes: dict, where: str) -> HwProfile:
    """base with the changes, validated on its own (the most permissive flags: saturating,
    approximate mean); a combination outside a field's range is a ConfigError."""
    try:
        return base.replace(**expand(changes), saturate=True, exact_mean=False)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None



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


def raw_points(grid: Grid, base: HwProfile):
    """(label, axis changes) of every point of the grid, before deduplication."""
    yield "base", {}
    ints = [n for n in grid.axes if fields_of(n)[0] in INT_AXES]
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


def grid_kind(cfg: TSEConfig) -> str:
    """The key of BLOCK_AXES / DEFAULT_GRIDS cfg is swept with: its block, or "excite3x1"
    for SE with the paper's 3x1 excite (another hw profile: two 3x1 convolutions)."""
    return "excite3x1" if cfg.block == "se" and cfg.excite_kernel == "3x1" else cfg.block


def legalize(cfg: TSEConfig, hw: HwProfile) -> HwProfile:
    """hw with saturate and exact_mean set as the configuration needs them: saturating when
    an accumulator is narrower than the safe width (or the base already saturates), an
    approximate mean when the reciprocal is too short for what mean_rounding promises.
    ECA and SRM never saturate (their grids have no accumulator axes: BLOCK_AXES)."""
    counts = tile_counts(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols)
    need = required_bits(cfg.channels, cfg.hidden, max(counts))
    saturate = grid_kind(cfg) == "se" and (bool(cfg.hw.saturate)
                                      or any(getattr(hw, k) < v for k, v in need.items()))
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
    for label, changes in raw_points(grid, cfg.hw):
        hw = legalize(cfg, profile_with(cfg.hw, changes, f"{grid.source}: {label}"))
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
    from tse.ref_model import numerics
    from tse.ref_model.attention_widths import excite_acc_bits
    from tse.ref_model.hw_profile import PRODUCT_MAX
    counts = tile_counts(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols)
    if grid_kind(cfg) == "excite3x1":   # fan-ins over three taps (TSEConfig.check_hw's)
        return required_bits(3 * cfg.channels, 3 * cfg.hidden, max(counts))
    safe = required_bits(cfg.channels, cfg.hidden, max(counts))
    if cfg.block != "se":               # the widths attention_widths.check holds them to
        return {"sum_bits": safe["sum_bits"],
                "fc2_acc_bits": excite_acc_bits(cfg.block, cfg.eca_taps)}
    if params is not None:
        f = cfg.hw.bias_frac_bits
        ip = numerics.derive(params, cfg.replace(hw=cfg.hw.replace(saturate=True)))
        for name, bias, fan_in in (("fc1_acc_bits", ip.hw_fc1_bias, cfg.channels),
                                   ("fc2_acc_bits", ip.hw_fc2_bias, cfg.hidden)):
            worst = (PRODUCT_MAX * fan_in << f) + int(np.abs(bias).max())
            safe[name] = max(safe[name], worst.bit_length() + 1 - f)
    return safe