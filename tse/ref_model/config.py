"""The one validated configuration of a TSE layer and the unit that streams it.

Every package reads this object: the PyTorch references, the integer model, the golden
vectors, the RTL and the testbench. A field is validated once, here, and a bad value is a
ConfigError whose message names the field, the value and what is allowed.

Tiles are written as in the paper: "7xW" (row strip), "Hx3" (column strip), "7x7" (patch),
"HxW" (plain SE, the whole frame as one tile). "H" and "W" stand for the frame's height and
width; a number larger than the frame is an error (use H or W to mean "the whole frame").
"""
from __future__ import annotations

import dataclasses
import functools
import difflib
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from . import attention_widths, plan
from .errors import ConfigError
from .hw_profile import DEFAULT_HW, HwProfile, tile_counts

PROFILES = ("torch", "hw")
MAX_SEED = 2**64 - 3
ENGINES = ("fbgemm", "qnnpack")
HIDDEN_ACTIVATIONS = ("relu", "silu")
GATES = ("sigmoid", "hardsigmoid")
HARDSIGMOID_SLOPE = 1 / 6
"""PyTorch's nn.Hardsigmoid, relu6(x + 3) / 6: slope 1/6, offset 0.5 (ONNX HardSigmoid's
defaults are 0.2 and 0.5)."""
HARDSIGMOID_OFFSET = 0.5
DEFAULT_REDUCTION = 4
BLOCKS = ("se", "eca", "srm")
BLOCK_FIELDS = {"block": "se", "excite_kernel": "1x1", "eca_kernel": 0}
"""The block fields and their defaults (left out of to_dict and to_toml at these values)."""
ECA_GAMMA = 2
ECA_B = 1


