"""The buffer planner: the paper's Buffer columns reproduced, the row-streaming unit's strip
buffer tied to the RTL configuration's formulas, the `tse buffer` command, SE hooks.

The paper's figures below are typed from the TSE paper (Vosco et al.), Table 1 (RegNetY-800MF)
and Table 4, in M elements. They are totals over all SE blocks of the network; M is 10^6 and
the printed figure is our total truncated (not rounded) to two decimals, e.g. RegNetY-600MF
TSE 379,456 -> "0.37M", RegNetY-1.6GF 825,552 -> "0.82M".
"""
from __future__ import annotations

import json
import math
import struct

import pytest

from tse.ref_model.buffers import parse_planner_tile, plan_layer, plan_network
from tse.ref_model.config import TSEConfig
from tse.ref_model.errors import ConfigError
from tse.ref_model.networks import Network, SELayer, builtin_network, mobilenetv3_se_layers
from tse.cli import main

# Table 1, 'Buffer' column: tile -> M elements (RegNetY-800MF, 224x224).
PAPER_TABLE1 = {
    "HxW": 1.07,
    "9xW": 0.52, "7xW": 0.42, "5xW": 0.30, "3xW": 0.18, "1xW": 0.06,
    "Hx9": 0.52, "Hx7": 0.42, "Hx5": 0.30, "Hx3": 0.18, "Hx1": 0.06,
    "13x13": 0.58, "11x11": 0.43, "9x9": 0.36, "7x7": 0.22, "5x5": 0.11, "3x3": 0.04,
}
# Table 4, 'Buffer' columns: network -> (SE, TSE 7xW) in M elements.
PAPER_TABLE4 = {
    "regnety-200mf": (0.38, 0.20),
    "regnety-400mf": (0.76, 0.33),
    "regnety-600mf": (0.88, 0.37),
    "regnety-800mf": (1.07, 0.42),
    "regnety-1.6gf": (2.07, 0.82),
    "regnety-3.2gf": (2.84, 1.07),
    "efficientnet-b0": (2.64, 0.85),
    "efficientnet-b1": (4.63, 1.34),
    "efficientnet-b2": (5.73, 1.59),
    "efficientnet-b3": (9.52, 2.30),
}
# Printed figures the paper's own model does not give (docs/buffer.md explains each).
TABLE1_INCONSISTENT = {"9x9"}
TABLE4_INCONSISTENT = {("regnety-200mf", "SE")}


def buffer_m(network: str, tile: str) -> float:
    plan = plan_network(builtin_network(network), tile)
    return plan.total("se_buffer" if tile == "HxW" else "tse_buffer") / 1e6


def truncated(value_m: float) -> float:
    return math.floor(value_m * 100 + 1e-9) / 100


def table4_rows():
    for net, (se, tse) in PAPER_TABLE4.items():
        yield net, "SE", "HxW", se
        yield net, "TSE", "7xW", tse


# ---- reproduction ---------------------------------------------------------------------------

@pytest.mark.parametrize("tile", [t for t in PAPER_TABLE1 if t not in TABLE1_INCONSISTENT])
def test_table1_reproduced_within_5_percent(tile):
    ours = buffer_m("regnety-800mf", tile)
    assert abs(ours - PAPER_TABLE1[tile]) <= 0.05 * PAPER_TABLE1[tile]
    assert truncated(ours) == PAPER_TABLE1[tile]          # and exactly, as printed


def test_table1_patch_9x9_is_not_the_papers_own_model():
    # The paper prints 0.36M; its model (k*k*C, the tile clamped to the 7x7 last stage as in
    # every other row) gives 0.319M. 0.36M is what 9*9*C gives with no clamping, whereas the
    # 11x11 and 13x13 rows are clamped (unclamped they would be 0.54M and 0.76M).
    net = builtin_network("regnety-800mf")
    assert buffer_m("regnety-800mf", "9x9") == pytest.approx(0.318912)
    assert abs(buffer_m("regnety-800mf", "9x9") - 0.36) > 0.05 * 0.36
    unclamped = {k: sum(k * k * layer.channels for layer in net.layers) / 1e6
                 for k in (9, 11, 13)}
    assert truncated(unclamped[9]) == 0.36
    assert truncated(unclamped[11]) != PAPER_TABLE1["11x11"]
    assert truncated(unclamped[13]) != PAPER_TABLE1["13x13"]


