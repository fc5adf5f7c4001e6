"""The unit as a drop-in IP (issue 19): named units that elaborate together, AXI ports only,
and the run scripts, filelist and FuseSoC core `tse vectors` writes beside the Verilog."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tse.ref_model.config import TSEConfig
from tse.rtl.export import check_name, verilog_text
from tse.ref_model.errors import InputError

TINY = dict(height=5, width=7, reduction=2)
CFG_A = TSEConfig(**TINY, channels=8, tile="3x3", lanes=2, excite_multipliers=8)
CFG_B = TSEConfig(**TINY, channels=4, tile="2xW", lanes=1, excite_multipliers=2)


@pytest.fixture(scope="module")
def units(tmp_path_factory):
    """Two differently configured units' vectors directories (se_a, se_b), no probes."""
    from tse.sim import cosim
    return {name: cosim.prepare(cfg, 2, probes=False, name=name)
            for name, cfg in (("se_a", CFG_A), ("se_b", CFG_B))}


def test_name_must_be_a_verilog_identifier():
    assert check_name("my_se_1") == "my_se_1"
    for bad in ("9x", "a-b", "module", "", "x" * 65):
        with pytest.raises(InputError, match="name: .* is not allowed; allowed: a Verilog"):
            check_name(bad)


def test_top_has_axi_ports_and_probes_only_when_asked():
    from rtl_helpers import small_case
    cfg, ip, _ = small_case(CFG_A)
    plain, probed = verilog_text(cfg, ip, "se_x"), verilog_text(cfg, ip, "se_x", probes=True)
    head = plain[plain.index("module se_x("):].split(";")[0]
    assert {"aclk", "aresetn", "s_axis_tdata", "m_axis_tready", "error"} <= set(
        head.replace(",", " ").replace("(", " ").replace(")", " ").split())
    assert "probe_" not in head and " clk" not in head and " rst" not in head
    assert "probe_gate_valid" in probed[probed.index("module se_x("):].split(";")[0]
    assert "module \\se_x.excite_mac" in plain and "tse_unit" not in plain


