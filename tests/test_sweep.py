"""Width sweeps (tse.quant.sweep, tse sweep) and the hw-profile additions they evaluate:
gate_bits, approximate (narrow) reciprocals, grids and their errors, the widest point against
the torch profile, monotone error where narrowing provably cannot help, resume, local
processes and a local Dask cluster."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tse.quant import reference, sweep, sweep_run
from tse.ref_model import kernels, numerics, numpy_model
from tse.ref_model.config import DEFAULT, TSEConfig
from tse.ref_model.errors import ConfigError
from tse.ref_model.hw_profile import DEFAULT_HW, HwProfile, reciprocal

ROOT = Path(__file__).resolve().parents[1]
SMALL = TSEConfig(channels=16, height=8, width=8, tile="2xW", reduction=4, lanes=8)


def tse(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "tse", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def small_ctx():
    return sweep.build_context(SMALL, frames=4)


@pytest.fixture(scope="module")
def default_ctx():
    return sweep.build_context(DEFAULT, frames=4)


# =========================================================================================
# hw profile: gate_bits and narrow reciprocals
# =========================================================================================

def test_new_fields_default_to_todays_profile():
    assert DEFAULT_HW.gate_bits == 8 and DEFAULT_HW.exact_mean is True
    lut = np.arange(256, dtype=np.uint8)
    assert np.array_equal(numerics.gate_table(lut, 8), lut)


@pytest.mark.parametrize("change, field", [
    ({"gate_bits": 0}, "hw.gate_bits"), ({"gate_bits": 9}, "hw.gate_bits"),
    ({"exact_mean": "no"}, "hw.exact_mean"),
    ({"reciprocal_bits": 12}, "hw.reciprocal_bits"),                  # still rejected...
])
def test_new_fields_rejected_with_a_clear_message(change, field):
    with pytest.raises(ConfigError) as e:
        TSEConfig(hw={**DEFAULT_HW.to_dict(), **change})
    assert str(e.value).startswith(field) and "allowed" in str(e.value)


def test_narrow_reciprocal_allowed_as_approximate_mean():
    for rounding in ("f32", "half_even", "half_up"):                   # ...unless approximate
        cfg = TSEConfig(hw=DEFAULT_HW.replace(reciprocal_bits=6, mean_rounding=rounding,
                                              exact_mean=False))
        assert cfg.hw.reciprocal_bits == 6
    for n in (3, 7, 49, 196):                                          # f32(1/n), narrowed
        r, s = reciprocal(n, 10, f32=True)
        assert 2 ** 9 <= r <= 2 ** 10 and abs(r / 2 ** s * n - 1) < 2 ** -9
        assert reciprocal(n, 26, f32=True) == (reciprocal(n, 24, f32=True)[0] << 2,
                                               reciprocal(n, 24, f32=True)[1] + 2)


@pytest.mark.parametrize("widths", [
    dict(gate_bits=3), dict(gate_bits=7, mul_rounding="half_up"),
    dict(reciprocal_bits=9, exact_mean=False),
    dict(reciprocal_bits=7, exact_mean=False, mean_rounding="half_even"),
    dict(reciprocal_bits=5, exact_mean=False, mean_rounding="half_up", gate_bits=5),
])
def test_implementations_agree_on_new_widths(widths):
    """The per-element kernels, the fast path and the numpy model compute gate_bits and
    narrow reciprocals alike (an edge tile makes four reciprocals)."""
    cfg = TSEConfig(channels=16, height=9, width=7, tile="4x3", reduction=4, lanes=8)
    cfg = cfg.replace(hw=cfg.hw.replace(**widths))
    ref = reference.build(cfg, frames=2)
    ip = numerics.derive(ref.params, cfg)
    x = kernels.nhwc(ref.codes["input"])
    slow = kernels.run(cfg, ip, x, "hw", fast=False)
    fast = kernels.run(cfg, ip, x, "hw")
    npm = numpy_model.run(cfg, ip, x)
    for stage in numerics.STAGES:
        assert np.array_equal(fast[stage], slow[stage]), stage
        assert np.array_equal(npm[stage], slow[stage]), stage
    g = slow["gate"].astype(int)
    drop = 8 - cfg.hw.gate_bits
    assert np.all(g % (1 << drop) == 0) and g.max() <= 256 - (1 << drop)
    torch_out = kernels.run(cfg, ip, x, "torch")
    assert np.array_equal(torch_out["output"], ref.codes["output"].transpose(0, 2, 3, 1))


# =========================================================================================
# Grids
# =========================================================================================

def test_default_grid_parses_and_expands():
    grid = sweep.load_grid()
    assert grid.mode == "axes" and "gate_bits" in grid.axes and grid.frames
    points = sweep.make_points(DEFAULT, grid, 8)
    labels = [p.label for p in points]
    assert labels[:2] == ["base", "widest"] and len(set(p.id for p in points)) == len(points)
    by = {p.label: p.hw for p in points}
    assert by["base"] == DEFAULT.hw
    assert by["sum_bits=8"].saturate and not by["sum_bits=20"].saturate
    assert not by["reciprocal_bits=8"].exact_mean and by["reciprocal_bits=24"].exact_mean
    assert by["widest"].fc1_multiplier_bits == 31 and by["widest"].gate_bits == 8


@pytest.mark.parametrize("text, match", [
    ("[axes]\nsum_bitz = [8, 16]", r"unknown axis 'sum_bitz' \(did you mean 'sum_bits'\?\)"),
    ("[axes]\nsum_bits = []", r"axis 'sum_bits' has no values"),
    ("[axes]\ngate_bits = [0, 4]", r"axis 'gate_bits' width 0 is not allowed; allowed: "
                                   r"integers 1\.\.8"),
    ("[axes]\nsum_bits = [0]", r"axis 'sum_bits' width 0 is not allowed"),
    ("[axes]\nreciprocal_bits = [31]", r"axis 'reciprocal_bits' value 31 is not allowed"),
    ("[axes]\nsum_bits = ['16']", r"axis 'sum_bits' value '16' is not allowed"),
    ("[axes]\nsum_bits = 16", r"axis 'sum_bits' = 16 is not allowed; allowed: a list"),
    ("[axes]\nmul_rounding = ['nearest']", r"axis 'mul_rounding' value 'nearest'"),
    ("[axes]\nsum_bits = [8, 8]", r"repeats 8"),
    ("[axes]\nmultiplier_bits = [8]\nfc1_multiplier_bits = [9]", r"both set hw\."),
    ("[axes]\nfc1_acc_bits = [50]\nbias_frac_bits = [16]\n[sweep]\nmode = 'product'",
     r"fc1_acc_bits"),
    ("[sweep]\nmode = 'random'\n[axes]\nsum_bits = [8]", r"sweep\.mode 'random'"),
    ("[sweep]\nframes = 0\n[axes]\nsum_bits = [8]", r"sweep\.frames 0"),
    ("[swep]\n[axes]\nsum_bits = [8]", r"unknown table 'swep'"),
    ("[axes]", r"no axes"),
    ("[axes\n", r"not valid TOML"),
])
def test_bad_grids_get_clear_errors(tmp_path, text, match):
    path = tmp_path / "g.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        sweep.load_grid(path)
    assert "\n" not in str(e.value) and "g.toml" in str(e.value)


def test_bad_grid_on_the_command_line_is_one_error_line(tmp_path):
    (tmp_path / "g.toml").write_text("[axes]\nwidth = [8]\n")
    r = tse("sweep", "--grid", str(tmp_path / "g.toml"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.startswith("tse: error: grid") and "unknown axis 'width'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = tse("sweep", "--grid", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "does not exist" in r.stderr


def test_product_grid_and_group_axes():
    grid = sweep.parse_grid({"sweep": {"mode": "product"},
                             "axes": {"multiplier_bits": [8, 12], "gate_bits": [6, 8]},
                             "point": [{"name": "mine", "sum_bits": 20}]})
    pts = sweep.make_points(SMALL, grid, 4)
    hws = {p.label: p.hw for p in pts}
    assert {"base", "widest", "mine", "multiplier_bits=8,gate_bits=6"} <= set(hws)
    hw = hws["multiplier_bits=8,gate_bits=6"]
    assert (hw.fc1_multiplier_bits, hw.fc2_multiplier_bits, hw.mul_multiplier_bits,
            hw.gate_bits) == (8, 8, 8, 6)
    assert len(pts) == 2 + 4 + 1 - 1           # widest (12, 8) is not the base: one repeat
    with pytest.raises(ConfigError, match="product of the axes"):
        sweep.parse_grid({"sweep": {"mode": "product"},
                          "axes": {n: list(range(2, 40)) for n in
                                   ("sum_bits", "fc1_acc_bits", "fc2_acc_bits")}})


# =========================================================================================
# Accuracy: the widest point, monotone error, cost, Pareto
# =========================================================================================

def test_widest_point_matches_the_torch_profile(default_ctx):
    """The default configuration's widest grid point (and the base) reproduce the torch
    profile, and the torch profile reproduces quantized PyTorch, code for code."""
    assert default_ctx.baseline["torch_profile_vs_pytorch_mismatches"] == 0
    pts = {p.label: p for p in sweep.make_points(DEFAULT, sweep.load_grid(), 4)}
    for label in ("widest", "base"):
        row = sweep.evaluate(default_ctx, pts[label])
        assert row["exact_match"] == 1.0 and row["max_abs_err_lsb"] == 0, label
        assert all(row[f"{s}_mismatch_rate"] == 0 for s in sweep.STAGE_NAMES)
        assert row["sqnr_db"] == pytest.approx(default_ctx.baseline["torch_profile_sqnr_db"])
    assert pts["widest"].hw.reciprocal_bits == 30 and pts["widest"].hw.mul_multiplier_bits == 31


def test_narrowing_gate_bits_never_lowers_the_gate_error(small_ctx):
    """Provable: gate_table rounds the 8-bit code to the nearest point of a grid of step
    2**(8 - gate_bits) (clamped to its top), and the grids are nested, so each gate's
    distance from the torch profile's gate cannot shrink as gate_bits narrows."""
    cfg, x = small_ctx.cfg, small_ctx.x
    want = small_ctx.torch_stages["gate"].astype(int)
    prev = None
    for bits in range(8, 0, -1):
        c = cfg.replace(hw=cfg.hw.replace(gate_bits=bits))
        gate = kernels.run(c, numerics.derive(small_ctx.params, c), x, "hw")["gate"]
        err = np.abs(gate.astype(int) - want)
        if prev is not None:
            assert np.all(err >= prev), bits
        prev = err
    assert prev.max() > 0
    lut = np.arange(256, dtype=np.uint8)
    errs = [np.abs(numerics.gate_table(lut, b).astype(int) - lut.astype(int))
            for b in range(8, 0, -1)]
    assert all(np.all(a <= b) for a, b in zip(errs, errs[1:]))


