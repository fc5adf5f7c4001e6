"""The unit plan (tse.ref_model.unit_plan) is what the RTL builds and what the vectors carry."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tse.ref_model import numerics as nm
from tse.ref_model.config import TSEConfig
from tse.ref_model.unit_plan import UnitPlan, plan_unit
from tse.ref_model.errors import InputError
from test_rom_images import write_vectors

CONFIGS = {
    "se": dict(channels=8, height=4, width=4, tile="HxW", reduction=2, lanes=4),
    "row_strip": dict(channels=8, height=6, width=5, tile="2xW", reduction=4, lanes=2),
    "column_strip": dict(channels=4, height=5, width=7, tile="Hx3", reduction=2, lanes=4),
    "patch_partial": dict(channels=6, height=7, width=5, tile="3x2", reduction=3, lanes=3),
    "p1": dict(channels=4, height=3, width=5, tile="2x2", reduction=2, lanes=1),
    "q_lt_hidden": dict(channels=16, height=4, width=4, tile="2xW", reduction=1, lanes=4,
                        excite_multipliers=3),
}


def plan_of(name: str, seed: int = 3) -> UnitPlan:
    from test_numerics import random_quant_params
    cfg = TSEConfig(**CONFIGS[name])
    return plan_unit(cfg, random_quant_params(seed, cfg.channels, cfg.hidden, cfg.engine,
                                              True, "random"))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_tile_kind_table_matches_brute_force_counts(name):
    p = plan_of(name)
    kinds = p.tile_kinds
    assert kinds.shape == (p.ty, p.tx)
    full = p.th * p.tw
    for i in range(p.ty):
        for j in range(p.tx):
            rows = len(range(i * p.th, min(p.H, (i + 1) * p.th)))
            cols = len(range(j * p.tw, min(p.W, (j + 1) * p.tw)))
            want = 2 * int(rows < p.th) + int(cols < p.tw)
            assert kinds[i, j] == want == nm.tile_kind(i, j, p.cfg)
            assert rows * cols == int(p.ip.tile_counts[want])
    assert (kinds == 0).any() and (full == int(p.ip.tile_counts[0]))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_plan_survives_to_dict_from_dict(name):
    p = plan_of(name)
    d = json.loads(json.dumps(p.to_dict()))
    q = UnitPlan.from_dict(d)
    assert q.cfg == p.cfg and q.ip.equals(p.ip) and q.facts() == p.facts()
    d["ports"]["probe_gate_tile"] += 1
    with pytest.raises(InputError, match="ports"):
        UnitPlan.from_dict(d)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_tse_rtl_reports_the_plans_memory_and_multipliers(name, tmp_path):
    p = plan_of(name)
    params = tmp_path / "ip"
    p.ip.save(params)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in CONFIGS[name].items()]
    r = subprocess.run([sys.executable, "-m", "tse", "rtl", *args, "--params", str(params),
                        "--out", str(tmp_path / "rtl"), "--json"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(r.stdout)
    mem = p.memory_bits()
    for k in ("strip_buffer_bits", "gate_memory_bits", "accumulator_bits",
              "pooled_buffer_bits", "hidden_buffer_bits"):
        assert rep[k] == mem[k], k
    assert rep["rom_bits_by_table"] == mem["rom_bits"]
    assert rep["multipliers"] == p.multipliers()
    cost = p.cost()
    assert rep["total_memory_bits"] == cost["memory_bits"]
    assert rep["multiplier_count"] == cost["multipliers"]
    # the width sweep prices the same unit
    from tse.quant.sweep_cost import hardware_cost
    swept = hardware_cost(p.cfg, p.ip)
    assert swept["storage_bits"] == rep["total_memory_bits"]
    assert swept["multipliers"] == rep["multiplier_count"]
    assert swept["gate_memory_bits"] == rep["gate_memory_bits"]
    # the gate memory has three banks, and P mean units
    assert mem["gate_memory_bits"] == 3 * p.tx * p.C * p.gate_bits
    assert [m["count"] for m in p.multipliers()][:3] == [p.Q, p.P, 1]


@pytest.mark.parametrize("name", ["patch_partial", "q_lt_hidden"])
def test_vectors_carry_the_plan_and_its_rom_images(name, tmp_path):
    cfg = TSEConfig(**CONFIGS[name])
    ip = write_vectors(cfg, tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    p = UnitPlan.from_dict(manifest["unit"])
    assert p.ip.equals(ip)
    assert manifest["unit"]["geometry"]["beats_per_frame"] == (cfg.height * cfg.width
                                                                * cfg.channels // cfg.lanes)
    unit_v = (tmp_path / "tse_unit.v").read_text()
    for rom_name, rom in p.rom_images.items():
        assert (tmp_path / "hex" / rom.file).read_bytes() == rom.hex_text()
        assert rom.file in unit_v          # the Verilog the RTL elaborates loads this image
    # the vectors' unit has the AXI ports only; its probed twin has the plan's probe widths
    from tse.rtl.export import verilog_text
    from tse.sim import harness
    ports = manifest["unit"]["ports"]
    assert harness.port_width(unit_v, "m_axis_tdata") == ports["m_axis_tdata"]
    assert not harness.has_port(unit_v, "probe_gate_tile")
    probed = verilog_text(cfg, ip, probes=True)
    assert harness.layout_of(probed, cfg.lanes) == harness.Layout.from_ports(ports)
