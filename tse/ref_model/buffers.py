"""What TSE saves on a network: the buffer planner's model, per SE layer and in total.

For every SE layer (tse.ref_model.networks.SELayer) and one tile shape this module computes:

- the paper's minimum pipeline buffering (Section 3.2), in elements: SE holds the whole
  feature map, H*W*C; a TSE tile th x tw holds th*tw*C (row strip k*W*C, column strip H*k*C,
  patch k*k*C). Summed over a network's SE layers this is the paper's 'Buffer' column.
- the buffer of this project's row-streaming unit: its strip FIFO must hold a strip of th rows
  plus the excite latency (tse.ref_model.plan, the formulas the RTL configuration uses), with P
  lanes and Q excite multipliers. A row-streaming unit always buffers whole rows, so a column
  strip (th = H) costs as much as SE and a patch costs a k-row strip, not k*k*C.
- the excite multipliers the unit needs to keep up with one beat per clock;
- the excite compute: SE runs the excite (two 1x1 convs, 2*C*hidden MACs) once per frame,
  TSE once per tile.
- with the paper's 3x1 excite (Appendix B, excite_kernel "3x1"), both excite convolutions read
  three rows of tiles, so a strip's gates wait for the pooled values of the two strips after it:
  the unit holds those strips too (plan.lookahead_strips), and every tile's excite costs three
  times the MACs. The paper's figure (tse_buffer) still counts the tile alone.
- other blocks (issue 18; block "eca" or "srm" in place of each SE layer, same C, H, W): they
  squeeze per tile like SE, so the paper's figures are the same and the strip FIFO is the
  strip plus the block's excite latency. ECA's is its own schedule (plan.eca_latency_cycles:
  k multipliers, one output channel a cycle, k adaptive from C); SRM has no schedule yet and
  takes SE's excite latency for the layer as its estimate (excite_latency_basis says which).
  SRM's line accumulator also holds every channel's sum of squares per tile column
  (attention_widths.square_sum_bits of the tile's elements): square_sum_storage_bits. Excite
  MACs are per tile: SE 2*C*hidden, ECA k*C, SRM 2*C (the channel-wise FC).

Tiles are written as for TSEConfig ("7xW", "Hx3", "7x7", "HxW"), but a planner applies one tile
to layers of every size, so a tile larger than a layer is clamped to it (a 7xW strip on a
4x4 layer is the whole 4x4 frame) instead of being rejected.

Elements are 8-bit activation codes, so elements and bytes are the same number.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from . import plan
from .attention_widths import square_sum_bits
from .config import BLOCKS, eca_kernel_size, parse_tile, tiling_kind
from .errors import ConfigError
from .networks import Network, SELayer

BYTES_PER_ELEMENT = 1
"""8-bit activations (docs/architecture: integer codes throughout)."""

_UNBOUNDED = 1 << 30
"""A frame size no tile number reaches: parse_tile then only checks the syntax."""
SRM_FC_MULTIPLIERS = 2
"""The Q column of an SRM layer: its excite issues one channel a cycle through the
channel-wise FC's two products (tse/rtl/srm_excite.py; its deviation units run per lane)."""


@dataclass(frozen=True)
class PlannerTile:
    """A tile as written by the user; rows/cols None mean the whole frame (H or W)."""

    spec: str
    rows: int | None
    cols: int | None

    def resolve(self, height: int, width: int) -> tuple[int, int]:
        """The tile on a height x width layer, clamped to the frame."""
        return (height if self.rows is None else min(self.rows, height),
                width if self.cols is None else min(self.cols, width))


def parse_planner_tile(spec: str) -> PlannerTile:
    """Validate a tile once for all layers (same syntax as TSEConfig's tile)."""
    try:
        rows, cols = parse_tile(spec, _UNBOUNDED, _UNBOUNDED)
    except ConfigError:
        raise ConfigError(f"tile: {spec!r} is not allowed; allowed: '<rows>x<cols>' with rows "
                          "a positive integer or H and cols a positive integer or W, e.g. "
                          "'7xW', 'Hx3', '7x7', 'HxW' (a tile larger than a layer is clamped "
                          "to it)") from None
    return PlannerTile(spec.strip(), None if rows == _UNBOUNDED else rows,
                       None if cols == _UNBOUNDED else cols)


