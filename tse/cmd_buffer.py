"""`tse buffer`: how much pipeline buffering TSE saves on a network, per SE layer and in total.

The network is a built-in one (--network, generated from its design parameters; see
--list-networks), a layer list (--layers FILE: CSV with header name,C,H,W,hidden or TOML with
[[layer]] tables) or a PyTorch model whose SE blocks are found by hooks (--model FILE: a .py
with build_model() or a torch.save'd model, run on --input-size). For one tile it reports the
paper's minimum buffering (SE: H*W*C, tile: th*tw*C), the strip FIFO of this project's
row-streaming unit (strip + excite latency) with P lanes and Q excite multipliers, the
multipliers that keep up with one beat per clock, and the excite compute. Buffers are in
elements of one byte. docs/buffer.md explains the model and compares it with the paper.

--block eca|srm builds every SE layer as tiled ECA or SRM instead (same C, H, W): the same
squeeze per tile, so the same paper's figures; the strip FIFO follows the block's excite
latency (each block's own schedule: ECA's with k adaptive from C, SRM's of
tse/rtl/srm_excite.py), and SRM's line accumulator also holds sums of squares (the S2
columns, in bits).
"""
from __future__ import annotations

import json
import re

from tse.ref_model.errors import ConfigError

DEFAULT_INPUT_SIZE = (3, 224, 224)
PLOT_SOURCE = "tse buffer"
PLOT_MARKER = b"tEXtSource\x00" + PLOT_SOURCE.encode()
"""The PNG text chunk that marks a plot as tse's own (so a later run may replace it)."""


def register(sub):
    p = sub.add_parser("buffer", help="SE vs TSE pipeline buffering of a network, per layer",
                       description=__doc__)
    source = p.add_mutually_exclusive_group()
    source.add_argument("--network", metavar="NAME",
                        help="a built-in network, e.g. regnety-800mf, efficientnet-b0")
    source.add_argument("--layers", metavar="FILE",
                        help="SE layer list: .csv (name,C,H,W,hidden) or .toml ([[layer]])")
    source.add_argument("--model", metavar="FILE",
                        help="PyTorch model: a .py defining build_model(), or a torch.save'd "
                             "model (runs the file's code: use only files you trust)")
    source.add_argument("--list-networks", action="store_true",
                        help="list the built-in networks and exit")
    p.add_argument("--input-size", metavar="CxHxW",
                   help="input of --model: CxHxW, HxW (3 channels) or N (3xNxN); "
                        "default 3x224x224")
    p.add_argument("--tile", default="7xW",
                   help="tile as <rows>x<cols>: 7xW (row strip), Hx7 (column strip), 7x7 "
                        "(patch), HxW (plain SE); clamped to each layer (default 7xW)")
    p.add_argument("--lanes", type=int, default=8,
                   help="lanes P: channels per stream beat of the unit (default 8)")
    p.add_argument("--excite-multipliers", type=int, metavar="Q",
                   help="excite multipliers per layer (default: per layer, the fewest that "
                        "keep up with one beat per clock)")
    p.add_argument("--excite-kernel", choices=("1x1", "3x1"), default="1x1",
                   help="excite convolutions: 1x1 (SE, default) or 3x1 across rows of tiles "
                        "(the paper's Appendix B): the unit then holds the two strips each "
                        "strip's gates look ahead to; the paper's figure counts the tile alone")
    p.add_argument("--block", default="se",
                   help="channel-attention block each layer is built as: se (default), eca "
                        "(its own excite schedule: k multipliers, k adaptive from C) or srm "
                        "(its own excite schedule, one channel a cycle; extra "
                        "line-accumulator storage for the sums of squares, in bits)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: network, tile, layers (per-layer rows) and "
                        "the totals se_buffer, tse_buffer, tse_stream_buffer, ...")
    p.add_argument("--plot", metavar="FILE",
                   help="also write a PNG bar chart: SE vs TSE per built-in network, and per "
                        "layer for this network")
    p.set_defaults(run=run)


