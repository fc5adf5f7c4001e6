"""The sweep's search for narrow widths: which narrower values kept the output exact, the
greedy narrowest combination of them, and the points one step beyond it.

Owns narrowing_candidates, greedy_narrowest (axes ordered by the hardware cost each saves,
tse.quant.sweep_cost) and beyond_points (the Pareto front's region past the narrowest point).
"""
from __future__ import annotations

from tse.ref_model.config import TSEConfig
from tse.ref_model.errors import ConfigError
from tse.ref_model.hw_profile import required_bits, tile_counts

from .sweep_cost import hardware_cost
from .sweep_grid import (COST_KEY, HW_FIELDS, INT_AXES, Grid, Point, expand, fields_of,
                         legalize, point_id, profile_with)


def narrowing_candidates(cfg: TSEConfig, grid: Grid, rows: list) -> dict:
    """axis -> the values below the base that matched the torch profile exactly on their
    own (every value from there up to the widest did), narrowest first; accumulators stay at
    or above their safe width unless the base saturates (a narrower one matched only because
    these frames never overflowed it)."""
    safe = required_bits(cfg.channels, cfg.hidden, max(
        tile_counts(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols)))
    out = {}
    for name in grid.axes:
        first = fields_of(name)[0]
        if first not in INT_AXES:
            continue
        exact = {r["value"]: r["mismatches"] == 0 for r in rows if r["axis"] == name}
        ok = None
        for v in sorted(exact, reverse=True):      # widest first, down while exact
            if not exact[v]:
                break
            ok = v
        base_v = getattr(cfg.hw, first)
        floor = max(safe[f] for f in fields_of(name)) if (
            first in safe and not cfg.hw.saturate) else 0
        vals = sorted(v for v in exact if ok is not None and max(ok, floor) <= v < base_v)
        if vals:
            out[name] = vals
    return out


def greedy_narrowest(cfg: TSEConfig, grid: Grid, rows: list, frames: int, evaluate_one,
                     params):
    """The narrowest combination found greedily: axes in order of the cost they save on
    their own, each narrowed to the narrowest of its candidates (narrowing_candidates) that
    keeps the output equal to the torch profile together with the axes already narrowed,
    and (unless the base saturates) keeps every accumulator from saturating, its block's
    biases included. evaluate_one(point) -> row; params: the block's QuantParams (the
    cost). Returns the chosen point (None if nothing
    narrows)."""
    cands = narrowing_candidates(cfg, grid, rows)
    if not cands:
        return None
    base_cost = cost_of(cfg, params)

    def saved(name):
        hw = legalize(cfg, profile_with(cfg.hw, {name: cands[name][0]}, grid.source))
        return base_cost - cost_of(cfg.replace(hw=hw), params)

    current, chosen = {}, None
    for name in sorted(cands, key=saved, reverse=True):
        for v in cands[name]:
            changes = {**current, name: v}
            hw = legalize(cfg, profile_with(cfg.hw, changes, f"{grid.source}: narrowest"))
            label = "trial " + ",".join(f"{n}={x}" for n, x in changes.items())
            p = Point(label, "", None, hw, point_id(cfg, frames, hw))
            row = evaluate_one(p)
            if row["mismatches"] == 0 and (cfg.hw.saturate or not row["saturate"]):
                current, chosen = changes, p
                break
    return chosen


def cost_of(cfg: TSEConfig, params) -> int:
    """cost_bits of cfg's widths, saturating when a bias does not fit the accumulator (as
    tse.quant.sweep_eval.evaluate measures such a point)."""
    try:
        return hardware_cost(cfg, params)[COST_KEY]
    except ConfigError:
        if cfg.hw.saturate:
            raise
        return hardware_cost(cfg.replace(hw=cfg.hw.replace(saturate=True)), params)[COST_KEY]


def beyond_points(cfg: TSEConfig, grid: Grid, best: Point, frames: int) -> list[Point]:
    """The narrowest combination with one width axis narrower still, at each grid value
    below the combination's: where the cost/error trade-off (the Pareto front) lives once
    every width is as narrow as it can be without error."""
    base = best.hw.to_dict()
    out = []
    for name, values in grid.axes.items():
        first = fields_of(name)[0]
        if first not in INT_AXES:
            continue
        for v in sorted(values, reverse=True):
            if v >= base[first]:
                continue
            changes = {f: base[f] for f in HW_FIELDS if f not in ("saturate", "exact_mean")}
            changes.update(expand({name: v}))
            hw = legalize(cfg, cfg.hw.replace(**changes, saturate=True, exact_mean=False))
            out.append(Point(f"narrowest+{name}={v}", "", None, hw,
                             point_id(cfg, frames, hw)))
    return out