@dataclass(frozen=True)
class LayerPlan:
    """One SE layer under one tile; every buffer is in elements (= bytes)."""

    name: str
    channels: int
    height: int
    width: int
    hidden: int
    tile_rows: int
    tile_cols: int
    tiles_y: int
    tiles_x: int
    tiles: int
    tiling: str
    excite_kernel: str
    se_buffer: int
    """Paper's minimum for SE: H*W*C."""
    tse_buffer: int
    """Paper's minimum for the tile: th*tw*C."""
    excite_multipliers: int
    """Q the stream figures below are computed with."""
    full_throughput_multipliers: int
    """Fewest Q whose excite latency fits in one strip time."""
    strip_beats: int
    excite_latency_cycles: int
    tse_stream_beats: int
    """Strip FIFO depth in beats for no input stall: strip (+ its lookahead strips) + excite
    latency."""
    tse_stream_buffer: int
    """The same in elements (beats x P)."""
    se_stream_buffer: int
    """The same unit with the whole frame as the tile (plain SE), with the same Q."""
    keeps_up: bool
    """False when Q is too small: the excite latency exceeds a strip time and the input stalls."""
    se_excite_macs: int
    tse_excite_macs: int
    block: str = "se"
    eca_taps: int = 0
    """ECA's k (adaptive from C); 0 for other blocks."""
    excite_latency_basis: str = "se"
    """Whose schedule excite_latency_cycles is: "se", "eca" or "srm" (each block's own,
    tse.ref_model.plan)."""
    square_sum_bits: int = 0
    """SRM: bits of one sum of squares (per tile column and channel); 0 for other blocks."""
    square_sum_storage_bits: int = 0
    """SRM: the line accumulator's extra storage, tiles_x * C (streamed) * square_sum_bits."""

    @property
    def excite_macs_added(self) -> int:
        return self.tse_excite_macs - self.se_excite_macs

    def to_dict(self) -> dict:
        return {**asdict(self), "excite_macs_added": self.excite_macs_added}



def plan_layer(layer: SELayer, tile: PlannerTile, lanes: int = 8,
               multipliers: int | None = None, excite_kernel: str = "1x1",
               block: str = "se") -> LayerPlan:
    """The buffers of one layer; multipliers None means the fewest that keep up (per layer;
    ECA's excite always has k)."""
    taps = plan.EXCITE_KERNEL_TAPS[excite_kernel]
    th, tw = tile.resolve(layer.height, layer.width)
    tiles_y, tiles_x = math.ceil(layer.height / th), math.ceil(layer.width / tw)
    # The unit needs P | C (TSEConfig): a layer with other C streams zero-padded channels.
    c_stream = math.ceil(layer.channels / lanes) * lanes
    hidden, width = layer.hidden, layer.width
    strip = plan.strip_beats(th, width, c_stream, lanes)
    k = eca_kernel_size(layer.channels) if block == "eca" else 0
    if block == "eca":
        needed = q = k
        latency = plan.eca_latency_cycles(c_stream, k, tiles_x)
        depth = plan.eca_full_throughput_depth(th, width, c_stream, k, tiles_x, lanes)
        se_depth = plan.eca_full_throughput_depth(layer.height, width, c_stream, k, 1, lanes)
    elif block == "srm":                    # SRM's schedule: the FC's two products a cycle
        needed = q = SRM_FC_MULTIPLIERS
        latency = plan.srm_latency_cycles(c_stream, tiles_x)
        depth = plan.srm_full_throughput_depth(th, width, c_stream, tiles_x, lanes)
        se_depth = plan.srm_full_throughput_depth(layer.height, width, c_stream, 1, lanes)
    else:                                   # SE
        needed = plan.multipliers_for_full_throughput(th, width, c_stream, hidden, tiles_x,
                                                      lanes, taps)
        # the multipliers a unit builds (the 3x1 unit too: at most max(C, hidden))
        q = plan.excite_lanes(c_stream, hidden, needed if multipliers is None else multipliers)
        latency = plan.excite_latency_cycles(c_stream, hidden, tiles_x, q, taps)
        depth = plan.full_throughput_depth(th, width, c_stream, hidden, tiles_x, lanes, q,
                                           taps)
        se_depth = plan.full_throughput_depth(layer.height, width, c_stream, hidden, 1, lanes,
                                              q)
    # excite MACs of one tile (the whole frame is one tile for the untiled block)
    se_excite = {"se": 2 * layer.channels * hidden, "eca": k * layer.channels,
                 "srm": 2 * layer.channels}[block]
    sq_bits = square_sum_bits(th * tw) if block == "srm" else 0
    return LayerPlan(
        name=layer.name, channels=layer.channels, height=layer.height, width=width,
        hidden=hidden, tile_rows=th, tile_cols=tw, tiles_y=tiles_y, tiles_x=tiles_x,
        tiles=tiles_y * tiles_x, tiling=tiling_kind(th, tw, layer.height, width),
        excite_kernel=excite_kernel,
        se_buffer=layer.height * width * layer.channels,
        tse_buffer=th * tw * layer.channels,
        excite_multipliers=q, full_throughput_multipliers=needed,
        strip_beats=strip, excite_latency_cycles=latency,
        tse_stream_beats=depth, tse_stream_buffer=depth * lanes,
        se_stream_buffer=se_depth * lanes, keeps_up=latency <= strip,
        se_excite_macs=se_excite, tse_excite_macs=tiles_y * tiles_x * taps * se_excite,
        block=block, eca_taps=k,
        excite_latency_basis=block,
        square_sum_bits=sq_bits, square_sum_storage_bits=tiles_x * c_stream * sq_bits)


