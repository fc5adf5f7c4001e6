"""PNG plots of a width sweep (matplotlib, no display needed). docs/sweeps.md explains them.

  error_vs_width.png  one panel per axis, the other widths at the base: mean |error| and the
                      mismatch rate of the output codes against the torch profile (symlog
                      scale: 0 is drawn at the bottom); dashed line: the base value; dotted
                      red line: the safe (non-overflowing) accumulator width; hollow
                      markers: saturating points
  sqnr_vs_width.png   the same panels, SQNR of the dequantized output against the float
                      block (dB); the grey line is the torch profile's own SQNR
  cost_vs_error.png   every point's cost (storage bits + multiplier cells) against its mean
                      |error|, the Pareto front joined in red, base/widest/narrowest labelled
"""
from __future__ import annotations

import math
from pathlib import Path

from .sweep_grid import COST_KEY, ERROR_KEY, fields_of

LINTHRESH = 1e-6


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _panels(plt, n):
    cols = min(4, max(1, n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def _xs(values):
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    return (list(values) if numeric else list(range(len(values)))), numeric


def sweep_plots(cfg, grid, rows, summary, out_dir, slices) -> dict:
    """Write the three PNGs; returns {"error_plot", "sqnr_plot", "pareto_plot"} -> path."""
    plt = _plt()
    out_dir = Path(out_dir)
    files = {}
    names = [n for n in slices if slices[n]]
    base = cfg.hw.to_dict()
    safe = {k: v.get("safe") for k, v in summary["lossless_widths"].items()}
    torch_sqnr = summary["baseline"]["torch_profile_sqnr_db"]
    title = (f"C={cfg.channels} {cfg.height}x{cfg.width} tile {cfg.tile} {cfg.engine}, "
             f"{summary['frames']} frames: hw profile against")

    for key, fname, ylabel, what in (
            ("error", "error_vs_width.png", "output error vs torch profile", "the torch profile"),
            ("sqnr", "sqnr_vs_width.png", "SQNR vs float (dB)", "the float block")):
        if not names:
            break
        fig, axes = _panels(plt, len(names))
        for ax, name in zip(axes, names):
            pts = slices[name]
            values = [v for v, _ in pts]
            xs, numeric = _xs(values)
            sat = [bool(r["saturate"]) and not base["saturate"] for _, r in pts]
            if key == "error":
                series = (("mean |err| (LSB)", [r[ERROR_KEY] for _, r in pts], "tab:blue", "o"),
                          ("mismatch rate", [1 - r["exact_match"] for _, r in pts],
                           "tab:orange", "s"))
            else:
                series = (("SQNR (dB)", [r["sqnr_db"] for _, r in pts], "tab:green", "o"),)
            for label, ys, color, marker in series:
                ax.plot(xs, ys, "-", color=color, lw=1, label=label)
                for x, y, s in zip(xs, ys, sat):
                    ax.plot([x], [y], marker, color=color, ms=5,
                            mfc="none" if s else color)
            if key == "error":
                ax.set_yscale("symlog", linthresh=LINTHRESH)
                ax.set_ylim(bottom=-LINTHRESH / 4)
            else:
                ax.axhline(torch_sqnr, color="grey", lw=0.8, label="torch profile")
                ax.ticklabel_format(axis="y", useOffset=False)
            first = fields_of(name)[0]
            if base.get(first) in values:
                bx = xs[values.index(base[first])]
                ax.axvline(bx, color="k", ls="--", lw=0.8, label="base")
            if safe.get(name) is not None and numeric:
                ax.axvline(safe[name], color="tab:red", ls=":", lw=1, label="safe width")
            if not numeric:
                ax.set_xticks(xs)
                ax.set_xticklabels([str(v) for v in values], fontsize=8)
            ax.set_title(name, fontsize=9)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        handles = {}
        for ax in axes:
            for h, lab in zip(*ax.get_legend_handles_labels()):
                handles.setdefault(lab, h)
        fig.suptitle(f"{title} {what}: {ylabel}, one axis at a time", fontsize=10)
        fig.tight_layout(rect=(0, 0, 1, 0.95))
        fig.legend(list(handles.values()), list(handles), loc="upper right", fontsize=7,
                   ncol=len(handles), frameon=False)
        path = out_dir / fname
        fig.savefig(path, dpi=90)
        plt.close(fig)
        files[f"{key}_plot"] = path

    fig, ax = plt.subplots(figsize=(7.5, 5))
    cost = [r[COST_KEY] for r in rows]
    err = [r[ERROR_KEY] for r in rows]
    ax.scatter(cost, err, s=14, color="tab:grey", alpha=0.7, label="points")
    front = sorted((r for r in rows if r["pareto"]), key=lambda r: r[COST_KEY])
    if front:
        ax.step([r[COST_KEY] for r in front], [r[ERROR_KEY] for r in front], where="post",
                color="tab:red", lw=1)
        ax.scatter([r[COST_KEY] for r in front], [r[ERROR_KEY] for r in front], s=28,
                   color="tab:red", label="Pareto front", zorder=3)
        for r in front:
            ax.annotate(r["label"].replace("narrowest+", "N+"), (r[COST_KEY], r[ERROR_KEY]),
                        fontsize=6,
                        xytext=(3, 3), textcoords="offset points", color="tab:red")
    for r in rows:
        if r["label"] in ("base", "widest", "narrowest"):
            ax.scatter([r[COST_KEY]], [r[ERROR_KEY]], s=60, facecolors="none",
                       edgecolors="k", zorder=4)
            ax.annotate(r["label"], (r[COST_KEY], r[ERROR_KEY]), fontsize=8,
                        xytext=(4, -10), textcoords="offset points")
    ax.set_yscale("symlog", linthresh=LINTHRESH)
    ax.set_ylim(bottom=-LINTHRESH / 4)
    ax.set_xlabel("cost: storage bits + multiplier cells (width-dependent part)")
    ax.set_ylabel("mean |output error| vs torch profile (LSB)")
    ax.set_title(f"C={cfg.channels} {cfg.height}x{cfg.width} tile {cfg.tile}: cost against "
                 f"error, {len(rows)} points (N = narrowest lossless)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out_dir / "cost_vs_error.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    files["pareto_plot"] = path
    return files


TILE_PLOT_SOURCE = "tse network"
TILE_PLOT_MARKER = b"tEXtSource\x00" + TILE_PLOT_SOURCE.encode()
TILE_SERIES = (("float_tse_tiles", "float TSE", "--", "o"), ("hw_tiles", "hw profile", "-", "s"))
"""The series of accuracy_vs_tile: report key, label, line style, marker."""


def accuracy_vs_tile(reports: dict, path) -> Path:
    """accuracy_vs_tile PNG of `tse network --model` (tse.model_accuracy.report per net):
    top-1 (%) against the tile, one line per net and series (float TSE dashed, hw profile
    solid), the nets' float top-1 as dotted lines. Written whole (artifacts.write_file)."""
    from tse.ref_model.artifacts import write_file

    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    tiles = list(dict.fromkeys(t for rep in reports.values() for t in rep["tiles"]))
    for k, (name, rep) in enumerate(reports.items()):
        color = colors[k % len(colors)]
        xs = [tiles.index(t) for t in rep["tiles"]]
        for key, label, style, marker in TILE_SERIES:
            ax.plot(xs, [100 * rep[key][t] for t in rep["tiles"]], style, marker=marker,
                    color=color, lw=1.2, ms=5, label=f"{name}: {label}")
        ax.axhline(100 * rep["float"], color=color, ls=":", lw=0.8,
                   label=f"{name}: float SE (the model)")
    ax.set_xticks(range(len(tiles)), tiles)
    ax.set_xlabel("tile (rows x columns of the SE block's map; W: full width, H: full height "
                  "= SE)")
    ax.set_ylabel("top-1 accuracy (%)")
    n = next(iter(reports.values()))["images"]
    ax.set_title(f"Fashion-MNIST top-1 against the tile, {n} test images", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    try:
        return write_file(path, lambda tmp: fig.savefig(
            tmp, dpi=90, format="png", metadata={"Source": TILE_PLOT_SOURCE}),
            TILE_PLOT_MARKER, "plot")
    finally:
        plt.close(fig)
