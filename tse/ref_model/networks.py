"""SE layer tables of real networks, for the buffer planner (`tse buffer`).

This module owns the list of squeeze-and-excite blocks of a network: for each SE block its
channels C, the height H and width W of the feature map it gates, and its hidden (excite) width.
The built-in tables are generated from the networks' published design parameters, not typed in:

- RegNetY (Radosavovic et al. 2020, pycls): block widths from the linear rule
  u_j = w0 + wa * j quantized in log space with step wm and rounded to multiples of 8, grouped
  into stages, then rounded to a multiple of the group width as pycls does (the paper trained
  with pycls; torchvision rounds ties the other way, which changes RegNetY-800MF only, see
  _round_to_group). Every block is a bottleneck with
  ratio 1 whose SE sits after the 3x3 group conv (stride 2 in a stage's first block), so it
  gates the stage's output width at the stage's output resolution; its hidden width is
  round(0.25 * block input width) (pycls `w_se = round(w_in * se_r)`; torchvision the same).
- EfficientNet B0-B3 (Tan & Le 2019): the seven B0 MBConv stages scaled by the width multiplier
  (round_filters, multiples of 8) and the depth multiplier (round_repeats = ceil); the SE
  sits after the depthwise conv and gates the expanded width (block input x expand ratio) at
  the depthwise conv's output resolution; its hidden width is max(1, int(0.25 * block input
  width)).

- EfficientDet D0-D2 (Tan et al. 2020; paper Tables 5 and B2): the EfficientNet B0-B2 backbones
  at 512, 640, 768 (the BiFPN and heads have no SE).
- MobileNetV3-Large and -Small with the LR-ASPP segmentation head (Howard et al. 2019; paper
  Table 6) at Cityscapes' 1024x2048, as torchvision's lraspp_mobilenet_v3_* builds them: SE after
  the depthwise conv at the expanded width, hidden make_divisible(expanded // 4, 8), the last
  stage dilated (stride 1, so it stays at 1/16). The LR-ASPP head's own sigmoid gate has no
  hidden layer and is computed from another tensor: not an SE block of this unit, not listed.

Spatial sizes follow the strides from the input resolution: every stride-2 conv (odd kernel,
"same" padding) maps n to ceil(n / 2); both networks start with a stride-2 stem.

User tables come from CSV or TOML files (fields name, C, H, W, hidden); each row is validated
and a bad one is a ConfigError naming the row, the field, the value and what is allowed.
Never imports torch (tse.quant.se_hooks finds SE blocks in a PyTorch model).
"""
from __future__ import annotations

import csv
import difflib
import math
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import ConfigError, InputError


@dataclass(frozen=True)
class SELayer:
    """One SE block: it gates a C x H x W feature map through a hidden width of `hidden`."""

    name: str
    channels: int
    height: int
    width: int
    hidden: int


@dataclass(frozen=True)
class Network:
    """The SE blocks of a network, in forward order."""

    name: str
    layers: tuple[SELayer, ...]
    source: str
    """Where the table came from (design parameters, a file, a model)."""


def _conv_out(size: int, stride: int) -> int:
    """Output size of an odd-kernel conv with "same" padding (k // 2) and this stride."""
    return math.ceil(size / stride)


# ---- RegNetY -------------------------------------------------------------------------------

@dataclass(frozen=True)
class RegNetParams:
    """The RegNet design parameters (pycls REGNET.* keys)."""

    depth: int
    w0: int
    wa: float
    wm: float
    group_width: int
    se_ratio: float = 0.25
    stem_width: int = 32
    quantum: int = 8


@dataclass(frozen=True)
class RegNetStage:
    width: int
    depth: int
    group_width: int


# pycls configs/dds_baselines/regnety/RegNetY-*.yaml (also torchvision regnet_y_*).
REGNETY = {
    "regnety-200mf": RegNetParams(depth=13, w0=24, wa=36.44, wm=2.49, group_width=8),
    "regnety-400mf": RegNetParams(depth=16, w0=48, wa=27.89, wm=2.09, group_width=8),
    "regnety-600mf": RegNetParams(depth=15, w0=48, wa=32.54, wm=2.32, group_width=16),
    "regnety-800mf": RegNetParams(depth=14, w0=56, wa=38.84, wm=2.40, group_width=16),
    "regnety-1.6gf": RegNetParams(depth=27, w0=48, wa=20.71, wm=2.65, group_width=24),
    "regnety-3.2gf": RegNetParams(depth=21, w0=80, wa=42.63, wm=2.66, group_width=24),
}
REGNET_RESOLUTION = 224