def test_narrowing_a_saturating_tile_sum_never_lowers_the_mean_error(small_ctx):
    """Provable when the input zero point is 0 (post-ReLU activations): every x - zx >= 0,
    a saturating sum_bits register ends at min(S, 2**(bits-1) - 1), which falls as the
    register narrows, and the mean is monotone in the sum: each pooled code's error can
    only grow."""
    assert small_ctx.params.zero_points["input"] == 0
    cfg, x = small_ctx.cfg, small_ctx.x
    want = small_ctx.torch_stages["pooled"].astype(int)
    prev = None
    for bits in range(16, 5, -1):
        c = cfg.replace(hw=sweep.legalize(cfg, cfg.hw.replace(sum_bits=bits)))
        out = kernels.run(c, numerics.derive(small_ctx.params, c), x, "hw")
        err = np.abs(out["pooled"].astype(int) - want)
        if prev is not None:
            assert np.all(err >= prev), bits
        prev = err
    assert prev.max() > 0 and out["saturated"]["tile_sums"] > 0


def test_hardware_cost_is_the_rtls(tmp_path):
    """The sweep prices the unit `tse rtl` builds (tse.ref_model.unit_plan): the same memory bits
    and multipliers, at the base and at a narrowed, saturating point; three gate banks and
    P mean units; narrowing a width the RTL stores per field lowers the cost."""
    params = reference.build(SMALL, frames=4).params
    narrow = SMALL.replace(hw=sweep.legalize(SMALL, SMALL.hw.replace(
        gate_bits=4, sum_bits=10, reciprocal_bits=12, saturate=True, exact_mean=False)))
    for k, cfg in enumerate((SMALL, narrow)):
        ip = numerics.derive(params, cfg)
        cost = sweep.hardware_cost(cfg, ip)
        (tmp_path / f"c{k}.toml").write_text(cfg.to_toml())
        ip.save(tmp_path / f"ip{k}")
        r = tse("rtl", "--config", str(tmp_path / f"c{k}.toml"), "--params",
                str(tmp_path / f"ip{k}"), "--out", str(tmp_path / f"rtl{k}"), "--json")
        assert r.returncode == 0, r.stderr[-2000:]
        rep = json.loads(r.stdout)
        assert cost["storage_bits"] == rep["total_memory_bits"]
        assert cost["multipliers"] == rep["multiplier_count"]
        assert cost["multiplier_cells"] == sum(m["count"] * m["a_bits"] * m["b_bits"]
                                               for m in rep["multipliers"])
        assert cost[sweep.COST_KEY] == cost["storage_bits"] + cost["multiplier_cells"]
        g = cfg.hw.gate_bits
        assert cost["gate_memory_bits"] == 3 * SMALL.tiles_x * SMALL.channels * g
        assert cost["sigmoid_rom_bits"] == 256 * g
        q = min(SMALL.excite_multipliers, max(SMALL.channels, SMALL.hidden))
        assert cost["multipliers"] == q + 3 * SMALL.lanes + 1   # MACs, P mean, 1 requant, 2P
    base = sweep.hardware_cost(SMALL, params)
    for change in ({"gate_bits": 6}, {"reciprocal_bits": 20}, {"sum_bits": 24}):
        c = SMALL.replace(hw=sweep.legalize(SMALL, SMALL.hw.replace(**change, exact_mean=False)))
        cost = sweep.hardware_cost(c, params)
        assert cost[sweep.COST_KEY] < base[sweep.COST_KEY], change
        assert cost["fixed_storage_bits"] == base["fixed_storage_bits"]


