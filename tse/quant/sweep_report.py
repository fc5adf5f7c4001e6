"""The sweep's results as tables and text: the Pareto front of cost against error, the
per-axis slices and lossless widths, sweep.csv and sweep.json (with the summary, and the
plots through tse.quant.plots), and the summary printed by `tse sweep`.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

from tse.ref_model.config import TSEConfig

from . import plots as plotting
from .sweep_grid import (CHOICE_AXES, COST_KEY, ERROR_KEY, HW_FIELDS, INT_AXES, STAGE_NAMES,
                         Grid, fields_of, safe_widths)



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



def axis_slices(cfg: TSEConfig, grid: Grid, rows: list) -> dict:
    """axis -> rows in which only that axis differs from the base (the others at their
    defaults), ordered by value: what the error-against-width plots show."""
    base = cfg.hw.to_dict()
    free = ("saturate", "exact_mean")
    out = {}
    for name, values in grid.axes.items():
        fields = fields_of(name)
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
        if fields_of(name)[0] not in INT_AXES or not pts:
            continue
        ok, below = None, None
        for v, r in reversed(pts):
            if r["mismatches"] == 0:
                ok = v
            else:
                below = (v, r)
                break
        safe = safe if safe is not None else safe_widths(cfg)
        out[name] = {"base": getattr(cfg.hw, fields_of(name)[0]), "narrowest_exact": ok,
                     "safe": max((safe[f] for f in fields_of(name) if f in safe),
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
            fields_of(n)[0] in INT_AXES for n in grid.axes):
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
        f"width sweep of {cfg.get('block', 'se').upper()}"
        + (" with the 3x1 excite" if cfg.get("excite_kernel") == "3x1" else "")
        + f": C={cfg['channels']} "
        f"{cfg['height']}x{cfg['width']} tile {cfg['tile']} "
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
    if b.get("cost_basis"):
        lines.append(f"  cost: {b['cost_basis']}")
    for n in s["notes"]:
        lines.append(f"  note: {n}")
    if "files" in s:
        lines.append(f"  wrote {', '.join(s['files'].values())}"
                     + (", plots" if "error_plot" in s["files"] else ""))
    return "\n".join(lines)