@pytest.mark.parametrize("net, what, tile, paper",
                         [r for r in table4_rows() if r[0].startswith("regnety")])
def test_table4_regnety_reproduced_within_5_percent(net, what, tile, paper):
    ours = buffer_m(net, tile)
    assert abs(ours - paper) <= 0.05 * paper
    if (net, what) not in TABLE4_INCONSISTENT:
        assert truncated(ours) == paper


def test_table4_regnety_200mf_se_differs_but_its_tse_matches():
    # 364,560 elements would print as 0.36M; the paper prints 0.38M (4.1 % more) while its
    # TSE figure for the same layers matches exactly. Shown, not fitted (docs/buffer.md).
    assert buffer_m("regnety-200mf", "HxW") == pytest.approx(0.364560)
    assert truncated(buffer_m("regnety-200mf", "7xW")) == 0.20


def test_table4_efficientnet_is_below_the_papers_figures():
    # EfficientNet B0-B3 from the published blocks at their native resolutions come out
    # 5.6-12.6 % (SE) and 4.0-11.8 % (TSE) under the paper's figures; docs/buffer.md shows the
    # comparison. B0 by hand from the EfficientNet paper's Table 1 (SE on the expanded width
    # at the depthwise conv's output resolution):
    b0 = (32 * 112 ** 2                                   # stage 1: 1 block, expand 1
          + 96 * 56 ** 2 + 144 * 56 ** 2                  # stage 2: 16*6, then 24*6
          + 144 * 28 ** 2 + 240 * 28 ** 2                 # stage 3
          + 240 * 14 ** 2 + 2 * 480 * 14 ** 2             # stage 4
          + 480 * 14 ** 2 + 2 * 672 * 14 ** 2             # stage 5
          + 672 * 7 ** 2 + 3 * 1152 * 7 ** 2              # stage 6
          + 1152 * 7 ** 2)                                # stage 7
    assert buffer_m("efficientnet-b0", "HxW") == pytest.approx(b0 / 1e6)
    for net, what, tile, paper in table4_rows():
        if net.startswith("efficientnet"):
            assert 0.03 < 1 - buffer_m(net, tile) / paper < 0.13, (net, what)


# Table 5 (EfficientDet, SE and TSE 7xW), Table B2 (TSE 1xW with the 3x1 excite, R4) and
# Table 6 (MobileNetV3 + LR-ASPP at 1024x2048, SE and TSE 7xW), in M elements.
PAPER_TABLE5 = {"efficientdet-d0": (13.8, 1.9), "efficientdet-d1": (33.6, 3.6),
                "efficientdet-d2": (50.8, 4.7)}
PAPER_TABLEB2 = {"efficientdet-d0": 0.28, "efficientdet-d1": 0.52, "efficientdet-d2": 0.68}
PAPER_TABLE6 = {"large": (36.17, 1.59), "small": (24.51, 1.04)}


def test_table5_and_b2_efficientdet_follow_the_efficientnet_gap():
    # The EfficientDet backbones are EfficientNet B0-B2 at 512, 640, 768; they sit under the
    # paper's figures by the same kind of margin as Table 4's EfficientNets (docs/buffer.md).
    # D0's SE by hand: B0's blocks (above) at 512, every map ceil-halved from 256.
    d0 = (32 * 256 ** 2 + 96 * 128 ** 2 + 144 * 128 ** 2 + 144 * 64 ** 2 + 240 * 64 ** 2
          + 240 * 32 ** 2 + 2 * 480 * 32 ** 2 + 480 * 32 ** 2 + 2 * 672 * 32 ** 2
          + 672 * 16 ** 2 + 3 * 1152 * 16 ** 2 + 1152 * 16 ** 2)
    assert buffer_m("efficientdet-d0", "HxW") == pytest.approx(d0 / 1e6)
    for net, (se, tse) in PAPER_TABLE5.items():
        assert 0.09 < 1 - buffer_m(net, "HxW") / se < 0.15, net
        assert 0.09 < 1 - buffer_m(net, "7xW") / tse < 0.12, net
        # Table B2 counts the 1-row tile alone, whatever the excite kernel.
        b2 = plan_network(builtin_network(net), "1xW", excite_kernel="3x1").total("tse_buffer")
        assert b2 == plan_network(builtin_network(net), "1xW").total("tse_buffer")
        assert 0.11 < 1 - b2 / 1e6 / PAPER_TABLEB2[net] < 0.13, net