def test_yosys_cells_of_a_point_come_from_synthesizing_the_rtl():
    """setup.sh installs Yosys: a small unit synthesizes for iCE40 into a positive number of
    cells, and a narrower gate gives a different (smaller) netlist."""
    import shutil
    from tse.quant import reference
    from tse.ref_model.config import TSEConfig

    assert shutil.which("yosys"), "yosys is installed by setup.sh"
    cfg = TSEConfig(channels=4, height=3, width=4, tile="2xW", reduction=2, lanes=4,
                    excite_multipliers=2)
    params = reference.build(cfg).params
    # the two syntheses (~80 s each, mostly ABC) side by side: one Yosys process per core
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:
        wide, narrow = (r["yosys_cells"] for r in pool.map(
            lambda c: sweep.rtl_cost(c, params),
            [cfg, cfg.replace(hw=cfg.hw.replace(gate_bits=2))]))
    assert wide > 0 and narrow > 0 and narrow < wide


def test_pareto_front():
    rows = [{"id": k, sweep.COST_KEY: c, sweep.ERROR_KEY: e}
            for k, (c, e) in enumerate([(10, 5.0), (20, 1.0), (15, 6.0), (30, 0.0), (20, 0.5),
                                        (40, 0.0), (10, 5.0)])]
    assert sweep.pareto(rows) == [0, 4, 3]