def regnet_stages(p: RegNetParams, rounding: str = "pycls") -> list[RegNetStage]:
    """Stage widths, depths and group widths from the RegNet rule (pycls generate_regnet and
    adjust_block_compatibility, bottleneck ratio 1). The paper trained its RegNets with pycls,
    so pycls's rounding is the default; "torchvision" gives torchvision's regnet_y_* widths."""
    block_widths = []
    for j in range(p.depth):
        u = p.w0 + p.wa * j                                    # linear width rule
        k = round(math.log(u / p.w0) / math.log(p.wm))         # step in log space
        block_widths.append(int(round(p.w0 * p.wm ** k / p.quantum)) * p.quantum)
    stages: list[list[int]] = []                               # [width, depth]
    for w in block_widths:                                     # widths never decrease
        if stages and stages[-1][0] == w:
            stages[-1][1] += 1
        else:
            stages.append([w, 1])
    result = []
    for w, d in stages:
        # A group conv needs width divisible by the group width: narrow the groups for a
        # narrow stage, then round the width to a multiple of the group width.
        g = min(p.group_width, w)
        result.append(RegNetStage(width=_round_to_group(w, g, rounding), depth=d, group_width=g))
    return result


def _round_to_group(width: int, group: int, rounding: str) -> int:
    """Nearest multiple of the group width. pycls (quantize_float) uses Python's round, which
    takes a tie to the even multiple; torchvision (_make_divisible) takes it upwards and never
    goes 10 % below. They differ only on ties: RegNetY-800MF's 136 and 776 with groups of 16
    are 128 and 768 in pycls but 144 and 784 in torchvision."""
    if rounding == "pycls":
        return max(group, int(round(width / group) * group))
    if rounding == "torchvision":
        return make_divisible(width, group)
    raise ValueError(f"rounding: {rounding!r}; allowed: pycls, torchvision")


def regnet_se_layers(p: RegNetParams, resolution: int = REGNET_RESOLUTION,
                     rounding: str = "pycls") -> list[SELayer]:
    size = _conv_out(resolution, 2)                            # stem: 3x3 conv, stride 2
    width_in = p.stem_width
    layers = []
    for s, stage in enumerate(regnet_stages(p, rounding), start=1):
        size = _conv_out(size, 2)                              # first block's 3x3 has stride 2
        for b in range(1, stage.depth + 1):
            layers.append(SELayer(f"s{s}.b{b}", stage.width, size, size,
                                  int(round(p.se_ratio * width_in))))
            width_in = stage.width
    return layers


# ---- EfficientNet --------------------------------------------------------------------------

@dataclass(frozen=True)
class MBConvStage:
    """One stage of EfficientNet-B0 (Tan & Le 2019, Table 1)."""

    expand: int
    kernel: int
    stride: int
    in_channels: int
    out_channels: int
    repeats: int


EFFICIENTNET_B0_STAGES = (
    MBConvStage(expand=1, kernel=3, stride=1, in_channels=32, out_channels=16, repeats=1),
    MBConvStage(expand=6, kernel=3, stride=2, in_channels=16, out_channels=24, repeats=2),
    MBConvStage(expand=6, kernel=5, stride=2, in_channels=24, out_channels=40, repeats=2),
    MBConvStage(expand=6, kernel=3, stride=2, in_channels=40, out_channels=80, repeats=3),
    MBConvStage(expand=6, kernel=5, stride=1, in_channels=80, out_channels=112, repeats=3),
    MBConvStage(expand=6, kernel=5, stride=2, in_channels=112, out_channels=192, repeats=4),
    MBConvStage(expand=6, kernel=3, stride=1, in_channels=192, out_channels=320, repeats=1),
)
EFFICIENTNET_STEM = 32
EFFICIENTNET_HEAD = 1280


@dataclass(frozen=True)
class EfficientNetParams:
    width_mult: float
    depth_mult: float
    resolution: int
    se_ratio: float = 0.25