def test_table6_large_is_the_papers_arithmetic_exactly():
    # The paper's MobileNetV3-Large figures come out exactly when every SE is counted at its
    # block's input resolution on the classification backbone (no dilation) and the 7-row
    # strip spans the frame's 1024-pixel side (H=2048, W=1024). By hand, blocks with SE:
    # b4 (72, its input 512x256), b5-b6 (120, 256x128), b11 (480), b12 (672), b13 (672, its
    # input 128x64), b14-b15 (960, 64x32).
    se = (72 * 512 * 256 + 2 * 120 * 256 * 128 + (480 + 672 + 672) * 128 * 64
          + 2 * 960 * 64 * 32)
    tse = 7 * (72 * 256 + 2 * 120 * 128 + (480 + 672 + 672) * 64 + 2 * 960 * 32)
    assert (se, tse) == (36_175_872, 1_591_296)
    layers = mobilenetv3_se_layers("large", 2048, 1024, dilated=False, se_at_block_input=True)
    plan = plan_network(Network("paper", tuple(layers), ""), "7xW")
    assert (plan.total("se_buffer"), plan.total("tse_buffer")) == (se, tse)
    assert (truncated(se / 1e6), truncated(tse / 1e6)) == PAPER_TABLE6["large"]
    # The same arithmetic does not give the Small's figures; with the SE the MobileNetV3
    # paper's Table 2 puts on the Small's last 1x1 conv (576 channels at 64 x 32) both come
    # within 5 % (docs/buffer.md); the Large has no such SE.
    small_blocks = (16 * 1024 * 512, 96 * 256 * 128, (240 * 2 + 120 + 144 + 288) * 128 * 64,
                    2 * 576 * 64 * 32)
    se = sum(small_blocks)
    tse = 7 * (16 * 512 + 96 * 128 + (240 * 2 + 120 + 144 + 288) * 64 + 2 * 576 * 32)
    for last, extra_se, extra_tse in ((False, 0, 0), (True, 576 * 64 * 32, 7 * 576 * 32)):
        small = plan_network(Network("paper", tuple(mobilenetv3_se_layers(
            "small", 2048, 1024, dilated=False, se_at_block_input=True, last_conv_se=last)),
            ""), "7xW")
        got = (small.total("se_buffer"), small.total("tse_buffer"))
        assert got == (se + extra_se, tse + extra_tse)
    assert got == (23_527_424, 992_768)
    paper = PAPER_TABLE6["small"]
    assert truncated(got[0] / 1e6) != paper[0]
    assert abs(got[0] / 1e6 / paper[0] - 1) < 0.05 and abs(got[1] / 1e6 / paper[1] - 1) < 0.05
    assert mobilenetv3_se_layers("large", 2048, 1024, last_conv_se=True) == \
        mobilenetv3_se_layers("large", 2048, 1024)