# =========================================================================================
# Running: outputs, resume, local processes, Dask
# =========================================================================================

GRID = {"axes": {"gate_bits": [4, 6, 8], "sum_bits": [8, 10, 32], "fc1_multiplier_bits": [6, 31],
                 "mul_rounding": ["half_even", "half_up"]}}


def test_sweep_outputs_resume_and_slices(tmp_path, small_ctx, monkeypatch):
    grid = sweep.parse_grid(GRID)
    out = tmp_path / "s"
    first = sweep.run_sweep(SMALL, grid, out, frames=4, workers=1, progress=False,
                            context=small_ctx)
    for name in ("sweep.csv", "sweep.json", "points.jsonl", "error_vs_width.png",
                 "sqnr_vs_width.png", "cost_vs_error.png"):
        assert (out / name).stat().st_size > 0, name
    rows = list(csv.DictReader(open(out / "sweep.csv")))
    assert len(rows) == first["points"] and {"base", "widest"} <= {r["label"] for r in rows}
    data = json.loads((out / "sweep.json").read_text())
    assert data["summary"]["pareto"] and len(data["points"]) == len(rows)
    assert any(r["pareto"] for r in data["points"])
    slices = sweep.axis_slices(SMALL, grid, data["points"])
    gate = [r["gate_mismatch_rate"] for _, r in slices["gate_bits"]]
    assert [v for v, _ in slices["gate_bits"]] == [4, 6, 8] and gate == sorted(gate)[::-1]
    pooled = [r["pooled_mismatch_rate"] for _, r in slices["sum_bits"]]
    assert pooled == sorted(pooled)[::-1] and pooled[0] > 0
    assert slices["sum_bits"][0][1]["saturated_tile_sums"] > 0

    # interrupted: three points lost and a torn last line; a rerun evaluates only those
    lines = (out / "points.jsonl").read_text().splitlines()
    (out / "points.jsonl").write_text("\n".join(lines[:-3]) + "\n" + lines[-3][:40])
    calls = []
    real = sweep.evaluate
    monkeypatch.setattr(sweep, "evaluate", lambda ctx, p: calls.append(p.label) or real(ctx, p))
    again = sweep.run_sweep(SMALL, grid, out, frames=4, workers=1, progress=False,
                            context=small_ctx, plots=False)
    assert len(calls) == 3 and again["resumed"] == again["points"] - 3
    assert again["points"] == first["points"]
    calls.clear()
    sweep.run_sweep(SMALL, grid, out, frames=4, workers=1, progress=False, context=small_ctx,
                    plots=False)
    assert calls == []


