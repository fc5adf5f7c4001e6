"""The generated SE layer tables against published facts, and user layer lists.

Expected values are published figures, typed here: stage widths and depths of RegNetY (RegNet
paper / pycls model zoo), torchvision's parameter counts (num_params in its weight metadata),
EfficientNet-B0's stage table (Tan & Le 2019, Table 1). The parameter counts are computed here
from the generated stage/block tables, so a wrong width, depth, group width or SE hidden width
anywhere in a network changes them.
"""
from __future__ import annotations

import pytest

from tse.ref_model.errors import ConfigError, InputError
from tse.ref_model.networks import (EFFICIENTNET, EFFICIENTNET_HEAD, EFFICIENTNET_STEM, REGNETY,
                                builtin_network, efficientnet_blocks, load_layers,
                                network_names, regnet_stages, round_filters)

# ---- RegNetY -------------------------------------------------------------------------------

# (widths, depths) per stage, pycls model zoo / RegNet paper (pycls rounding).
REGNETY_STAGES = {
    "regnety-200mf": ([24, 56, 152, 368], [1, 1, 4, 7]),
    "regnety-400mf": ([48, 104, 208, 440], [1, 3, 6, 6]),
    "regnety-600mf": ([48, 112, 256, 608], [1, 3, 7, 4]),
    "regnety-800mf": ([64, 128, 320, 768], [1, 3, 8, 2]),
    "regnety-1.6gf": ([48, 120, 336, 888], [2, 6, 17, 2]),
    "regnety-3.2gf": ([72, 216, 576, 1512], [2, 5, 13, 1]),
}

# torchvision.models.regnet_y_* num_params (exact).
TORCHVISION_REGNETY_PARAMS = {
    "regnety-400mf": 4_344_144,
    "regnety-800mf": 6_432_512,
    "regnety-1.6gf": 11_202_430,
    "regnety-3.2gf": 19_436_338,
}
# pycls MODEL_ZOO.md params (M, one decimal).
PYCLS_REGNETY_PARAMS_M = {"regnety-200mf": 3.2, "regnety-400mf": 4.3, "regnety-600mf": 6.1,
                          "regnety-800mf": 6.3, "regnety-1.6gf": 11.2, "regnety-3.2gf": 19.4}


def regnet_param_count(stages, se_ratio=0.25, stem=32, classes=1000):
    """Parameters of a RegNetY (torchvision/pycls structure) with these stages."""
    n = 3 * stem * 9 + 2 * stem                                    # stem conv + BN
    w_in = stem
    for st in stages:
        for b in range(st.depth):
            w, se = st.width, int(round(se_ratio * w_in))
            n += w_in * w + 2 * w                                  # 1x1 a + BN
            n += w * st.group_width * 9 + 2 * w                    # 3x3 group conv b + BN
            n += w * se + se + se * w + w                          # SE
            n += w * w + 2 * w                                     # 1x1 c + BN
            if b == 0:
                n += w_in * w + 2 * w                              # projection shortcut + BN
            w_in = w
    return n + w_in * classes + classes


@pytest.mark.parametrize("name", list(REGNETY_STAGES))
def test_regnety_stage_widths_and_depths(name):
    stages = regnet_stages(REGNETY[name])
    assert [s.width for s in stages] == REGNETY_STAGES[name][0]
    assert [s.depth for s in stages] == REGNETY_STAGES[name][1]


def test_regnety_800mf_torchvision_rounding_gives_its_published_widths():
    # 136 and 776 sit halfway between multiples of the group width 16: pycls rounds to even
    # (128, 768), torchvision upwards (144, 784). Only this network has such a tie.
    stages = regnet_stages(REGNETY["regnety-800mf"], rounding="torchvision")
    assert [s.width for s in stages] == [64, 144, 320, 784]
    assert [s.depth for s in stages] == [1, 3, 8, 2]
    assert regnet_param_count(stages) == TORCHVISION_REGNETY_PARAMS["regnety-800mf"]
    for name in ("regnety-200mf", "regnety-400mf", "regnety-600mf", "regnety-1.6gf",
                 "regnety-3.2gf"):
        assert (regnet_stages(REGNETY[name], rounding="torchvision")
                == regnet_stages(REGNETY[name]))


@pytest.mark.parametrize("name", [n for n in TORCHVISION_REGNETY_PARAMS if n != "regnety-800mf"])
def test_regnety_parameter_count_matches_torchvision(name):
    assert regnet_param_count(regnet_stages(REGNETY[name])) == TORCHVISION_REGNETY_PARAMS[name]


