"""The sweep's plots draw the numbers users read in sweep.json: every figure tse.quant.plots saves
is caught as it is saved, and the data of its lines and scatters is compared with the points
of sweep.json (a file size says nothing about which series a panel shows)."""
import json

import numpy as np
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from tse.quant import sweep
from tse.ref_model.config import TSEConfig

CFG = TSEConfig(channels=16, height=8, width=8, tile="2xW", reduction=4, lanes=8)
GRID = {"axes": {"gate_bits": [4, 6, 8], "sum_bits": [8, 10, 32],
                 "mul_rounding": ["half_even", "half_up"]}}


@pytest.fixture(scope="module")
def plotted(tmp_path_factory):
    out = tmp_path_factory.mktemp("plots")
    figures = {}
    real = Figure.savefig

    def catching(self, fname, *a, **k):
        figures[getattr(fname, "name", str(fname)).rsplit("/", 1)[-1]] = self
        return real(self, fname, *a, **k)

    mp = pytest.MonkeyPatch()
    mp.setattr(Figure, "savefig", catching)
    try:
        grid = sweep.parse_grid(GRID)
        sweep.run_sweep(CFG, grid, out, frames=4, workers=1, progress=False)
    finally:
        mp.undo()
    data = json.loads((out / "sweep.json").read_text())
    return figures, data, grid


def panels(fig):
    return {ax.get_title(): ax for ax in fig.axes if ax.get_visible() and ax.get_title()}


def series(ax, label):
    (line,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)


def x_of(values):
    numeric = all(isinstance(v, (int, float)) for v in values)
    return np.asarray(values if numeric else range(len(values)), float)


def test_error_panels_plot_each_axis_error_and_mismatch_rate(plotted):
    figures, data, grid = plotted
    slices = sweep.axis_slices(CFG, grid, data["points"])
    axes = panels(figures["error_vs_width.png"])
    assert set(axes) == {n for n in slices if slices[n]}
    for name, ax in axes.items():
        values = [v for v, _ in slices[name]]
        xs, err = series(ax, "mean |err| (LSB)")
        np.testing.assert_array_equal(xs, x_of(values))
        np.testing.assert_array_equal(err, [r[sweep.ERROR_KEY] for _, r in slices[name]])
        _, rate = series(ax, "mismatch rate")
        np.testing.assert_array_equal(rate, [1 - r["exact_match"] for _, r in slices[name]])
    # the error really varies along some axis, so a swapped series would be seen
    assert any(len(set(series(ax, "mean |err| (LSB)")[1])) > 1 for ax in axes.values())


def test_sqnr_panels_plot_each_axis_sqnr(plotted):
    figures, data, grid = plotted
    slices = sweep.axis_slices(CFG, grid, data["points"])
    for name, ax in panels(figures["sqnr_vs_width.png"]).items():
        _, sqnr = series(ax, "SQNR (dB)")
        np.testing.assert_array_equal(sqnr, [r["sqnr_db"] for _, r in slices[name]])
        _, ref = series(ax, "torch profile")
        assert set(ref) == {data["summary"]["baseline"]["torch_profile_sqnr_db"]}


def test_cost_plot_scatters_every_point_and_the_front(plotted):
    figures, data, _ = plotted
    (ax,) = figures["cost_vs_error.png"].axes
    scatters = {c.get_label(): c for c in ax.collections if isinstance(c, PathCollection)}
    got = sorted(map(tuple, np.asarray(scatters["points"].get_offsets(), float)))
    want = sorted((float(r[sweep.COST_KEY]), float(r[sweep.ERROR_KEY])) for r in data["points"])
    assert got == want
    front = sorted(map(tuple, np.asarray(scatters["Pareto front"].get_offsets(), float)))
    assert front == sorted((float(r[sweep.COST_KEY]), float(r[sweep.ERROR_KEY]))
                           for r in data["points"] if r["pareto"])
