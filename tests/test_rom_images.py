"""The unit's ROM images (hex/rom_<name>.hex): what `tse vectors` and `tse rtl` ship is what the
exported Verilog runs from.

  - the images decoded with this file's own field decoder equal the integer parameters
    (w1[o, k*Q + j], fc biases clamped when saturating, multipliers, shifts, gates), and the
    manifest describes their widths and depths;
  - tse_unit.v loads exactly these files with $readmemh (no ROM words left in the Verilog),
    and Yosys reads them into the same memory contents in address order;
  - a wrong image (w1 transposed, one sigmoid word changed, the images missing) fails the
    self-checking testbench and a cocotb co-simulation on Icarus (a tiny unit).
"""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess

import numpy as np
import pytest

from tse.ref_model import artifacts, numerics, vectors
from tse.ref_model.config import TSEConfig
from tse.ref_model.hw_profile import DEFAULT_HW
from tse.rtl.export import write_verilog
from tse.sim import cosim, selfcheck
from test_numerics import random_quant_params

NAMES = ("w1", "w2", "fc1", "fc2", "sigmoid")
CONFIGS = {
    # C not a multiple of Q (padding), hidden < Q, the bias clamped to narrow registers
    "saturating-narrow": TSEConfig(channels=8, height=4, width=6, tile="2x3", reduction=2,
                                   lanes=4, excite_multipliers=3,
                                   hw=DEFAULT_HW.replace(saturate=True, sum_bits=9,
                                                         fc1_acc_bits=13, fc2_acc_bits=12,
                                                         bias_frac_bits=4)),
    # 5-bit gates, a narrower fc1 multiplier than fc2's
    "gate5": TSEConfig(channels=6, height=4, width=5, tile="2x2", reduction=3, lanes=2,
                       excite_multipliers=4,
                       hw=DEFAULT_HW.replace(gate_bits=5, fc1_multiplier_bits=14)),
}
# square w1 (reduction 1), so a transposed image has the right size and only wrong contents
TINY = TSEConfig(channels=4, height=4, width=6, tile="2x3", reduction=1, lanes=2,
                 excite_multipliers=3)


def write_vectors(cfg: TSEConfig, out, seed: int = 5, frames: int = 2):
    """A vectors directory as `tse vectors` writes it (random integer parameters, no PyTorch
    run); returns its IntParams."""
    qp = random_quant_params(seed, cfg.channels, cfg.hidden, cfg.engine, True, "random")
    x = np.random.default_rng(seed + 1).integers(
        0, 256, (frames, cfg.height, cfg.width, cfg.channels)).astype(np.uint8)
    result = vectors.build(cfg, qp, x, "hw")
    files = selfcheck.bundle(cfg, result["int_params"], frames)
    vectors.write(out, cfg, qp, result, "hw", {}, extra_files=files)
    return result["int_params"]


def words_of(path) -> tuple[list[int], int]:
    """The words of a hex image and the digits per line (every line the same)."""
    lines = path.read_text().splitlines()
    assert lines and len({len(l) for l in lines}) == 1, path
    return [int(l, 16) for l in lines], len(lines[0])


def field(word: int, lo: int, bits: int, signed: bool) -> int:
    v = (word >> lo) & ((1 << bits) - 1)
    return v - (1 << bits) if signed and v >> (bits - 1) else v


def expected_widths(cfg: TSEConfig, ip) -> dict:
    """Field widths from the hw profile and the parameters, as docs/formats.md states them."""
    hw = cfg.hw
    return {"q": min(cfg.excite_multipliers, max(cfg.channels, cfg.hidden)),
            "acc": max(hw.fc1_acc_bits, hw.fc2_acc_bits) + hw.bias_frac_bits,
            "mult": max(int(v) for v in [*ip.hw_fc1_mult, *ip.hw_fc2_mult]).bit_length(),
            "shift": max(1, max(int(v) for v in [*ip.hw_fc1_shift, *ip.hw_fc2_shift])
                         .bit_length())}