@pytest.mark.parametrize("name", list(PYCLS_REGNETY_PARAMS_M))
def test_regnety_parameter_count_matches_pycls_model_zoo(name):
    params = regnet_param_count(regnet_stages(REGNETY[name]))
    assert round(params / 1e6, 1) == PYCLS_REGNETY_PARAMS_M[name]


def test_regnety_800mf_se_layers():
    layers = builtin_network("regnety-800mf").layers
    assert len(layers) == 14
    # Stem stride 2 (112), then every stage halves: 56, 28, 14, 7.
    by_stage = {}
    for layer in layers:
        by_stage.setdefault(layer.name.split(".")[0], set()).add((layer.height, layer.width))
    assert by_stage == {"s1": {(56, 56)}, "s2": {(28, 28)}, "s3": {(14, 14)}, "s4": {(7, 7)}}
    # SE hidden width = round(0.25 * block input width): the stem's 32, then the stage widths.
    hidden = {layer.name: layer.hidden for layer in layers}
    assert hidden["s1.b1"] == 8 and hidden["s2.b1"] == 16 and hidden["s2.b2"] == 32
    assert hidden["s3.b1"] == 32 and hidden["s4.b1"] == 80 and hidden["s4.b2"] == 192
    assert {layer.channels for layer in layers} == {64, 128, 320, 768}


# ---- EfficientNet --------------------------------------------------------------------------

TORCHVISION_EFFICIENTNET_PARAMS = {
    "efficientnet-b0": 5_288_548,
    "efficientnet-b1": 7_794_184,
    "efficientnet-b2": 9_109_994,
    "efficientnet-b3": 12_233_232,
}


def efficientnet_param_count(params, classes=1000):
    stem = round_filters(EFFICIENTNET_STEM, params.width_mult)
    n = 3 * stem * 9 + 2 * stem
    last = stem
    for b in efficientnet_blocks(params):
        mid = b.in_channels * b.expand
        if b.expand != 1:
            n += b.in_channels * mid + 2 * mid                     # expand 1x1 + BN
        se = max(1, int(b.in_channels * 0.25))
        n += mid * b.kernel ** 2 + 2 * mid                         # depthwise + BN
        n += mid * se + se + se * mid + mid                        # SE
        n += mid * b.out_channels + 2 * b.out_channels             # project 1x1 + BN
        last = b.out_channels
    head = round_filters(EFFICIENTNET_HEAD, params.width_mult)
    return n + last * head + 2 * head + head * classes + classes


@pytest.mark.parametrize("name", list(TORCHVISION_EFFICIENTNET_PARAMS))
def test_efficientnet_parameter_count_matches_torchvision(name):
    assert efficientnet_param_count(EFFICIENTNET[name]) == TORCHVISION_EFFICIENTNET_PARAMS[name]


def _stage_outputs(name):
    out = {}
    for b in efficientnet_blocks(EFFICIENTNET[name]):
        out.setdefault(b.name.split(".")[0], []).append(b.out_channels)
    return out


def test_efficientnet_stage_channels_and_depths():
    b0 = _stage_outputs("efficientnet-b0")
    assert [v[0] for v in b0.values()] == [16, 24, 40, 80, 112, 192, 320]
    assert [len(v) for v in b0.values()] == [1, 2, 2, 3, 3, 4, 1]
    b3 = _stage_outputs("efficientnet-b3")
    assert [v[0] for v in b3.values()] == [24, 32, 48, 96, 136, 232, 384]
    assert [len(v) for v in b3.values()] == [2, 3, 3, 5, 5, 6, 2]
    assert [len(builtin_network(f"efficientnet-b{i}").layers) for i in range(4)] == \
        [16, 23, 23, 26]


def test_efficientnet_se_shapes():
    layers = {layer.name: layer for layer in builtin_network("efficientnet-b0").layers}
    # Stage 1 (expand 1): SE on 32 channels at 112x112, hidden 32 // 4.
    assert (layers["s1.b1"].channels, layers["s1.b1"].height, layers["s1.b1"].hidden) == \
        (32, 112, 8)
    # A stride-2 block's SE follows its depthwise conv: 16*6 channels at 56x56, hidden 16 // 4.
    assert (layers["s2.b1"].channels, layers["s2.b1"].height, layers["s2.b1"].hidden) == \
        (96, 56, 4)
    assert (layers["s7.b1"].channels, layers["s7.b1"].height, layers["s7.b1"].hidden) == \
        (1152, 7, 48)
    # B3 at 300: 150, 75, 38, 19, 19, 10, 10 (stride 2 with "same" padding rounds up).
    sizes = {}
    for layer in builtin_network("efficientnet-b3").layers:
        sizes.setdefault(layer.name.split(".")[0], layer.height)
    assert list(sizes.values()) == [150, 75, 38, 19, 19, 10, 10]


