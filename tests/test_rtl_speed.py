"""Simulation speed of the exported Verilog: no net that Icarus builds as a `.concat8` tree.

A payload driven field by field exports as many part-select assigns to one net; Icarus compiles
such a net to `.concat8` nodes that re-send the whole vector bit by bit on every change of any
part (most of its run time on the default configuration before the payloads were driven
whole with one Cat, tse.rtl.params.whole). The guard compiles the exported unit with iverilog and
reads the compiled design. Also: Verilator builds in parallel, through ccache, keyed on the
tools' versions (tse/sim/runner.py)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from amaranth import Const, Signal

from tse.ref_model.config import DEFAULT, TSEConfig
from tse.rtl.export import write_verilog
from tse.rtl.params import beat_layout, field, rtl_params, sums_layout, whole

from rtl_helpers import small_case


def compiled_concat8(cfg, ip, tmp_path) -> list[str]:
    """The `.concat8` lines of iverilog's compiled design of the exported unit."""
    assert shutil.which("iverilog"), "iverilog is installed by setup.sh"
    path = write_verilog(cfg, ip, tmp_path)
    vvp = tmp_path / "x.vvp"
    run = subprocess.run(["iverilog", "-o", str(vvp), str(path)], capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    return [line for line in vvp.read_text().splitlines() if re.search(r"\.concat8\b", line)]


def test_default_design_has_no_concat8(tmp_path):
    cfg, ip, _ = small_case(DEFAULT, seed=3, frames=1, zp_mode="natural")
    found = compiled_concat8(cfg, ip, tmp_path)
    assert not found, f"{len(found)} .concat8 nodes, first: {found[0]}"


@pytest.mark.parametrize("cfg", [
    TSEConfig(channels=8, height=5, width=9, tile="Hx2", reduction=4, lanes=4,
              excite_multipliers=16),
    TSEConfig(channels=6, height=4, width=5, tile="3x2", reduction=2, lanes=1,
              excite_multipliers=2),
], ids=["partial-tiles", "one-lane"])
def test_small_designs_have_no_concat8(cfg, tmp_path):
    cfg, ip, _ = small_case(cfg, seed=5)
    found = compiled_concat8(cfg, ip, tmp_path)
    assert not found, f"{len(found)} .concat8 nodes, first: {found[0]}"


def test_whole_packs_fields_in_layout_order_and_checks_widths():
    cfg, ip, _ = small_case(DEFAULT, seed=3, frames=1, zp_mode="natural")
    p = rtl_params(cfg, ip)
    layout = beat_layout(p)
    data = 0x0123456789ABCDEF
    value = whole(layout, last=Const(1, 1), data=Const(data, 64))    # keyword order ignored
    assert Const.cast(value).value == (1 << 64) | data
    sl = sums_layout(p)
    fields = {"sums": 32 * 8, "tile": field(p.tx), "group": field(p.G), "kind": 2,
              "strip": field(p.ty), "strip_end": 1}
    packed = Const.cast(whole(sl, **{k: Const(1, w) for k, w in fields.items()})).value
    want, pos = 0, 0
    for name in ("sums", "tile", "group", "kind", "strip", "strip_end"):   # sums_layout order
        want |= 1 << pos
        pos += fields[name]
    assert (packed, pos) == (want, sl.size)
    with pytest.raises(ValueError, match="field data: 63 bits given, the layout has 64"):
        whole(layout, data=Signal(63), last=Signal(1))
    with pytest.raises(ValueError, match="fields not in the layout: extra"):
        whole(layout, data=Signal(64), last=Signal(1), extra=Signal(1))
    with pytest.raises(ValueError, match="field last: not given"):
        whole(layout, data=Signal(64))


# ---- builds: parallel, through ccache, keyed on the tools' versions ----------------------

def test_verilator_build_uses_every_core_and_keeps_signals_private():
    from tse.sim import runner

    class Verilator:                     # cocotb's runner as far as the wrapper sees it
        def _build_command(self):
            return [["verilator", "-cc", "--public-flat-rw", "top.v"],
                    ["make", "-j", "4", "-C", "build", "-f", "Vtop.mk"]]

    jobs = str(runner.build_jobs())
    cmds = runner._verilator_commands(Verilator(), private_ok=True)._build_command()
    assert cmds == [["verilator", "--verilate-jobs", jobs, "-cc", "top.v"],
                    ["make", "-j", jobs, "-C", "build", "-f", "Vtop.mk"]]
    public = runner._verilator_commands(Verilator(), private_ok=False)._build_command()
    assert "--public-flat-rw" in public[0]


def test_build_key_follows_the_simulator_version(monkeypatch, tmp_path):
    from tse.sim import runner
    src = tmp_path / "top.v"
    src.write_text("module top; endmodule\n")
    version = runner.tool_version("icarus")
    assert "Icarus Verilog" in version and "cocotb" in version
    assert runner.tool_version("selfcheck-icarus") == version
    key = runner.build_key("icarus", "top", [src])
    monkeypatch.setattr(runner, "tool_version", lambda sim: version + " (another build)")
    assert runner.build_key("icarus", "top", [src]) != key


def test_verilator_compiles_through_ccache(monkeypatch):
    from tse.sim import runner
    assert shutil.which("ccache"), "ccache is installed by setup.sh"
    monkeypatch.setenv("OBJCACHE", "")      # recorded, so teardown restores the original
    monkeypatch.delenv("OBJCACHE")
    runner.prepare_environment("verilator")
    assert os.environ["OBJCACHE"] == "ccache"
    monkeypatch.setenv("OBJCACHE", "")   # a user's choice (none) stands
    runner.prepare_environment("verilator")
    assert os.environ["OBJCACHE"] == ""