EFFICIENTNET = {
    "efficientnet-b0": EfficientNetParams(width_mult=1.0, depth_mult=1.0, resolution=224),
    "efficientnet-b1": EfficientNetParams(width_mult=1.0, depth_mult=1.1, resolution=240),
    "efficientnet-b2": EfficientNetParams(width_mult=1.1, depth_mult=1.2, resolution=260),
    "efficientnet-b3": EfficientNetParams(width_mult=1.2, depth_mult=1.4, resolution=300),
}


@dataclass(frozen=True)
class MBConvBlock:
    name: str
    in_channels: int
    out_channels: int
    expand: int
    kernel: int
    stride: int


def make_divisible(value: float, divisor: int) -> int:
    """Nearest multiple of divisor, ties upwards, at least divisor and never 10 % below value
    (TensorFlow EfficientNet's round_filters, torchvision's _make_divisible)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def round_filters(channels: int, width_mult: float) -> int:
    """EfficientNet's channel scaling to multiples of 8."""
    return make_divisible(channels * width_mult, 8)


def round_repeats(repeats: int, depth_mult: float) -> int:
    return int(math.ceil(depth_mult * repeats))


def efficientnet_blocks(p: EfficientNetParams) -> list[MBConvBlock]:
    blocks = []
    for s, stage in enumerate(EFFICIENTNET_B0_STAGES, start=1):
        c_in = round_filters(stage.in_channels, p.width_mult)
        c_out = round_filters(stage.out_channels, p.width_mult)
        for b in range(1, round_repeats(stage.repeats, p.depth_mult) + 1):
            first = b == 1                       # only a stage's first block strides / widens
            blocks.append(MBConvBlock(f"s{s}.b{b}", c_in if first else c_out, c_out,
                                      stage.expand, stage.kernel, stage.stride if first else 1))
    return blocks


def efficientnet_se_layers(p: EfficientNetParams) -> list[SELayer]:
    size = _conv_out(p.resolution, 2)                          # stem: 3x3 conv, stride 2
    layers = []
    for blk in efficientnet_blocks(p):
        size = _conv_out(size, blk.stride)                     # the depthwise conv strides
        layers.append(SELayer(blk.name, blk.in_channels * blk.expand, size, size,
                              max(1, int(blk.in_channels * p.se_ratio))))
    return layers


# ---- MobileNetV3 (LR-ASPP segmentation, paper Table 6) --------------------------------------

@dataclass(frozen=True)
class Bneck:
    """One bottleneck: input, depthwise kernel, expanded and output width, SE or not, stride."""

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    se: bool
    stride: int


# torchvision models/mobilenetv3.py _mobilenet_v3_conf (reduced_tail=False); the last three
# rows of each are the "last stage" that dilated=True keeps at stride 1.
MOBILENETV3 = {
    "large": (
        Bneck(16, 3, 16, 16, False, 1), Bneck(16, 3, 64, 24, False, 2),
        Bneck(24, 3, 72, 24, False, 1), Bneck(24, 5, 72, 40, True, 2),
        Bneck(40, 5, 120, 40, True, 1), Bneck(40, 5, 120, 40, True, 1),
        Bneck(40, 3, 240, 80, False, 2), Bneck(80, 3, 200, 80, False, 1),
        Bneck(80, 3, 184, 80, False, 1), Bneck(80, 3, 184, 80, False, 1),
        Bneck(80, 3, 480, 112, True, 1), Bneck(112, 3, 672, 112, True, 1),
        Bneck(112, 5, 672, 160, True, 2), Bneck(160, 5, 960, 160, True, 1),
        Bneck(160, 5, 960, 160, True, 1),
    ),
    "small": (
        Bneck(16, 3, 16, 16, True, 2), Bneck(16, 3, 72, 24, False, 2),
        Bneck(24, 3, 88, 24, False, 1), Bneck(24, 5, 96, 40, True, 2),
        Bneck(40, 5, 240, 40, True, 1), Bneck(40, 5, 240, 40, True, 1),
        Bneck(40, 5, 120, 48, True, 1), Bneck(48, 5, 144, 48, True, 1),
        Bneck(48, 5, 288, 96, True, 2), Bneck(96, 5, 576, 96, True, 1),
        Bneck(96, 5, 576, 96, True, 1),
    ),
}
LAST_STAGE_BLOCKS = 3
LAST_CONV_SE = {"small": 576}
"""The final 1x1 conv that the MobileNetV3 paper's own Table 2 marks with SE (the Small's
576-channel conv; its Table 1 marks none on the Large). torchvision and most implementations
leave it out ("refer to paper Table2, but I think this is a mistake", a common PyTorch port);
`last_conv_se` counts it, for the paper's arithmetic in docs/buffer.md (Table 6)."""
CITYSCAPES = (1024, 2048)
"""Height x width of a Cityscapes frame (the paper's 1024x2048 single-scale evaluation)."""


