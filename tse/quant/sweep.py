"""Fixed-point width sweeps of the hw numerics profile: accuracy against width, and cost.

A hardware team's question is how narrow each part of the datapath can be before accuracy
moves. A sweep evaluates the hw profile (tse.ref_model.numerics, bit-accurate) over a grid of
widths and roundings of the configuration's [hw] table and measures, per point:

  against the torch profile   exact-match rate of the output codes, largest and mean
                              absolute error in output LSB, per-stage mismatch rates
  against the float block     SQNR (dB) and cosine similarity of the dequantized output
  saturation                  registers that saturated, per stage (narrow accumulators)
  hardware cost               memory bits and multipliers of the unit the RTL builds for the
                              point (hardware_cost: tse.ref_model.unit_plan, as `tse rtl`
                              reports them); Yosys cells when the user asks (rtl_cost)

    grid = load_grid(path)                      # TOML; None: tse/quant/sweep_grid_default.toml
    summary = run_sweep(cfg, grid, out_dir, workers=2)            # local processes
    summary = run_sweep(cfg, grid, out_dir, scheduler="tcp://...")  # a Dask cluster

Outputs in out_dir: points.jsonl (one finished point a line: an interrupted sweep resumes
from it and skips finished points), sweep.csv and sweep.json (every point, the Pareto front
of cost against error, the summary), and PNG plots (tse.quant.plots). docs/sweeps.md explains
how to read them and has the default sweep's results.

Widths narrower than the configuration would accept are evaluated as the less accurate
hardware they are: an accumulator below the safe width (hw_profile.required_bits) gets
hw.saturate = true (saturating registers, counted), a reciprocal too short for the mean's
promise gets hw.exact_mean = false (legalize).

ECA and SRM (cfg.block, issue 18) sweep the widths their hw profile has
(sweep_grid.BLOCK_AXES, default grids sweep_grid_eca.toml and sweep_grid_srm.toml), measured
by tse.quant.sweep_attention; their cost is an estimate (sweep_cost.attention_cost).

This module is the entry point: run_sweep ties the parts together, and the names other
modules use are importable from here. The parts:
  tse.quant.sweep_grid    the grid file, axes, points, legalizing, safe widths, column names
  tse.quant.sweep_eval    measuring one point (Context, build_context, evaluate)
  tse.quant.sweep_attention  the same for ECA and SRM
  tse.quant.sweep_cost    a point's hardware cost (hardware_cost, rtl_cost)
  tse.quant.sweep_narrow  the greedy narrowest combination and the points beyond it
  tse.quant.sweep_run     the resume log, progress bar and executors (processes, Dask)
  tse.quant.sweep_report  Pareto front, slices, sweep.csv / sweep.json, the printed summary
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from tse.ref_model.config import TSEConfig
from tse.ref_model.errors import ConfigError, InputError
from tse.ref_model.hw_profile import HwProfile

from . import sweep_attention
from .sweep_cost import hardware_cost, rtl_cost
from .sweep_eval import Context, build_context, evaluate
from .sweep_grid import (ALIASES, AXES, CHOICE_AXES, COST_KEY, DEFAULT_GRID, ERROR_KEY,
                         HW_FIELDS, INT_AXES, MAX_POINTS, MODES, STAGE_NAMES, Grid, Point,
                         grid_kind, legalize, load_grid, make_points, parse_grid, point_id,
                         safe_widths)
from .sweep_narrow import beyond_points, greedy_narrowest, narrowing_candidates
from .sweep_report import (COLUMNS, axis_slices, format_summary, lossless_widths, pareto,
                           write_outputs)
from .sweep_run import Progress, evaluate_points, read_log

__all__ = [
    "ALIASES", "AXES", "CHOICE_AXES", "COLUMNS", "COST_KEY", "DEFAULT_GRID", "ERROR_KEY",
    "HW_FIELDS", "INT_AXES", "MAX_POINTS", "MODES", "QUICK_FRAMES", "STAGE_NAMES",
    "Context", "Grid", "Point", "Progress", "axis_slices", "beyond_points",
    "build_context", "evaluate", "format_summary", "greedy_narrowest", "grid_kind",
    "hardware_cost",
    "legalize", "load_grid", "lossless_widths", "make_points", "narrowing_candidates",
    "pareto", "parse_grid", "point_id", "read_log", "rtl_cost", "run_sweep", "safe_widths",
    "write_outputs",
]

QUICK_FRAMES = 8
"""Frames of `tse sweep --quick`."""


def run_sweep(cfg: TSEConfig, grid: Grid | None, out_dir, *, frames: int | None = None,
              workers: int | None = None, scheduler: str | None = None,
              progress: bool = True, plots: bool = True, yosys=(),
              context: Context | None = None) -> dict:
    """Evaluate every point of the grid around cfg.hw and write the outputs to out_dir.
    Finished points found in out_dir/points.jsonl (same configuration, frames and point)
    are not evaluated again. Returns the summary (also in sweep.json)."""
    kind = grid_kind(cfg)
    grid = grid if grid is not None else load_grid(block=kind)
    if grid.block != kind:
        raise ConfigError(f"grid: {grid.source} was checked for block = {grid.block!r}; "
                          f"allowed: a grid loaded for block = {kind!r} "
                          f"(load_grid(path, {kind!r}))")
    se = kind == "se"
    if yosys and not se:
        raise ConfigError(f"yosys: not available for {kind} (the sweep synthesizes SE's "
                          "unit with the 1x1 excite only); allowed: leave --yosys out")
    measure = evaluate if se else sweep_attention.evaluate
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
    ctx = context or (build_context if se else sweep_attention.build_context)(cfg, frames)
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
        evaluate_points(ctx, todo, workers, scheduler, on_row, measure)

        def evaluate_one(p):
            if p.id not in labels:
                points.append(p)
                labels[p.id] = p
                bar.total += 1
                if p.id in previous:
                    rows[p.id] = dict(previous[p.id], label=p.label, axis="", value="")
                    bar.step(p.label)
                else:
                    evaluate_points(ctx, [p], 1, None, on_row, measure)
            return rows[p.id]

        if grid.mode == "axes":
            best = greedy_narrowest(cfg, grid, [rows[p.id] for p in points], frames,
                                    evaluate_one, ctx.params)
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
                evaluate_points(ctx, [p for p in more if p.id not in rows], workers,
                                scheduler, on_row, measure)
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