def check_images(hex_dir, cfg: TSEConfig, ip) -> None:
    """Decode every ROM image of hex_dir and compare it with the integer parameters."""
    w = expected_widths(cfg, ip)
    q = w["q"]
    for name, mat in (("w1", ip.w1), ("w2", ip.w2)):
        outs, ins = mat.shape
        chunks = math.ceil(ins / q)
        words, digits = words_of(hex_dir / f"rom_{name}.hex")
        assert len(words) == outs * chunks and digits == math.ceil(8 * q / 4), name
        for o in range(outs):
            for k in range(chunks):
                word = words[o * chunks + k]
                got = [field(word, 8 * j, 8, True) for j in range(q)]
                want = [int(mat[o, k * q + j]) if k * q + j < ins else 0 for j in range(q)]
                assert got == want, (name, o, k)
                assert word >> (8 * q) == 0
    hw = cfg.hw
    for layer, n in ((1, cfg.hidden), (2, cfg.channels)):
        bias = getattr(ip, f"hw_fc{layer}_bias")
        if hw.saturate:
            reg = getattr(hw, f"fc{layer}_acc_bits") + hw.bias_frac_bits
            bias = np.clip(bias, -(1 << (reg - 1)), (1 << (reg - 1)) - 1)
        words, digits = words_of(hex_dir / f"rom_fc{layer}.hex")
        width = w["acc"] + w["mult"] + w["shift"]
        assert len(words) == n and digits == math.ceil(width / 4)
        for o, word in enumerate(words):
            assert field(word, 0, w["acc"], True) == bias[o], (layer, o)
            assert field(word, w["acc"], w["mult"], False) == \
                getattr(ip, f"hw_fc{layer}_mult")[o], (layer, o)
            assert field(word, w["acc"] + w["mult"], w["shift"], False) == \
                getattr(ip, f"hw_fc{layer}_shift")[o], (layer, o)
            assert word >> width == 0
    words, digits = words_of(hex_dir / "rom_sigmoid.hex")
    gb = hw.gate_bits
    table = numerics.gate_table(ip.sigmoid_lut, gb)
    assert words == [int(v) >> (8 - gb) for v in table] and digits == math.ceil(gb / 4)
    assert all(v < (1 << gb) for v in words)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_rom_images_decode_to_the_integer_parameters(name, tmp_path):
    cfg = CONFIGS[name]
    ip = write_vectors(cfg, tmp_path / "v")
    check_images(tmp_path / "v" / "hex", cfg, ip)
    m = artifacts.read_manifest(tmp_path / "v")
    assert artifacts.verify(tmp_path / "v") == []
    w = expected_widths(cfg, ip)
    bits = {"w1": 8 * w["q"], "w2": 8 * w["q"], "fc1": w["acc"] + w["mult"] + w["shift"],
            "fc2": w["acc"] + w["mult"] + w["shift"], "sigmoid": cfg.hw.gate_bits}
    depth = {"w1": cfg.hidden * math.ceil(cfg.channels / w["q"]),
             "w2": cfg.channels * math.ceil(cfg.hidden / w["q"]), "fc1": cfg.hidden,
             "fc2": cfg.channels, "sigmoid": 256}
    for rom in NAMES:
        assert m["hex"][f"rom_{rom}"]["path"] == f"hex/rom_{rom}.hex"
        assert (m["hex"][f"rom_{rom}"]["bits"], m["hex"][f"rom_{rom}"]["depth"]) == \
            (bits[rom], depth[rom]), rom
    # `tse rtl --out` ships the same files beside its Verilog
    write_verilog(cfg, ip, tmp_path / "rtl")
    for rom in NAMES:
        assert (tmp_path / "rtl" / "hex" / f"rom_{rom}.hex").read_bytes() == \
            (tmp_path / "v" / "hex" / f"rom_{rom}.hex").read_bytes(), rom