def run(args):
    from tse.ref_model.buffers import plan_network
    from tse.ref_model.networks import builtin_network, network_names

    if args.list_networks:
        for name in network_names():
            net = builtin_network(name)
            print(f"{name:24s} {len(net.layers):3d} SE blocks  {net.source}")
        return 0
    network = _network(args)
    result = plan_network(network, args.tile, args.lanes, args.excite_multipliers,
                          args.excite_kernel, args.block)
    if args.plot:
        # The built-in networks in their order, this one in its place (or first if it is not
        # built in), so the chart puts the user's network among known ones.
        nets = [result if n == result.network else
                plan_network(builtin_network(n), args.tile, args.lanes, args.excite_multipliers,
                             args.excite_kernel, args.block)
                for n in network_names()]
        write_plot(result, nets if result.network in network_names() else [result, *nets],
                   args.plot)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(format_table(result))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


def _network(args):
    from tse.ref_model.networks import builtin_network, load_layers

    if args.input_size is not None and args.model is None:
        raise ConfigError("input-size: only --model takes an input size; built-in networks "
                          "run at their native resolution and layer lists give H and W")
    if args.network is not None:
        return builtin_network(args.network)
    if args.layers is not None:
        return load_layers(args.layers)
    if args.model is not None:
        from tse.quant.se_hooks import model_se_layers     # imports torch
        size = DEFAULT_INPUT_SIZE if args.input_size is None else parse_input_size(args.input_size)
        return model_se_layers(args.model, size)
    raise ConfigError("buffer: no network given; allowed: --network NAME, --layers FILE, "
                      "--model FILE or --list-networks")


def parse_input_size(text: str) -> tuple[int, int, int]:
    m = re.fullmatch(r"\s*(\d+)(?:\s*[xX]\s*(\d+))?(?:\s*[xX]\s*(\d+))?\s*", text)
    numbers = [int(g) for g in m.groups() if g is not None] if m else []
    if not numbers or min(numbers) < 1:
        raise ConfigError(f"input-size: {text!r} is not allowed; allowed: CxHxW, HxW or N "
                          "with positive integers, e.g. 3x224x224")
    if len(numbers) == 1:
        return (3, numbers[0], numbers[0])
    if len(numbers) == 2:
        return (3, *numbers)
    return tuple(numbers)


# ---- presentation -------------------------------------------------------------------------

_COLUMNS = (  # (header, width, value of a LayerPlan)
    ("layer", -10, lambda r: r.name),
    ("C", 5, lambda r: r.channels),
    ("HxW", 8, lambda r: f"{r.height}x{r.width}"),
    ("hidden", 6, lambda r: r.hidden),
    ("tile", 7, lambda r: f"{r.tile_rows}x{r.tile_cols}"),
    ("tiles", 5, lambda r: r.tiles),
    ("SE buf", 10, lambda r: f"{r.se_buffer:,}"),
    ("TSE buf", 10, lambda r: f"{r.tse_buffer:,}"),
    ("stream buf", 10, lambda r: f"{r.tse_stream_buffer:,}"),
    ("Q", 4, lambda r: r.excite_multipliers),
    ("latency", 7, lambda r: r.excite_latency_cycles),
    ("excite MACs", 11, lambda r: f"{r.tse_excite_macs:,}"),
)
_BLOCK_COLUMNS = {
    "se": (),
    "eca": (("k", 3, lambda r: r.eca_taps),),
    "srm": (("S2 bits", 7, lambda r: r.square_sum_bits),
            ("S2 storage", 10, lambda r: f"{r.square_sum_storage_bits:,}")),
}
"""Per block, the columns after _COLUMNS: ECA's taps; SRM's sum of squares (bits per tile
column and channel) and the line accumulator's extra storage for them (bits)."""
LATENCY_NOTES = {
    "se": "",
    "eca": "excite latency: ECA's schedule (tse.ref_model.plan.eca_latency_cycles), Q = k",
    "srm": "excite latency: SRM's schedule (tse.ref_model.plan.srm_latency_cycles), Q = 2 "
           "(the FC's products); S2: the sums of squares SRM's line accumulator adds, in bits",
}


def _cell(value, width: int) -> str:
    return f"{value:<{-width}}" if width < 0 else f"{value:>{width}}"