def two_units_top(a: Path, b: Path) -> str:
    """A top holding both units (no ports of its own); each loads its own ROMs."""
    from tse.sim.harness import time_zero_kick
    kick = "".join(time_zero_kick((d / f"{n}.v").read_text(), f"u_{n}", n)
                   for d, n in ((a, "se_a"), (b, "se_b")))
    inst = "".join(f"""
    wire [15:0] d_{n}; wire v_{n}, l_{n}, r_{n}, e_{n};
    {n} u_{n} (.aclk(clk), .aresetn(rstn), .s_axis_tdata(16'd0), .s_axis_tvalid(1'b0),
        .s_axis_tready(r_{n}), .s_axis_tlast(1'b0), .m_axis_tdata(d_{n}), .m_axis_tvalid(v_{n}),
        .m_axis_tready(1'b1), .m_axis_tlast(l_{n}), .error(e_{n}));""" for n in ("se_a", "se_b"))
    return f"""module two_units;
    reg clk = 0, rstn = 0;
    always #5 clk = ~clk;{inst}
    initial begin
        repeat (3) @(posedge clk);
        rstn = 1;
        repeat (20) @(posedge clk);
        if (r_se_a !== 1'b1 || r_se_b !== 1'b1 || e_se_a || e_se_b) $fatal(1, "two_units: FAIL");
        $display("two_units: PASS");
        $finish;
    end
{kick}endmodule
"""


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_two_differently_configured_units_elaborate_together(units, sim, tmp_path):
    from tse.sim import runner
    a, b = units["se_a"], units["se_b"]
    top = tmp_path / "two_units.v"
    top.write_text(two_units_top(a, b))
    srcs = [str(top), str(a / "se_a.v"), str(b / "se_b.v")]
    plus = [f"+se_a_rom_dir={a / 'hex'}", f"+se_b_rom_dir={b / 'hex'}"]
    if sim == "icarus":
        build = subprocess.run(["iverilog", "-g2012", "-o", str(tmp_path / "t.vvp"), *srcs],
                               capture_output=True, text=True)
        assert build.returncode == 0, build.stderr
        run = subprocess.run(["vvp", "-n", str(tmp_path / "t.vvp"), *plus],
                             capture_output=True, text=True, timeout=120)
    else:
        runner.prepare_environment("verilator")
        build = subprocess.run(["verilator", "--binary", "-Wno-fatal", "-CFLAGS", "-std=c++20",
                                "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include", "--Mdir",
                                str(tmp_path / "obj"), "--top-module", "two_units", *srcs],
                               capture_output=True, text=True, timeout=600)
        assert build.returncode == 0, (build.stdout + build.stderr)[-3000:]
        run = subprocess.run([str(tmp_path / "obj" / "Vtwo_units"), *plus],
                             capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "two_units: PASS" in run.stdout, run.stdout + run.stderr
    # each unit read its own images (a wrong directory is a $fatal naming the path)
    bad = [p.replace("se_b_rom_dir=", "se_b_rom_dir=/nonexistent/") for p in plus]
    prog = ["vvp", "-n", str(tmp_path / "t.vvp")] if sim == "icarus" else \
        [str(tmp_path / "obj" / "Vtwo_units")]
    miss = subprocess.run(prog + bad, capture_output=True, text=True, timeout=120)
    assert miss.returncode != 0 and "se_b: cannot open ROM image" in miss.stdout + miss.stderr


def altered_copy(src: Path, dst: Path) -> Path:
    """A copy of a vectors directory with one expected output word changed."""
    shutil.copytree(src, dst)
    out = dst / "hex" / "output.hex"
    lines = out.read_text().splitlines()
    w = lines[3]
    lines[3] = ("1" if w[0] != "1" else "2") + w[1:]
    out.write_text("\n".join(lines) + "\n")
    return dst


@pytest.mark.parametrize("script", ["run_icarus.sh", "run_verilator.sh"])
def test_run_scripts_pass_from_a_plain_shell_and_fail_on_one_altered_value(units, script,
                                                                          tmp_path):
    vec = units["se_a"]
    assert {"files.f", "se_a.core", "se_a.v", "tb_tse_unit.v", script} <= \
        {p.name for p in vec.iterdir()}
    ok = subprocess.run(["env", "-i", "bash", str(vec / script), "+pause=20"],
                        capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert "tb_tse_unit: PASS" in ok.stdout and "scenarios=4" in ok.stdout
    bad = altered_copy(vec, tmp_path / "altered")
    fail = subprocess.run(["env", "-i", "bash", str(bad / script)], capture_output=True,
                          text=True, timeout=600)
    assert fail.returncode != 0, fail.stdout[-2000:]
    assert "first mismatch in stream at frame 0" in fail.stdout


def test_fusesoc_runs_the_core_on_icarus(units, tmp_path):
    fusesoc = Path(os.sys.executable).parent / "fusesoc"
    assert fusesoc.is_file(), "fusesoc is installed by setup.sh"
    vec = shutil.copytree(units["se_a"], tmp_path / "core")
    run = subprocess.run([str(fusesoc), "--cores-root", str(vec), "run", "--target=sim_icarus",
                          "--build-root", str(tmp_path / "build"), "tse:se:se_a"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0 and "tb_tse_unit: PASS" in run.stdout, \
        run.stdout[-3000:] + run.stderr[-3000:]


def test_tse_cosim_checks_a_named_unit_without_probes(units):
    """`tse cosim --vectors` on a --name'd, probe-less directory: its NAME.v is found from the
    manifest (not a fixed tse_unit.v), and every scenario passes under cocotb."""
    import json
    import sys
    r = subprocess.run([sys.executable, "-m", "tse", "cosim", "--vectors", str(units["se_b"]),
                        "--sim", "icarus", "--scenarios", "all", "--pause", "0.2", "--json"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    out = json.loads(r.stdout)
    assert out["ok"] and out["mismatches"] == 0 and len(out["scenarios"]) == 4
    assert out["max_buffer_occupancy"] is None          # no strip level without probes