def _metrics(rows):
    keep = ("exact_match", "max_abs_err_lsb", "mean_abs_err_lsb", "sqnr_db",
            "saturated_tile_sums", sweep.COST_KEY)
    return {r["id"]: tuple(r[k] for k in keep) for r in rows}


def test_local_processes_and_dask_give_the_same_rows(tmp_path, small_ctx):
    grid = sweep.parse_grid({"axes": {"gate_bits": [5, 8], "sum_bits": [9, 32]}})
    serial = sweep.run_sweep(SMALL, grid, tmp_path / "a", frames=4, workers=1,
                             progress=False, plots=False, context=small_ctx)
    rows_a = json.loads((tmp_path / "a" / "sweep.json").read_text())["points"]
    sweep.run_sweep(SMALL, grid, tmp_path / "b", frames=4, workers=2, progress=False,
                    plots=False, context=small_ctx)
    rows_b = json.loads((tmp_path / "b" / "sweep.json").read_text())["points"]
    assert _metrics(rows_a) == _metrics(rows_b)

    import distributed   # installed by setup.sh (dask[distributed])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster:
        sweep.run_sweep(SMALL, grid, tmp_path / "c", frames=4, scheduler=cluster.scheduler_address,
                        progress=False, plots=False, context=small_ctx)
    rows_c = json.loads((tmp_path / "c" / "sweep.json").read_text())["points"]
    assert _metrics(rows_a) == _metrics(rows_c) and serial["points"] == len(rows_c)


def test_unreachable_scheduler_is_a_clear_error(small_ctx, monkeypatch):
    monkeypatch.setattr(sweep_run, "CONNECT_TIMEOUT", "1s")
    from tse.ref_model.errors import InputError
    grid = sweep.parse_grid({"axes": {"gate_bits": [5]}})
    with pytest.raises(InputError, match="scheduler: cannot connect"):
        sweep_run.run_dask(small_ctx, sweep.make_points(SMALL, grid, 4), "tcp://127.0.0.1:1", 1,
                        lambda row: None)


def test_default_sweep_of_the_default_configuration(tmp_path):
    """`tse sweep --quick` with the default grid: plots, CSV and the summary table."""
    r = tse("sweep", "--quick", "--out", str(tmp_path), "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert "points" in r.stderr                                   # the progress bar
    for name in ("sweep.csv", "sweep.json", "error_vs_width.png", "sqnr_vs_width.png",
                 "cost_vs_error.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "widest    exact match 1.000000" in r.stdout and "Pareto front" in r.stdout
    s = json.loads((tmp_path / "sweep.json").read_text())["summary"]
    assert s["narrowest"]["exact_match"] == 1.0
    assert s["narrowest"][sweep.COST_KEY] < s["base"][sweep.COST_KEY]
    r = tse("sweep", "--quick", "--out", str(tmp_path), "--json", "--workers", "1")
    assert r.returncode == 0 and r.stderr == ""
    assert json.loads(r.stdout)["resumed"] == s["points"]
