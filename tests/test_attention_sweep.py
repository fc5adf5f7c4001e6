"""ECA, SRM and the 3x1 excite in `tse sweep`, ECA and SRM in `tse buffer` (issue 18): the
sweep's points of the other blocks measured against their torch profile, their grids refusing
axes they do not have, and the buffer planner's SRM sum-of-squares storage against the formula worked by hand."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tse.cli import main
from tse.quant import sweep, sweep_attention
from tse.ref_model import attention_numerics as an
from tse.ref_model import attention_vectors
from tse.ref_model.config import TSEConfig
from tse.ref_model.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
FRAMES = 4


def small(block: str, engine: str) -> TSEConfig:
    """block: eca, srm, or excite3x1 (SE with the 3x1 excite, on 2-row strips: 7 of them,
    so every strip's gates wait for the next strip's pooled row)."""
    if block == "excite3x1":
        return TSEConfig(channels=16, height=14, width=14, tile="2xW", lanes=8, hidden=4,
                         excite_kernel="3x1", engine=engine)
    return TSEConfig(channels=16, height=14, width=14, tile="7xW", lanes=8, block=block,
                     engine=engine)


def sweep_rows(cfg: TSEConfig, out) -> dict:
    """label -> row of a quick sweep: the base (default widths) and a narrow gate."""
    grid = sweep.parse_grid({"axes": {"gate_bits": [2, 8]}}, "test grid", sweep.grid_kind(cfg))
    sweep.run_sweep(cfg, grid, out, frames=FRAMES, workers=1, progress=False, plots=False)
    rows = json.loads((Path(out) / "sweep.json").read_text())["points"]
    return {r["label"]: r for r in rows}


def output_mismatches(cfg: TSEConfig, ctx, gate_bits: int) -> int:
    """Mismatching output codes of the hw profile at gate_bits against the torch profile,
    counted here from the two profiles' own functions (not the sweep's row)."""
    x = ctx.x                                           # NHWC codes the sweep ran on
    hw = attention_vectors.build(cfg.replace(hw=cfg.hw.replace(gate_bits=gate_bits)),
                                 ctx.params, x)["output"]
    x_nchw = np.ascontiguousarray(np.moveaxis(x, -1, 1))
    tile = (cfg.tile_rows, cfg.tile_cols)
    if cfg.excite_kernel == "3x1":
        ref = an.excite3x1_stages(x_nchw, tile, ctx.params)["output"]
    elif cfg.block == "eca":
        ref = an.eca_stages(x_nchw, tile, an.prepare_eca(ctx.params))["output"]
    else:
        ref = an.srm_stages(x_nchw, tile, an.prepare_srm(ctx.params))["output"]
    return int(np.count_nonzero(hw != np.moveaxis(ref, 1, -1)))


@pytest.mark.parametrize("block,engine", [("eca", "qnnpack"), ("srm", "fbgemm"),
                                          ("excite3x1", "fbgemm")])
def test_default_widths_match_the_torch_profile_and_a_narrow_gate_does_not(
        block, engine, tmp_path):
    # docs/numerics.md: ECA on qnnpack and SRM on fbgemm, default widths, 0 mismatches
    cfg = small(block, engine)
    rows = sweep_rows(cfg, tmp_path / "o")
    base, narrow = rows["base"], rows["gate_bits=2"]
    assert base["gate_bits"] == 8 and narrow["gate_bits"] == 2
    assert base["mismatches"] == 0 and base["max_abs_err_lsb"] == 0
    assert base["exact_match"] == 1.0
    assert narrow["mismatches"] > 0 and narrow["max_abs_err_lsb"] > 0
    ctx = sweep_attention.build_context(cfg, FRAMES)
    assert output_mismatches(cfg, ctx, 8) == 0
    assert narrow["mismatches"] == output_mismatches(cfg, ctx, 2)
    stages = ("pooled", "excite", "gate") + {"srm": ("std",), "excite3x1": ("hidden",)}.get(
        block, ())
    assert all(f"{s}_mismatch_rate" in narrow for s in stages)
    assert narrow["gate_mismatch_rate"] > 0 and narrow["pooled_mismatch_rate"] == 0
    assert narrow["cost_bits"] < base["cost_bits"]          # a narrower gate costs less


def test_grids_refuse_an_axis_the_block_does_not_have(tmp_path):
    for block, axis in (("eca", "fc1_multiplier_bits"), ("eca", "bias_frac_bits"),
                        ("srm", "fc1_acc_bits"), ("eca", "sum_bits")):
        with pytest.raises(ConfigError) as e:
            sweep.parse_grid({"axes": {axis: [8]}}, "grid 'g.toml'", block)
        msg = str(e.value)
        assert "\n" not in msg and f"axis {axis!r}" in msg and f"block = {block!r}" in msg
        assert "gate_bits" in msg                           # the allowed axes are named
    for block in ("eca", "srm"):                            # the shipped grids parse
        assert sweep.load_grid(None, block).block == block
    with pytest.raises(ConfigError, match="block = 'se'"):  # an SE grid for an ECA sweep
        sweep.run_sweep(small("eca", "qnnpack"), sweep.load_grid(), tmp_path / "o",
                        workers=1, progress=False)


def test_sweep_cli_takes_eca_and_refuses_a_foreign_axis_in_one_line(tmp_path):
    (tmp_path / "g.toml").write_text("[axes]\nfc1_rounding = ['half_up']\n")
    r = subprocess.run([sys.executable, "-m", "tse", "sweep", "--block", "eca",
                        "--grid", str(tmp_path / "g.toml"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1
    assert "'fc1_rounding'" in r.stderr and "block = 'eca'" in r.stderr


def test_buffer_srm_json_has_the_square_sum_storage(tmp_path, capsys):
    path = tmp_path / "layers.csv"
    path.write_text("name,C,H,W,hidden\nl1,16,10,39,4\n")
    assert main(["buffer", "--layers", str(path), "--tile", "5x13", "--block", "srm",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    row = out["layers"][0]
    # by hand: a 5x13 tile holds 65 elements; 255^2 x 65 = 4 226 625, and
    # 2^22 = 4 194 304 <= 4 226 625 < 2^23: 23 bits per tile column and channel (64
    # elements would need 22); 39 / 13 = 3 tile columns x 16 channels x 23 bits = 1104 bits
    assert out["block"] == "srm" and row["block"] == "srm"
    assert row["square_sum_bits"] == 23
    assert row["square_sum_storage_bits"] == 1104 == out["square_sum_storage_bits"]
    assert row["excite_latency_basis"] == "srm" and row["excite_multipliers"] == 2
    # SRM's own schedule: lead-in 43, 3 tiles x 16 channels, drain 18
    assert row["excite_latency_cycles"] == 43 + 3 * 16 + 18
    assert main(["buffer", "--layers", str(path), "--tile", "5x13", "--json"]) == 0
    se = json.loads(capsys.readouterr().out)
    assert se["square_sum_storage_bits"] == 0 and se["layers"][0]["square_sum_bits"] == 0


def test_buffer_table_shows_srm_columns_and_eca_its_taps(tmp_path, capsys):
    path = tmp_path / "layers.csv"
    path.write_text("name,C,H,W,hidden\nl1,16,14,14,4\n")
    assert main(["buffer", "--layers", str(path), "--tile", "7x7", "--block", "srm"]) == 0
    text = capsys.readouterr().out
    assert "S2 bits" in text and "704" in text and "SRM's schedule" in text
    assert main(["buffer", "--layers", str(path), "--block", "eca", "--json"]) == 0
    row = json.loads(capsys.readouterr().out)["layers"][0]
    # C = 16: |log2(16) / 2 + 1 / 2| = 2.5, int 2, even: rounded up to 3
    assert row["eca_taps"] == 3 == row["excite_multipliers"]
    assert row["excite_latency_basis"] == "eca" and row["tse_excite_macs"] == 2 * 3 * 16


def test_buffer_bad_block_is_one_error_line(tmp_path, capsys):
    assert main(["buffer", "--network", "regnety-800mf", "--block", "cbam"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'cbam'" in err and "se, eca, srm" in err


def test_excite3x1_sweep_baseline_is_pytorch_and_cost_is_its_unit_plans(tmp_path):
    """The 3x1 excite's torch profile equals quantized PyTorch on every output code, and a
    point's cost follows its RTL unit plan: a narrower gate shrinks the gate memory (banks x
    tile columns x C x gate bits) and the sigmoid ROM (256 words) by what the bits say."""
    cfg = small("excite3x1", "fbgemm")
    ctx = sweep_attention.build_context(cfg, FRAMES)
    assert ctx.baseline["torch_profile_vs_pytorch_mismatches"] == 0
    assert ctx.baseline["block"] == "excite3x1"
    rows = sweep_rows(cfg, tmp_path / "o")
    base, narrow = rows["base"], rows["gate_bits=2"]
    banks = base["gate_memory_bits"] // (cfg.tiles_x * 16 * 8)
    assert base["gate_memory_bits"] - narrow["gate_memory_bits"] == banks * 16 * (8 - 2)
    assert base["sigmoid_rom_bits"] - narrow["sigmoid_rom_bits"] == 256 * (8 - 2)
    assert base["strip_buffer_bits"] == narrow["strip_buffer_bits"] > 0


def test_excite3x1_grid_refuses_se_only_axes_and_cli_runs(tmp_path):
    for axis in ("fc1_acc_bits", "sum_bits", "acc_bits"):     # SE axes the 3x1 lacks
        with pytest.raises(ConfigError) as e:
            sweep.parse_grid({"axes": {axis: [8]}}, "grid 'g.toml'", "excite3x1")
        assert "\n" not in str(e.value) and f"axis {axis!r}" in str(e.value)
    assert sweep.load_grid(None, "excite3x1").block == "excite3x1"
    (tmp_path / "g.toml").write_text("[axes]\ngate_bits = [4]\n")
    r = subprocess.run([sys.executable, "-m", "tse", "sweep", "--excite-kernel", "3x1",
                        "--channels", "8", "--height", "6", "--width", "4", "--tile", "2xW",
                        "--hidden", "2", "--lanes", "4", "--frames", "2", "--no-plots",
                        "--grid", str(tmp_path / "g.toml"), "--out", str(tmp_path / "o"),
                        "--json"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["config"]["excite_kernel"] == "3x1"
    assert summary["baseline"]["torch_profile_vs_pytorch_mismatches"] == 0