def test_table6_builtin_is_torchvisions_lraspp_backbone():
    # torchvision's lraspp_mobilenet_v3_large: SE after the strided depthwise conv, the last
    # stage dilated at 1/16 of 1024x2048: b4 (72 at 128x256), b5-b6 (120), b11 (480 at
    # 64x128), b12-b13 (672), b14-b15 (960), all of b11.. at 64x128.
    large = 72 * 128 * 256 + 2 * 120 * 128 * 256 + (480 + 2 * 672 + 2 * 960) * 64 * 128
    assert buffer_m("mobilenetv3-large-lraspp", "HxW") == pytest.approx(large / 1e6)
    net = builtin_network("mobilenetv3-small-lraspp")
    assert [layer.hidden for layer in net.layers] == [8, 24, 64, 64, 32, 40, 72, 144, 144]


def test_3x1_excite_holds_its_lookahead_strips():
    # Table B1: RegNetY-800MF 1xW, R4 and R2, 1x1 and 3x1 excites: the paper's 0.06M is the
    # tile alone; the unit's 3x1 FIFO adds the two strips the gates look ahead to and the
    # excite runs three taps per input.
    net = builtin_network("regnety-800mf")
    one = plan_network(net, "1xW")
    three = plan_network(net, "1xW", excite_kernel="3x1")
    assert truncated(one.total("tse_buffer") / 1e6) == 0.06 == truncated(
        three.total("tse_buffer") / 1e6)
    for a, b in zip(one.layers, three.layers):
        assert b.tse_stream_beats - b.excite_latency_cycles == 3 * a.strip_beats
        assert b.tse_excite_macs == 3 * a.tse_excite_macs
    with pytest.raises(ConfigError, match="excite-kernel: '5x1'"):
        plan_network(net, "1xW", excite_kernel="5x1")


# ---- per-layer model ------------------------------------------------------------------------

def test_tiles_are_clamped_to_the_layer():
    layer = SELayer("tiny", 16, 4, 4, 4)
    for tile in ("7xW", "Hx7", "13x13", "HxW"):
        row = plan_layer(layer, parse_planner_tile(tile))
        assert (row.tile_rows, row.tile_cols, row.tiles, row.tiling) == (4, 4, 1, "se")
        assert row.tse_buffer == row.se_buffer == 4 * 4 * 16
        assert row.excite_macs_added == 0
    wide = SELayer("wide", 8, 10, 20, 2)
    row = plan_layer(wide, parse_planner_tile("3x7"))
    assert (row.tile_rows, row.tile_cols, row.tiles_y, row.tiles_x) == (3, 7, 4, 3)
    assert row.tiling == "patch" and row.tse_buffer == 3 * 7 * 8
    assert row.tse_excite_macs == 12 * 2 * 8 * 2                # tiles x (C*hidden + hidden*C)
    assert plan_layer(wide, parse_planner_tile("Hx5")).tiling == "column strip"
    assert plan_layer(wide, parse_planner_tile("2xW")).tiling == "row strip"


@pytest.mark.parametrize("tile, q", [("7xW", 32), ("7xW", 5), ("Hx7", 16), ("4x4", 64), ("HxW", 3)])
def test_stream_buffer_is_the_rtl_configurations_depth(tile, q):
    # A layer TSEConfig accepts: the planner's strip FIFO must be the configuration's
    # full-throughput depth (the RTL's FIFO) times the lanes.
    cfg = TSEConfig(channels=128, height=28, width=28, tile=tile, reduction=4, lanes=8,
                    excite_multipliers=q)
    row = plan_layer(SELayer("x", 128, 28, 28, 32), parse_planner_tile(tile), 8, q)
    assert row.tse_stream_beats == cfg.full_throughput_depth
    assert row.tse_stream_buffer == cfg.full_throughput_depth * 8
    assert row.excite_latency_cycles == cfg.excite_latency_cycles
    assert row.strip_beats == cfg.strip_beats


def test_full_throughput_multipliers_are_the_fewest_that_keep_up():
    for layer in builtin_network("regnety-800mf").layers:
        tile = parse_planner_tile("7xW")
        row = plan_layer(layer, tile)
        assert row.keeps_up and row.excite_multipliers == row.full_throughput_multipliers
        if row.excite_multipliers > 1:
            assert not plan_layer(layer, tile, multipliers=row.excite_multipliers - 1).keeps_up