def eca_kernel_size(channels: int, gamma: int = ECA_GAMMA, b: int = ECA_B) -> int:
    """The ECA code's adaptive kernel size for C channels: t = int(|(log2(C) + b) / gamma|),
    k = t if t is odd else t + 1 (|log2(C)/2 + 1/2| rounded to the nearest odd, an even t
    rounded up)."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1


def tiling_kind(tile_rows: int, tile_cols: int, height: int, width: int) -> str:
    """How a frame is cut into tiles: "se" (one tile), "row strip", "column strip" or
    "patch". (Not the edge-tile kind of one tile: tse.ref_model.edge_tiles.)"""
    if (tile_rows, tile_cols) == (height, width):
        return "se"
    if tile_cols == width:
        return "row strip"
    if tile_rows == height:
        return "column strip"
    return "patch"


@dataclass(frozen=True)
class TSEConfig:
    """A TSE layer (shape, tile, excite) and the streaming unit that computes it."""

    channels: int = 128
    height: int = 28
    width: int = 28
    tile: str = "7xW"
    reduction: int = 0
    """hidden = channels // reduction. 0: not given, which means DEFAULT_REDUCTION unless
    hidden is given (a hidden width that is no channels // r, e.g. RegNetY-800MF s4.b1:
    C=768, hidden 80, keeps reduction 0)."""
    hidden: int = 0
    """Hidden width of the excite, 1..channels; 0: channels // reduction. Given with a
    reduction, both must agree."""
    hidden_activation: str = "relu"
    """After fc1: relu (fused into fc1's requantizer) or silu (a 256-entry table)."""
    gate: str = "sigmoid"
    """After fc2: sigmoid, or hardsigmoid clamp(gate_slope * x + gate_offset, 0, 1)."""
    gate_slope: float = HARDSIGMOID_SLOPE
    gate_offset: float = HARDSIGMOID_OFFSET
    lanes: int = 8
    excite_multipliers: int = 32
    buffer_depth: int = 0
    """Strip-buffer depth in beats: 0 means the full-throughput depth (strip + excite
    latency, full_throughput_depth); otherwise at least one strip (strip_beats). A smaller
    depth than full throughput is allowed and only stalls the input."""
    profile: str = "hw"
    engine: str = "fbgemm"
    seed: int = 0
    block: str = "se"
    """The channel-attention block: se (TSE), eca (tiled ECA, seed 002) or srm (tiled SRM,
    seed 003). Only se runs through the unit (RTL, co-simulation, vectors) so far; the others
    run in the integer models (tse.ref_model.attention_*), and the rest refuses them
    (require_unit_block)."""
    excite_kernel: str = "1x1"
    """SE's excite convolutions: 1x1 (per tile) or 3x1 (the paper's Appendix B: across
    neighbouring rows of tiles; plan.EXCITE_KERNEL_TAPS)."""
    eca_kernel: int = 0
    """ECA's taps k (odd); 0: adaptive from C (eca_kernel_size). Only with block = 'eca'."""
    hw: HwProfile = DEFAULT_HW
    """Widths and roundings of the hw numerics profile (TOML table [hw])."""

    def __post_init__(self):
        for name in ("channels", "height", "width", "lanes", "excite_multipliers"):
            _require_positive_int(name, getattr(self, name))
        self._resolve_hidden()
        self._check_dialect()
        self._check_block()
        if (not isinstance(self.seed, int) or isinstance(self.seed, bool)
                or not 0 <= self.seed <= MAX_SEED):
            raise ConfigError(f"seed: {self.seed!r} is not allowed; allowed: a non-negative "
                              f"integer up to {MAX_SEED} (2**64 - 3: the data are seeded with "
                              "64-bit seeds seed + 1 and seed + 2)")
        if self.profile not in PROFILES:
            raise ConfigError(f"profile: {self.profile!r} is not allowed; "
                              f"allowed: {', '.join(PROFILES)}")
        if self.engine not in ENGINES:
            raise ConfigError(f"engine: {self.engine!r} is not allowed; "
                              f"allowed: {', '.join(ENGINES)}")
        parse_tile(self.tile, self.height, self.width)
        if self.channels % self.lanes:
            divisors = [d for d in range(1, self.channels + 1) if self.channels % d == 0]
            raise ConfigError(
                f"lanes: {self.lanes} does not divide channels={self.channels}; "
                f"allowed: a divisor of {self.channels} ({', '.join(map(str, divisors))})")
        if isinstance(self.hw, dict):
            object.__setattr__(self, "hw", HwProfile.from_dict(self.hw))
        if not isinstance(self.hw, HwProfile):
            raise ConfigError(f"hw: {self.hw!r} is not allowed; allowed: a table of hw widths")
        if (not isinstance(self.buffer_depth, int) or isinstance(self.buffer_depth, bool)
                or (self.buffer_depth != 0 and self.buffer_depth < self.strip_beats)):
            raise ConfigError(
                f"buffer_depth: {self.buffer_depth!r} is not allowed; allowed: 0 (the "
                f"full-throughput depth, {self.full_throughput_depth} beats) or an integer "
                f">= {self.strip_beats} (one strip of {self.tile_rows} rows; a smaller buffer "
                "deadlocks)")
        if self.profile == "hw":
            self.check_hw()

    def _resolve_hidden(self) -> None:
        """hidden from reduction when not given; a given pair must agree."""
        c, r, h = self.channels, self.reduction, self.hidden
        for name, v in (("reduction", r), ("hidden", h)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"{name}: {v!r} is not allowed; allowed: a positive integer "
                                  f"(0: not given)")
        if h == 0:
            if r == 0:
                r = DEFAULT_REDUCTION
                object.__setattr__(self, "reduction", r)
            if c // r < 1:
                raise ConfigError(
                    f"reduction: {r} leaves no hidden channel for channels={c} (hidden = "
                    f"channels // reduction = {c // r}); allowed: 1..{c}")
            object.__setattr__(self, "hidden", c // r)
        elif h > c:
            raise ConfigError(f"hidden: {h} is not allowed for channels={c}; allowed: 1..{c}")
        elif r and c // r != h:
            raise ConfigError(
                f"hidden: {h} disagrees with reduction={r} (channels // reduction = {c // r}); "
                "allowed: give one of them, or a pair with hidden = channels // reduction")

    def _check_dialect(self) -> None:
        for name, allowed in (("hidden_activation", HIDDEN_ACTIVATIONS), ("gate", GATES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}: {getattr(self, name)!r} is not allowed; "
                                  f"allowed: {', '.join(allowed)}")
        for name in ("gate_slope", "gate_offset"):
            v = getattr(self, name)
            if (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)
                    or (name == "gate_slope" and not v > 0)):
                what = "a number > 0" if name == "gate_slope" else "a finite number"
                raise ConfigError(f"{name}: {v!r} is not allowed; allowed: {what}")
            object.__setattr__(self, name, float(v))
        if self.gate == "sigmoid" and (self.gate_slope, self.gate_offset) != (
                HARDSIGMOID_SLOPE, HARDSIGMOID_OFFSET):
            raise ConfigError(
                f"gate_slope, gate_offset: {self.gate_slope!r}, {self.gate_offset!r} apply "
                "only to gate = 'hardsigmoid'; allowed with gate = 'sigmoid': the defaults "
                f"({HARDSIGMOID_SLOPE!r}, {HARDSIGMOID_OFFSET!r})")

    def _check_block(self) -> None:
        if self.block not in BLOCKS:
            raise ConfigError(f"block: {self.block!r} is not allowed; "
                              f"allowed: {', '.join(BLOCKS)}")
        if self.excite_kernel not in plan.EXCITE_KERNEL_TAPS:
            raise ConfigError(f"excite_kernel: {self.excite_kernel!r} is not allowed; "
                              f"allowed: {', '.join(plan.EXCITE_KERNEL_TAPS)}")
        if self.excite_kernel != "1x1" and self.block != "se":
            raise ConfigError(f"excite_kernel: {self.excite_kernel!r} applies only to block = "
                              f"'se'; allowed with block = {self.block!r}: '1x1'")
        k, c = self.eca_kernel, self.channels
        if (not isinstance(k, int) or isinstance(k, bool) or k < 0
                or (k and (k % 2 == 0 or k > 2 * c - 1))):
            raise ConfigError(f"eca_kernel: {k!r} is not allowed; allowed: 0 (adaptive from C: "
                              f"{eca_kernel_size(c)} for C={c}) or an odd integer 1..{2 * c - 1}")
        if k and self.block != "eca":
            raise ConfigError(f"eca_kernel: {k} applies only to block = 'eca'; allowed with "
                              f"block = {self.block!r}: 0")
        if self.block == "se":
            return
        changed = [f"{name} = {getattr(self, name)!r}" for name, default in
                   (("hidden_activation", "relu"), ("gate", "sigmoid"))
                   if getattr(self, name) != default]
        if changed:
            raise ConfigError(f"{', '.join(changed)}: the SE dialect applies only to block = "
                              f"'se'; allowed with block = {self.block!r}: hidden_activation "
                              "'relu', gate 'sigmoid' (the seed's sigmoid gate)")
        if self.block == "srm":
            least = min(tile_counts(self.height, self.width, self.tile_rows, self.tile_cols))
            if least < 2:
                raise ConfigError(
                    f"tile: {self.tile!r} on {self.height}x{self.width} leaves a tile of "
                    f"{least} element for block = 'srm', which has no unbiased standard "
                    "deviation; allowed: a tiling whose every tile holds 2 or more elements")

    @property
    def eca_taps(self) -> int:
        """ECA's taps: eca_kernel, or the adaptive size from C when 0."""
        return self.eca_kernel or eca_kernel_size(self.channels)

    def require_unit_block(self, what: str, blocks=("se",), excite_kernels=("1x1",)) -> None:
        """Refuse a block or excite kernel that `what` (a command or a layer: the RTL,
        co-simulation, the SE integer parameters) does not implement yet (it implements
        `blocks` and `excite_kernels`): one ConfigError naming the value and what is allowed,
        instead of silently running SE."""
        if self.block not in blocks:
            raise ConfigError(f"block: {self.block!r} is not supported by {what} yet; "
                              f"allowed: {', '.join(map(repr, blocks))} ({self.block} runs in "
                              "the integer models: tse.ref_model.attention_*)")
        if self.excite_kernel not in excite_kernels:
            raise ConfigError(f"excite_kernel: {self.excite_kernel!r} is not supported by "
                              f"{what} yet; allowed: {', '.join(map(repr, excite_kernels))}")

    @property
    def hidden_table(self) -> bool:
        """The hidden activation is a table after fc1 (SiLU), not fused into it (ReLU)."""
        return self.hidden_activation == "silu"

    @property
    def dialect(self) -> dict:
        """The SE dialect: hidden activation, gate and the gate's slope and offset."""
        return {"hidden_activation": self.hidden_activation, "gate": self.gate,
                "gate_slope": self.gate_slope, "gate_offset": self.gate_offset}

    def check_hw(self) -> None:
        """Reject hw widths that can overflow or round the mean inexactly for this shape.
        Only the hw profile uses them; a command that runs the hw numerics whatever the
        profile (the RTL, co-simulation, tse run, a sweep) calls this itself."""
        th, tw = parse_tile(self.tile, self.height, self.width)
        counts = tile_counts(self.height, self.width, th, tw)
        attention_widths.check(self.block, self.hw, self.eca_taps, counts)
        # ECA and SRM have no fc1 / fc2: attention_widths checked their registers (the tile
        # sums too); the mean's reciprocal is checked as for SE
        hw = self.hw if self.block == "se" else self.hw.replace(saturate=True)
        taps = plan.EXCITE_KERNEL_TAPS[self.excite_kernel]   # a 3x1 excite: 3x the products
        hw.check(self.channels * taps, self.hidden * taps, counts)

    # ---- derived shape -------------------------------------------------------------
    @property
    def tile_rows(self) -> int:
        return parse_tile(self.tile, self.height, self.width)[0]

    @property
    def tile_cols(self) -> int:
        return parse_tile(self.tile, self.height, self.width)[1]

    @property
    def tiles_y(self) -> int:
        return math.ceil(self.height / self.tile_rows)

    @property
    def tiles_x(self) -> int:
        return math.ceil(self.width / self.tile_cols)

    @property
    def beats_per_frame(self) -> int:
        return self.height * self.width * self.channels // self.lanes

    @property
    def tiling(self) -> str:
        """How the frame is cut (tiling_kind): "se", "row strip", "column strip" or "patch"."""
        return tiling_kind(self.tile_rows, self.tile_cols, self.height, self.width)

    # ---- streaming unit (formulas in tse.ref_model.plan) -------------------------------------
    @property
    def strip_beats(self) -> int:
        return plan.strip_beats(self.tile_rows, self.width, self.channels, self.lanes)

    @property
    def excite_latency_cycles(self) -> int:
        if self.block == "eca":     # ECA's excite stage (tse/rtl/eca_excite.py)
            return plan.eca_latency_cycles(self.channels, self.eca_taps, self.tiles_x)
        if self.block == "srm":     # SRM's excite stage (tse/rtl/srm_excite.py)
            return plan.srm_latency_cycles(self.channels, self.tiles_x)
        if self.excite_kernel == "3x1":     # the 3x1 unit (Excite3x1UnitPlan) builds Q
            return plan.excite_latency_cycles(self.channels, self.hidden, self.tiles_x,
                                              self.excite_multipliers_built, taps=3)
        return plan.excite_latency_cycles(self.channels, self.hidden, self.tiles_x,
                                          self.excite_multipliers,
                                          hidden_table=self.hidden_table)

    @property
    def lookahead_strips(self) -> int:
        """Strips after a strip whose pooled values its gates need (the 3x1 excite: 2)."""
        return plan.lookahead_strips(3 if self.excite_kernel == "3x1" else 1)

    @property
    def full_throughput_depth(self) -> int:
        """Strip-buffer depth (beats) at which the input never stalls."""
        if self.block == "eca":
            return plan.eca_full_throughput_depth(self.tile_rows, self.width, self.channels,
                                                  self.eca_taps, self.tiles_x, self.lanes)
        if self.block == "srm":
            return plan.srm_full_throughput_depth(self.tile_rows, self.width, self.channels,
                                                  self.tiles_x, self.lanes)
        if self.excite_kernel == "3x1":
            return plan.full_throughput_depth(self.tile_rows, self.width, self.channels,
                                              self.hidden, self.tiles_x, self.lanes,
                                              self.excite_multipliers_built, taps=3)
        return plan.full_throughput_depth(self.tile_rows, self.width, self.channels,
                                          self.hidden, self.tiles_x, self.lanes,
                                          self.excite_multipliers,
                                          hidden_table=self.hidden_table)

    @property
    def shortest_strip_beats(self) -> int:
        """Beats of the frame's shortest strip: the last one when H is not a multiple of the
        tile's rows."""
        last_rows = self.height - (self.tiles_y - 1) * self.tile_rows
        return plan.strip_beats(min(self.tile_rows, last_rows), self.width, self.channels,
                                self.lanes)

    @property
    def excite_keeps_up(self) -> bool:
        """Every strip, the shortest included, lasts at least the excite latency: the
        condition under which full_throughput_depth never stalls the input (the depth
        formula's stated limit; otherwise the excite MAC lags within a frame)."""
        return self.excite_latency_cycles <= self.shortest_strip_beats

    @property
    def excite_multipliers_built(self) -> int:
        """Multipliers the unit builds: excite_multipliers, but no more than the widest
        excite layer's inputs, max(C, hidden) (more would multiply zeros on the same
        schedule; tse.rtl.params uses this)."""
        return plan.excite_lanes(self.channels, self.hidden, self.excite_multipliers)

    @property
    def strip_buffer_depth(self) -> int:
        """The strip buffer's depth in beats: buffer_depth, or full_throughput_depth if 0."""
        return self.buffer_depth or self.full_throughput_depth

    # ---- conversions ---------------------------------------------------------------
    def replace(self, **changes) -> "TSEConfig":
        """A changed copy. hidden follows a reduction (changed, or kept with other changes)
        unless hidden is changed too; a changed hidden drops a reduction it disagrees with."""
        if "hidden" not in changes and (self.reduction or "reduction" in changes):
            changes["hidden"] = 0
        elif "hidden" in changes and "reduction" not in changes and self.reduction:
            c = changes.get("channels", self.channels)
            h = changes["hidden"]
            if isinstance(h, int) and h and c // self.reduction != h:
                changes["reduction"] = 0
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Every field, except the block fields at their defaults (block_fields_written):
        an SE configuration writes the same manifests, cache keys and TOML as before they
        existed."""
        d = dataclasses.asdict(self)
        for name in BLOCK_FIELDS:
            if name not in self.block_fields_written:
                del d[name]
        return d

    @property
    def block_fields_written(self) -> tuple:
        """The block fields that differ from their defaults (to_dict and to_toml write
        only those)."""
        return tuple(name for name, default in BLOCK_FIELDS.items()
                     if getattr(self, name) != default)

    def to_toml(self) -> str:
        lines = ["# TSE configuration (tse --help explains each field)"]
        for f in dataclasses.fields(self):
            if f.name in BLOCK_FIELDS and f.name not in self.block_fields_written:
                continue
            if f.name != "hw":
                lines.append(f"{f.name} = {_toml_value(getattr(self, f.name))}")
        lines += ["", "[hw]  # widths and roundings of the hw numerics profile (docs/numerics.md)"]
        for f in dataclasses.fields(self.hw):
            lines.append(f"{f.name} = {_toml_value(getattr(self.hw, f.name))}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, data: dict, source: str = "configuration",
                  overrides: dict | None = None) -> "TSEConfig":
        """The configuration of data with overrides (e.g. command-line flags) applied
        before it is validated, so a field checked only for some values (the hw widths, for
        the hw profile) is judged with the values really used."""
        known = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in known:
                near = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {near[0]!r}?)" if near else ""
                raise ConfigError(f"{source}: unknown key {key!r}{hint}; "
                                  f"allowed: {', '.join(known)}")
        if "hw" in data:
            data = {**data, "hw": HwProfile.from_dict(data["hw"], source)}
        overrides = overrides or {}
        for given, other in (("hidden", "reduction"), ("reduction", "hidden")):
            if given in overrides and other not in overrides:   # a flag overrides the pair
                data = {k: v for k, v in data.items() if k != other}
        return cls(**{**data, **overrides})

    @classmethod
    def from_toml(cls, path: str | Path, overrides: dict | None = None) -> "TSEConfig":
        path = Path(path)
        try:
            data = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config: file {str(path)!r} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config: {str(path)!r} is not valid TOML: {e}") from None
        return cls.from_dict(data, source=str(path), overrides=overrides)


@functools.lru_cache(maxsize=1024)   # hot: every derived property of a config resolves it
def parse_tile(spec: str, height: int, width: int) -> tuple[int, int]:
    """Resolve a tile written as "<rows>x<cols>" ("7xW", "Hx3", "7x7", "HxW")."""
    m = re.fullmatch(r"\s*(\d+|H)\s*[xX]\s*(\d+|W)\s*", spec) if isinstance(spec, str) else None
    if not m:
        raise ConfigError(f"tile: {spec!r} is not allowed; allowed: '<rows>x<cols>' with "
                          "rows a positive integer or H and cols a positive integer or W, "
                          "e.g. '7xW', 'Hx3', '7x7', 'HxW'")
    rows = height if m[1] == "H" else int(m[1])
    cols = width if m[2] == "W" else int(m[2])
    for what, n, limit, whole in (("height", rows, height, "H"), ("width", cols, width, "W")):
        if n < 1:
            raise ConfigError(f"tile: {spec!r} has tile {what} {n}; allowed: 1..{limit} or {whole}")
        if n > limit:
            raise ConfigError(f"tile: {spec!r} has tile {what} {n}, larger than the frame "
                              f"{what} {limit}; allowed: 1..{limit} or {whole}")
    return rows, cols


def _require_positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{name}: {value!r} is not allowed; allowed: a positive integer")


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    raise TypeError(f"cannot write {v!r} as TOML")


DEFAULT = TSEConfig()
"""RegNetY-800MF stage 2: C=128 at 28x28, hidden 32, row strips of 7 rows, 8 lanes."""