def test_verilog_loads_the_images_and_yosys_reads_them_in_address_order(tmp_path):
    cfg = CONFIGS["saturating-narrow"]
    ip = write_vectors(cfg, tmp_path)
    text = (tmp_path / selfcheck.UNIT_FILE).read_text()
    for rom in NAMES:
        words, _ = words_of(tmp_path / "hex" / f"rom_{rom}.hex")
        mem = f"{rom}_rom"
        decl = re.search(rf"reg (?:\[(\d+):0\] )?{mem} \[(\d+):0\];", text)
        assert decl and int(decl[2]) + 1 == len(words), rom
        assert f'"/rom_{rom}.hex"}}, {mem}, 0, {len(words) - 1});' in text      # synthesis
        assert f'"%0s/rom_{rom}.hex", dir);' in text                            # simulation
        assert f"$readmemh(path, {mem}, 0, {len(words) - 1});" in text
        assert not re.search(rf"^\s*{mem}\[\d+\] = ", text, re.M), rom          # no copy
    assert shutil.which("yosys"), "yosys is installed by setup.sh"
    il = tmp_path / "unit.il"
    run = subprocess.run(["yosys", "-q", "-p", f"read_verilog {tmp_path / 'tse_unit.v'}; "
                          "hierarchy -top tse_unit; proc; memory_collect; "
                          f"write_rtlil {il}"], capture_output=True, text=True,
                         cwd=tmp_path.parent, timeout=300)     # not the .v file's directory
    assert run.returncode == 0, run.stderr[-2000:]
    cells = re.findall(r"cell \$mem_v2 (\S+)\n(.*?)\n  end", il.read_text(), re.S)
    inits = {}
    for cell, body in cells:
        params = dict(re.findall(r"parameter \\(\w+) (\S+)", body))
        inits[cell.split(".")[-1].lstrip("\\")] = params
    for rom in NAMES:
        words, _ = words_of(tmp_path / "hex" / f"rom_{rom}.hex")
        params = inits[f"{rom}_rom"]
        width = int(params["WIDTH"])
        bits = params["INIT"].split("'")[1]
        assert int(bits, 2) == sum(w << (width * a) for a, w in enumerate(words)), rom


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny unit's vectors, a copy with w1's image transposed, one with one sigmoid word
    changed, and an Icarus build of its self-checking testbench."""
    root = tmp_path_factory.mktemp("roms")
    good = root / "good"
    ip = write_vectors(TINY, good, seed=7, frames=2)
    bad = {}
    for kind in ("w1_transposed", "sigmoid_word"):
        bad[kind] = root / kind
        shutil.copytree(good, bad[kind])
    q = min(TINY.excite_multipliers, TINY.channels)
    wt = np.asarray(ip.w1).T              # [C, hidden]: square, the same number of words
    chunks = math.ceil(wt.shape[1] / q)
    words, digits = words_of(good / "hex" / "rom_w1.hex")
    lines = []
    for o in range(wt.shape[0]):
        for k in range(chunks):
            lanes = [int(wt[o, k * q + j]) if k * q + j < wt.shape[1] else 0 for j in range(q)]
            lines.append(format(sum((v & 0xFF) << (8 * j) for j, v in enumerate(lanes)),
                                f"0{digits}x"))
    assert len(lines) == len(words)
    (bad["w1_transposed"] / "hex" / "rom_w1.hex").write_text("\n".join(lines) + "\n")
    # the gate of the first tile's channel 0: its excite code's word, top bit flipped
    code = int(np.load(good / "excite.npy")[0, 0, 0, 0])
    path = bad["sigmoid_word"] / "hex" / "rom_sigmoid.hex"
    sig = path.read_text().splitlines()
    sig[code] = format(int(sig[code], 16) ^ 0x80, f"0{len(sig[code])}x")
    path.write_text("\n".join(sig) + "\n")
    return good, bad, root / "build"


def test_selfcheck_fails_on_a_wrong_rom_image(tiny):
    good, bad, build = tiny
    ok = selfcheck.run(good, "icarus", build, pause=20, seed=3)
    assert ok["passed"] and ok["returncode"] == 0, ok
    for kind, path in bad.items():
        assert any((path / "hex" / f).read_bytes() != (good / "hex" / f).read_bytes()
                   for f in ("rom_w1.hex", "rom_sigmoid.hex")), kind
        r = selfcheck.run(good, "icarus", build, pause=20, seed=3, hex_dir=path)  # same build
        assert not r["passed"] and r["returncode"] != 0, (kind, r)
        assert int(r["mismatches"]) > 0, (kind, r)


def test_missing_rom_images_stop_the_simulation_with_their_path(tiny, tmp_path):
    good, _, build = tiny
    program = selfcheck.build(good, "icarus", build)
    run = subprocess.run(["vvp", "-n", str(program), f"+vectors={good}",
                          f"+tse_rom_dir={tmp_path}"], capture_output=True, text=True,
                         timeout=120)
    out = run.stdout + run.stderr
    assert run.returncode != 0 and f"cannot open ROM image {tmp_path}/rom_" in out, out[-2000:]
    assert "PASS" not in out
    # run where tse_unit.v is, with no plusarg: the default hex/ is found
    run = subprocess.run(["vvp", "-n", str(program)], cwd=good, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0 and "tb_tse_unit: PASS" in run.stdout, run.stdout[-2000:]


def test_cocotb_cosimulation_runs_on_the_vectors_roms(tiny):
    good, bad, _ = tiny
    scs = cosim.scenarios(["stream"], frames=2)
    ok = cosim.cosimulate(good, "icarus", scs)
    assert ok["ok"] and ok["mismatches"] == 0 and ok["beats"] == 2 * 4 * 6 * 4 // 2, ok
    r = cosim.cosimulate(bad["w1_transposed"], "icarus", scs)
    assert not r["ok"] and r["mismatches"] > 0, json.dumps(r)[:2000]
    assert r["build"]["cached"]            # the same build: only the images differ


def test_export_refuses_init_values_that_are_not_the_image():
    from tse.ref_model.roms import Field, Rom
    from tse.rtl.export import ExportError, load_roms_from_files

    rom = Rom("w1", (0x12, 0xff), (Field("w", 8, True),), "test")
    text = ("  reg [7:0] w1_rom [1:0];\n  initial begin\n    w1_rom[0] = 8'h12;\n"
            "    w1_rom[1] = 8'd255;\n  end\n")
    out = load_roms_from_files(text, {"w1": rom})
    assert "$readmemh(path, w1_rom, 0, 1);" in out and "w1_rom[0] =" not in out
    with pytest.raises(ExportError, match="differ from its image"):
        load_roms_from_files(text.replace("8'd255", "8'd254"), {"w1": rom})
    with pytest.raises(ExportError, match="found 0"):
        load_roms_from_files(text.replace("w1_rom", "w9_rom"), {"w1": rom})
    with pytest.raises(ExportError, match="is 8 x 2, its image rom_w1 8 x 3"):
        load_roms_from_files(text, {"w1": Rom("w1", (1, 2, 3), rom.fields, "test")})