def test_row_streaming_unit_buffers_whole_rows():
    # A column strip or a patch saves nothing on a row-streaming unit beyond its rows.
    layer = SELayer("x", 64, 56, 56, 16)
    se = plan_layer(layer, parse_planner_tile("HxW"), multipliers=8)
    col = plan_layer(layer, parse_planner_tile("Hx7"), multipliers=8)
    row = plan_layer(layer, parse_planner_tile("7xW"), multipliers=8)
    assert col.tse_buffer == row.tse_buffer < se.tse_buffer           # the paper's minimum
    assert col.strip_beats == se.strip_beats == 56 * 56 * 64 // 8     # whole frame
    assert row.strip_beats == 7 * 56 * 64 // 8


def test_channels_not_a_multiple_of_lanes_stream_padded():
    row = plan_layer(SELayer("x", 20, 8, 8, 5), parse_planner_tile("2xW"), lanes=8,
                     multipliers=4)
    assert row.strip_beats == 2 * 8 * 24 // 8
    assert row.tse_buffer == 2 * 8 * 20


@pytest.mark.parametrize("spec", ["7", "7xH", "0x7", "Wx7", "", "axb"])
def test_bad_tile(spec):
    with pytest.raises(ConfigError, match=r"tile: .* is not allowed; allowed: '<rows>x<cols>'"):
        parse_planner_tile(spec)


def test_bad_lanes_and_multipliers():
    net = builtin_network("regnety-200mf")
    with pytest.raises(ConfigError, match=r"lanes: 0 is not allowed; allowed: a positive"):
        plan_network(net, "7xW", lanes=0)
    with pytest.raises(ConfigError, match=r"excite multipliers: -2 is not allowed"):
        plan_network(net, "7xW", multipliers=-2)


# ---- `tse buffer` ---------------------------------------------------------------------------