def test_builtin_names_and_unknown_network():
    assert network_names() == [
        "regnety-200mf", "regnety-400mf", "regnety-600mf", "regnety-800mf", "regnety-1.6gf",
        "regnety-3.2gf", "efficientnet-b0", "efficientnet-b1", "efficientnet-b2",
        "efficientnet-b3", "efficientdet-d0", "efficientdet-d1", "efficientdet-d2",
        "mobilenetv3-large-lraspp", "mobilenetv3-small-lraspp"]
    with pytest.raises(ConfigError, match=r"'regnety-80mf'.*did you mean 'regnety-800mf'"):
        builtin_network("regnety-80mf")


# ---- user layer lists ---------------------------------------------------------------------

def test_csv_and_toml_layer_lists(tmp_path):
    csv_path = tmp_path / "net.csv"
    csv_path.write_text("# my network\nname, C, H, W, hidden\ns1, 64, 56, 56, 16\n\n"
                        "s2,128,28,28,32\n")
    net = load_layers(csv_path)
    assert net.name == "net"
    assert [(l.name, l.channels, l.height, l.width, l.hidden) for l in net.layers] == \
        [("s1", 64, 56, 56, 16), ("s2", 128, 28, 28, 32)]
    toml_path = tmp_path / "net.toml"
    toml_path.write_text('[[layer]]\nname = "s1"\nC = 64\nH = 56\nW = 56\nhidden = 16\n'
                         '[[layer]]\nname = "s2"\nC = 128\nH = 28\nW = 28\nhidden = 32\n')
    assert load_layers(toml_path).layers == net.layers


@pytest.mark.parametrize("rows, message", [
    ("a,64,56,56,16\nb,128,28,x,32\n", r"line 3 \(layer 'b'\): W = 'x' is not allowed; "
                                       r"allowed: a positive integer"),
    ("a,64,56,56,16\nb,0,28,28,32\n", r"line 3 \(layer 'b'\): C = '0' is not allowed"),
    ("a,64,56,56,-1\n", r"line 2 \(layer 'a'\): hidden = '-1' is not allowed"),
    ("a,64,56,56\n", r"line 2: 4 fields, the header has 5"),
    (",64,56,56,16\n", r"line 2: name = '' is not allowed; allowed: a non-empty string"),
])
def test_csv_bad_row_names_row_field_value_and_allowed(tmp_path, rows, message):
    path = tmp_path / "bad.csv"
    path.write_text("name,C,H,W,hidden\n" + rows)
    with pytest.raises(ConfigError, match=message):
        load_layers(path)


def test_csv_bad_header(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("name,C,H,W,hiden\na,1,1,1,1\n")
    with pytest.raises(ConfigError, match=r"line 1: unknown column 'hiden'; allowed: name, C"):
        load_layers(path)
    path.write_text("name,C,H,W\na,1,1,1\n")
    with pytest.raises(ConfigError, match=r"header lacks hidden"):
        load_layers(path)


@pytest.mark.parametrize("text, message", [
    ('[[layer]]\nname = "a"\nC = 8\nH = 4\nW = 4\nhidden = 2\n'
     '[[layer]]\nname = "b"\nC = 8.5\nH = 4\nW = 4\nhidden = 2\n',
     r"layer 2 \(layer 'b'\): C = 8.5 is not allowed; allowed: a positive integer"),
    ('[[layer]]\nname = "a"\nC = 8\nH = 4\nW = 4\n', r"layer 1 \(layer 'a'\): hidden is missing"),
    ('[[layer]]\nname = "a"\nC = 8\nH = 4\nW = 4\nhidden = 2\nstride = 2\n',
     r"layer 1: unknown key 'stride'"),
    ('layers = 3\n', r"expected \[\[layer\]\] tables only"),
    ('[[layer]\n', r"not valid TOML"),
])
def test_toml_bad_rows(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_layers(path)


def test_layer_file_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_layers(tmp_path / "missing.csv")
    (tmp_path / "net.txt").write_text("name,C,H,W,hidden\n")
    with pytest.raises(ConfigError, match=r"suffix '.txt'; allowed: .csv or .toml"):
        load_layers(tmp_path / "net.txt")
    (tmp_path / "empty.csv").write_text("name,C,H,W,hidden\n")
    with pytest.raises(ConfigError, match="lists no layer"):
        load_layers(tmp_path / "empty.csv")