# Per-layer quantities that add up to a network total (excite_multipliers: a dataflow
# accelerator gives every SE layer its own unit, so the network needs the sum).
TOTALS = ("se_buffer", "tse_buffer", "tse_stream_buffer", "se_stream_buffer",
          "se_excite_macs", "tse_excite_macs", "excite_macs_added", "excite_multipliers",
          "square_sum_storage_bits")


@dataclass(frozen=True)
class NetworkPlan:
    network: str
    source: str
    tile: str
    lanes: int
    multipliers: int | None
    """The fixed Q given by the user, or None for the fewest per layer that keep up."""
    layers: tuple[LayerPlan, ...]
    excite_kernel: str = "1x1"
    block: str = "se"

    def total(self, key: str) -> int:
        return sum(getattr(layer, key) for layer in self.layers)

    @property
    def totals(self) -> dict:
        return {key: self.total(key) for key in TOTALS}

    def to_dict(self) -> dict:
        totals = self.totals
        return {
            "network": self.network,
            "source": self.source,
            "tile": self.tile,
            "excite_kernel": self.excite_kernel,
            "block": self.block,
            "lanes": self.lanes,
            "multipliers_per_layer": ("full throughput" if self.multipliers is None
                                      else self.multipliers),
            "bytes_per_element": BYTES_PER_ELEMENT,
            "layers": [layer.to_dict() for layer in self.layers],
            **totals,
            "tse_saving": 1 - totals["tse_buffer"] / totals["se_buffer"],
            "tse_stream_saving": 1 - totals["tse_stream_buffer"] / totals["se_stream_buffer"],
            "layers_stalling": [layer.name for layer in self.layers if not layer.keeps_up],
        }


def plan_network(network: Network, tile: str, lanes: int = 8,
                 multipliers: int | None = None, excite_kernel: str = "1x1",
                 block: str = "se") -> NetworkPlan:
    """Per-layer and total buffers of a network's SE layers under one tile, each layer
    built as the block (se, eca or srm)."""
    if block not in BLOCKS:
        raise ConfigError(f"block: {block!r} is not allowed; allowed: {', '.join(BLOCKS)}")
    if excite_kernel not in plan.EXCITE_KERNEL_TAPS:
        raise ConfigError(f"excite-kernel: {excite_kernel!r} is not allowed; allowed: "
                          f"{', '.join(plan.EXCITE_KERNEL_TAPS)}")
    if block != "se" and excite_kernel != "1x1":
        raise ConfigError(f"excite-kernel: {excite_kernel!r} is not allowed with block = "
                          f"{block!r}; allowed: '1x1' (the 3x1 excite is SE's)")
    if block in ("eca", "srm") and multipliers is not None:
        why = ("ECA's excite has k multipliers" if block == "eca" else
               "SRM's excite has its channel-wise FC's two")
        raise ConfigError(f"excite multipliers: {multipliers!r} is not allowed with block = "
                          f"{block!r}; allowed: none given ({why}, one output channel a "
                          "cycle)")
    for name, value in (("lanes", lanes), ("excite multipliers", multipliers)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise ConfigError(f"{name}: {value!r} is not allowed; allowed: a positive integer")
    parsed = parse_planner_tile(tile)
    layers = tuple(plan_layer(layer, parsed, lanes, multipliers, excite_kernel, block)
                   for layer in network.layers)
    return NetworkPlan(network.name, network.source, parsed.spec, lanes, multipliers, layers,
                       excite_kernel, block)