def mobilenetv3_se_layers(arch: str, height: int, width: int, dilated: bool = True,
                          se_at_block_input: bool = False,
                          last_conv_se: bool = False) -> list[SELayer]:
    """The SE blocks of MobileNetV3-<arch> on a height x width input, in forward order.

    dilated=False (the classification backbone) and se_at_block_input=True (each SE counted at
    its block's input resolution, before the depthwise conv's stride) and last_conv_se (an SE
    on the final 1x1 conv where the MobileNetV3 paper's table marks one: LAST_CONV_SE) exist
    only to show the paper's arithmetic next to this table (docs/buffer.md, Table 6)."""
    blocks = MOBILENETV3[arch]
    h, w = _conv_out(height, 2), _conv_out(width, 2)           # stem: 3x3 conv, stride 2
    layers = []
    for i, blk in enumerate(blocks, start=1):
        stride = 1 if dilated and i > len(blocks) - LAST_STAGE_BLOCKS else blk.stride
        h_in, w_in = h, w
        h, w = _conv_out(h, stride), _conv_out(w, stride)
        if blk.se:
            sh, sw = (h_in, w_in) if se_at_block_input else (h, w)
            layers.append(SELayer(f"b{i}", blk.expanded, sh, sw,
                                  make_divisible(blk.expanded // 4, 8)))
    if last_conv_se and arch in LAST_CONV_SE:
        c = LAST_CONV_SE[arch]
        layers.append(SELayer("conv", c, h, w, make_divisible(c // 4, 8)))
    return layers


# ---- registry -----------------------------------------------------------------------------

EFFICIENTDET = {
    "efficientdet-d0": ("efficientnet-b0", 512),
    "efficientdet-d1": ("efficientnet-b1", 640),
    "efficientdet-d2": ("efficientnet-b2", 768),
}
"""EfficientDet's backbone and input size (Tan et al. 2020, Table 1)."""
MOBILENETV3_LRASPP = {
    "mobilenetv3-large-lraspp": "large",
    "mobilenetv3-small-lraspp": "small",
}


def network_names() -> list[str]:
    return [*REGNETY, *EFFICIENTNET, *EFFICIENTDET, *MOBILENETV3_LRASPP]


def builtin_network(name: str) -> Network:
    """A built-in network by name (see network_names())."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key in REGNETY:
        p = REGNETY[key]
        return Network(key, tuple(regnet_se_layers(p)),
                       f"RegNetY at {REGNET_RESOLUTION}x{REGNET_RESOLUTION} from depth={p.depth}"
                       f" w0={p.w0} wa={p.wa} wm={p.wm} group_width={p.group_width}")
    if key in EFFICIENTNET:
        p = EFFICIENTNET[key]
        return Network(key, tuple(efficientnet_se_layers(p)),
                       f"EfficientNet-B0 blocks at {p.resolution}x{p.resolution}, width x"
                       f"{p.width_mult}, depth x{p.depth_mult}")
    if key in EFFICIENTDET:
        backbone, resolution = EFFICIENTDET[key]
        p = replace(EFFICIENTNET[backbone], resolution=resolution)
        return Network(key, tuple(efficientnet_se_layers(p)),
                       f"{backbone} backbone of {key} at {resolution}x{resolution} (the BiFPN "
                       "and heads have no SE)")
    if key in MOBILENETV3_LRASPP:
        arch = MOBILENETV3_LRASPP[key]
        h, w = CITYSCAPES
        return Network(key, tuple(mobilenetv3_se_layers(arch, h, w)),
                       f"MobileNetV3-{arch.capitalize()} backbone of LR-ASPP (torchvision, "
                       f"dilated last stage) at {h}x{w}")
    near = difflib.get_close_matches(str(key), network_names(), n=1)
    hint = f" (did you mean {near[0]!r}?)" if near else ""
    raise ConfigError(f"network: {name!r} is not a built-in network{hint}; "
                      f"allowed: {', '.join(network_names())}")


# ---- user layer lists ---------------------------------------------------------------------

LAYER_FIELDS = ("name", "C", "H", "W", "hidden")
_NUMERIC = {"C": "channels", "H": "height", "W": "width", "hidden": "hidden"}


def load_layers(path: str | Path) -> Network:
    """A user's SE layer list from a .csv (header: name,C,H,W,hidden) or .toml
    ([[layer]] tables with those keys) file."""
    path = Path(path)
    if path.suffix.lower() not in (".csv", ".toml"):
        raise ConfigError(f"layers: {str(path)!r} has suffix {path.suffix!r}; "
                          "allowed: .csv or .toml")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise InputError(f"layers: file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"layers: cannot read {str(path)!r}: {e}") from None
    rows = _csv_rows(text, path) if path.suffix.lower() == ".csv" else _toml_rows(text, path)
    layers = tuple(_layer_from_row(row, where, path) for where, row in rows)
    if not layers:
        raise ConfigError(f"layers: {str(path)!r} lists no layer; allowed: one or more rows "
                          f"with {', '.join(LAYER_FIELDS)}")
    return Network(path.stem, layers, f"layer list {path}")


def _csv_rows(text: str, path: Path):
    """(where, row dict) per data line; blank lines and lines starting with # are skipped."""
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.lstrip().startswith("#")]
    if not lines:
        return []
    header_line, header = lines[0][0], next(csv.reader([lines[0][1]]))
    canonical = {f.lower(): f for f in LAYER_FIELDS}
    fields = []
    for col in header:
        key = canonical.get(col.strip().lower())
        if key is None:
            raise ConfigError(f"{path}: line {header_line}: unknown column {col.strip()!r}; "
                              f"allowed: {', '.join(LAYER_FIELDS)}")
        fields.append(key)
    missing = [f for f in LAYER_FIELDS if f not in fields]
    if missing:
        raise ConfigError(f"{path}: line {header_line}: the header lacks "
                          f"{', '.join(missing)}; allowed header: {','.join(LAYER_FIELDS)}")
    rows = []
    for n, line in lines[1:]:
        values = next(csv.reader([line]))
        if len(values) != len(fields):
            raise ConfigError(f"{path}: line {n}: {len(values)} fields, the header has "
                              f"{len(fields)}; allowed: {','.join(fields)}")
        rows.append((f"line {n}", dict(zip(fields, (v.strip() for v in values)))))
    return rows


def _toml_rows(text: str, path: Path):
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    unknown = [k for k in data if k != "layer"]
    tables = data.get("layer")
    if unknown or not isinstance(tables, list):
        raise ConfigError(f"{path}: expected [[layer]] tables only, found "
                          f"{', '.join(repr(k) for k in (unknown or ['layer']))}; allowed: "
                          f"[[layer]] tables with keys {', '.join(LAYER_FIELDS)}")
    rows = []
    for n, table in enumerate(tables, start=1):
        extra = [k for k in table if k not in LAYER_FIELDS]
        if extra:
            raise ConfigError(f"{path}: layer {n}: unknown key {extra[0]!r}; "
                              f"allowed: {', '.join(LAYER_FIELDS)}")
        rows.append((f"layer {n}", table))
    return rows


def _layer_from_row(row: dict, where: str, path: Path) -> SELayer:
    name = row.get("name")
    label = f"{path}: {where}" + (f" (layer {name!r})" if isinstance(name, str) and name else "")
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{label}: name = {name!r} is not allowed; allowed: a non-empty string")
    values = {}
    for field, attr in _NUMERIC.items():
        raw = row.get(field)
        values[attr] = _positive_int(raw)
        if values[attr] is None:
            shown = "is missing" if raw is None else f"= {raw!r} is not allowed"
            raise ConfigError(f"{label}: {field} {shown}; allowed: a positive integer")
    return SELayer(name=name.strip(), **values)


def _positive_int(raw) -> int | None:
    """The value as a positive int (from an int or a decimal string), else None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str) and raw.strip().isdigit():
        raw = int(raw)
    return raw if isinstance(raw, int) and raw >= 1 else None