def test_cli_json_has_per_layer_rows_and_totals(capsys):
    assert main(["buffer", "--network", "regnety-800mf", "--tile", "7xW", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("network", "tile", "layers", "se_buffer", "tse_buffer", "tse_stream_buffer",
                "se_stream_buffer", "se_excite_macs", "tse_excite_macs", "excite_macs_added",
                "excite_multipliers", "lanes", "multipliers_per_layer", "layers_stalling"):
        assert key in out, key
    assert out["network"] == "regnety-800mf" and out["tile"] == "7xW"
    assert len(out["layers"]) == 14
    for key in ("se_buffer", "tse_buffer", "tse_stream_buffer", "tse_excite_macs"):
        assert out[key] == sum(row[key] for row in out["layers"])
    assert out["se_buffer"] == 1_078_784 and out["tse_buffer"] == 426_496
    first = out["layers"][0]
    assert {"name", "channels", "height", "width", "hidden", "tile_rows", "tile_cols", "tiles",
            "se_buffer", "tse_buffer", "tse_stream_buffer", "excite_multipliers",
            "full_throughput_multipliers", "keeps_up"} <= set(first)
    assert out["layers_stalling"] == []


def test_cli_fixed_multipliers_report_stalling_layers(capsys):
    assert main(["buffer", "--network", "regnety-800mf", "--excite-multipliers", "2"]) == 0
    text = capsys.readouterr().out
    assert "stalls: Q too small" in text and text.splitlines()[0].startswith("regnety-800mf")


def test_cli_table_and_list(capsys):
    assert main(["buffer", "--list-networks"]) == 0
    assert "efficientnet-b3" in capsys.readouterr().out
    assert main(["buffer", "--network", "efficientnet-b0", "--tile", "Hx7"]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "s7.b1" in out


def test_cli_bad_row_is_one_error_line(tmp_path, capsys):
    path = tmp_path / "layers.csv"
    path.write_text("name,C,H,W,hidden\nconv1,64,56,56,16\nse2,128,twenty,28,32\n")
    assert main(["buffer", "--layers", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("tse: error: ") and "line 3 (layer 'se2')" in err
    assert "H = 'twenty' is not allowed; allowed: a positive integer" in err


@pytest.mark.parametrize("argv, message", [
    (["buffer"], "no network given"),
    (["buffer", "--network", "resnet50"], "not a built-in network"),
    (["buffer", "--network", "regnety-800mf", "--tile", "7x"], "tile: '7x' is not allowed"),
    (["buffer", "--network", "regnety-800mf", "--input-size", "224"], "only --model"),
])
def test_cli_errors(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_cli_plot_writes_png(tmp_path, capsys):
    png = tmp_path / "buffers.png"
    assert main(["buffer", "--network", "regnety-800mf", "--plot", str(png), "--json"]) == 0
    json.loads(capsys.readouterr().out)                # --json output stays one JSON object
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert width > 1000 and height > 400


# ---- SE blocks of a PyTorch model -----------------------------------------------------------

MODEL_FILE = '''
import torch
from torch import nn


class PoolSE(nn.Module):                      # torchvision / pycls style: a pooling module
    def __init__(self, c, hidden):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.excite = nn.Sequential(nn.Conv2d(c, hidden, 1), nn.ReLU(),
                                    nn.Conv2d(hidden, c, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.excite(self.pool(x))


class MeanSE(nn.Module):                      # timm style: mean in forward, linears
    def __init__(self, c, hidden):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(c, hidden), nn.Linear(hidden, c)

    def forward(self, x):
        g = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3))))))
        return x * g[:, :, None, None]


class Bottleneck(nn.Module):                  # 1x1 -> 3x3 -> 1x1: not an SE block
    def __init__(self, c):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(c, c // 4, 1), nn.Conv2d(c // 4, c // 4, 3, padding=1), \\
            nn.Conv2d(c // 4, c, 1)

    def forward(self, x):
        return x + self.c(self.b(self.a(x)))


def build_model():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        PoolSE(16, 4),
        Bottleneck(16),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        MeanSE(32, 8),
        nn.Sequential(PoolSE(32, 6)),         # wrapped: the inner block is reported
        nn.Conv2d(32, 32, 1),                 # a lone 1x1 conv is not an SE block
    )
'''


@pytest.fixture
def model_file(tmp_path, monkeypatch):
    path = tmp_path / "se_model.py"
    path.write_text(MODEL_FILE)
    monkeypatch.syspath_prepend(str(tmp_path))         # so torch.load can find the classes
    return path


def test_hooks_find_se_blocks(model_file):
    from tse.quant.se_hooks import load_model, find_se_layers
    net = find_se_layers(load_model(model_file), (3, 64, 48), name="m")
    assert [(l.name, l.channels, l.height, l.width, l.hidden) for l in net.layers] == [
        ("1", 16, 32, 24, 4), ("4", 32, 16, 12, 8), ("5.0", 32, 16, 12, 6)]


def test_hooks_on_a_saved_model_and_the_cli(model_file, tmp_path, capsys):
    import torch

    from tse.quant.se_hooks import model_se_layers
    import se_model
    saved = tmp_path / "model.pt"
    torch.save(se_model.build_model(), saved)
    assert [l.channels for l in model_se_layers(saved, (3, 32, 32)).layers] == [16, 32, 32]
    assert main(["buffer", "--model", str(model_file), "--input-size", "64x48", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["network"] == "se_model"
    assert out["se_buffer"] == 16 * 32 * 24 + 2 * 32 * 16 * 12


def test_hooks_errors(tmp_path):
    from torch import nn

    from tse.quant.se_hooks import find_se_layers, load_model
    from tse.ref_model.errors import InputError
    with pytest.raises(ConfigError, match="no SE block found"):
        find_se_layers(nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 3, 1)), (3, 8, 8))
    with pytest.raises(InputError, match="forward pass on an input of size 5x8x8 failed"):
        find_se_layers(nn.Sequential(nn.Conv2d(3, 8, 1)), (5, 8, 8))
    bad = tmp_path / "nobuild.py"
    bad.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="defines no build_model"):
        load_model(bad)
    with pytest.raises(InputError, match="does not exist"):
        load_model(tmp_path / "missing.py")