def format_table(result) -> str:
    t = result.totals
    block = result.block
    columns = _COLUMNS + _BLOCK_COLUMNS[block]
    q = ("the fewest per layer that keep up" if result.multipliers is None
         else f"{result.multipliers} per layer")
    lines = [f"{result.network}: {result.source}",
             f"block {block}, tile {result.tile}, {result.excite_kernel} excite, "
             f"{result.lanes} lanes, excite multipliers Q: "
             f"{ {'eca': 'k per layer', 'srm': '2 per layer'}.get(block, q)}; buffers in "
             "elements (1 byte each)",
             *([LATENCY_NOTES[block]] if LATENCY_NOTES[block] else []),
             "",
             "  ".join(_cell(h, w) for h, w, _ in columns)]
    for row in result.layers:
        mark = "  (stalls: Q too small)" if not row.keeps_up else ""
        lines.append("  ".join(_cell(f(row), w) for _, w, f in columns) + mark)
    total = {"layer": "total", "SE buf": f"{t['se_buffer']:,}", "TSE buf": f"{t['tse_buffer']:,}",
             "stream buf": f"{t['tse_stream_buffer']:,}", "Q": t["excite_multipliers"],
             "excite MACs": f"{t['tse_excite_macs']:,}",
             "S2 storage": f"{t['square_sum_storage_bits']:,}"}
    lines.append("  ".join(_cell(total.get(h, ""), w) for h, w, _ in columns))
    lines += [
        "",
        f"paper's minimum buffering: SE {t['se_buffer'] / 1e6:.3f}M, TSE {result.tile} "
        f"{t['tse_buffer'] / 1e6:.3f}M ({100 * (1 - t['tse_buffer'] / t['se_buffer']):.1f}% "
        "less)",
        f"row-streaming unit (strip{' + 2 lookahead strips' if result.excite_kernel == '3x1' else ''}"
        f" + excite latency): TSE {t['tse_stream_buffer'] / 1e6:.3f}M, "
        f"SE on the same unit {t['se_stream_buffer'] / 1e6:.3f}M",
        (f"excite compute: SE {t['se_excite_macs']:,} MACs, TSE {t['tse_excite_macs']:,} MACs "
         if block == "se" else
         f"excite compute: {block.upper()} on the whole frame {t['se_excite_macs']:,} MACs, "
         f"tiled {t['tse_excite_macs']:,} MACs ")
        + f"(+{t['excite_macs_added']:,})",
        *([f"SRM's sums of squares: {t['square_sum_storage_bits']:,} bits of line accumulator "
           "beside the tile sums"] if block == "srm" else []),
    ]
    return "\n".join(lines)


def write_plot(result, nets, path) -> None:
    """Two bar charts: the totals of nets (result among them, its name in bold) and the layers
    of result. Bars: the paper's minimum for SE and TSE, then SE and TSE on this project's
    row-streaming unit (strip + excite latency)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from tse.ref_model.artifacts import write_file

    series = (("SE: H·W·C (paper)", "se_buffer", "tab:red"),
              (f"TSE {result.tile}: th·tw·C (paper)", "tse_buffer", "tab:blue"),
              ("SE on the row-streaming unit", "se_stream_buffer", "lightsalmon"),
              (f"TSE {result.tile} on the row-streaming unit", "tse_stream_buffer", "tab:cyan"))
    fig, (ax_net, ax_layer) = plt.subplots(
        1, 2, figsize=(16, 5.5),
        gridspec_kw={"width_ratios": [len(nets), max(len(result.layers), 4)]})
    width = 0.8 / len(series)
    for ax, labels, rows, scale, unit in (
            (ax_net, [n.network for n in nets], [n.totals for n in nets], 1e6, "M elements"),
            (ax_layer, [r.name for r in result.layers],
             [r.to_dict() for r in result.layers], 1e3, "k elements")):
        x = np.arange(len(labels))
        for i, (label, key, color) in enumerate(series):
            ax.bar(x + (i - (len(series) - 1) / 2) * width, [row[key] / scale for row in rows],
                   width, label=label, color=color)
        ax.set_xticks(x, labels, rotation=60, ha="right", fontsize=8)
        ax.set_ylabel(f"buffer ({unit}, 1 byte each)")
        ax.grid(axis="y", alpha=0.3)
    for tick in ax_net.get_xticklabels():
        if tick.get_text() == result.network:
            tick.set_fontweight("bold")
    ax_net.set_title(f"Total over SE blocks, per network (tile {result.tile})")
    ax_layer.set_title(f"{result.network}: per SE block")
    ax_net.legend(fontsize=8)
    fig.tight_layout()
    try:
        write_file(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png",
                                                 metadata={"Source": PLOT_SOURCE}),
                   PLOT_MARKER, "plot")
    finally:
        plt.close(fig)
