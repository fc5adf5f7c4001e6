"""The stream's geometry: frame, tiles, lanes, and where a beat lies; nothing else.

One frame is H*W*C/P beats in raster order, channels innermost, P lanes a beat; tiles of
tile_rows x tile_cols, the last row and column of tiles cut short by the frame's edges.
describe(cfg) is the JSON form that travels in a vectors manifest (the "geometry" part of
tse.ref_model.unit_plan); Geometry is what the model's and the testbenches' code asks about it
(tse/sim/scoreboard.py, tse/sim/tb_tse.py), so no package works the positions out on its own.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .config import TSEConfig
from .edge_tiles import kind_table
from .hw_profile import tile_counts


def describe(cfg: TSEConfig) -> dict:
    """The geometry of cfg (JSON-able): frame, tiles, beats per frame and per strip, the
    edge-tile-kind table and each kind's element count."""
    return {"height": cfg.height, "width": cfg.width, "channels": cfg.channels,
            "lanes": cfg.lanes, "tile_rows": cfg.tile_rows, "tile_cols": cfg.tile_cols,
            "tiles_y": cfg.tiles_y, "tiles_x": cfg.tiles_x,
            "beats_per_frame": cfg.height * cfg.width * cfg.channels // cfg.lanes,
            "strip_beats": cfg.strip_beats,
            "tile_kinds": kind_table(cfg.height, cfg.width, cfg.tile_rows,
                                     cfg.tile_cols).tolist(),
            "tile_counts": [int(n) for n in tile_counts(cfg.height, cfg.width, cfg.tile_rows,
                                                        cfg.tile_cols)]}


@dataclass(frozen=True)
class Geometry:
    """Positions in the stream of one configuration (see the module docstring)."""
    height: int
    width: int
    channels: int
    lanes: int
    tile_rows: int
    tile_cols: int
    tiles_y: int
    tiles_x: int
    beats_per_frame: int

    @classmethod
    def from_geometry(cls, geo: dict) -> "Geometry":
        """From describe()'s dict (a manifest's ["unit"]["geometry"]); other keys ignored."""
        return cls(**{f.name: int(geo[f.name]) for f in fields(cls)})

    @classmethod
    def of(cls, cfg: TSEConfig) -> "Geometry":
        return cls.from_geometry(describe(cfg))

    @classmethod
    def from_config(cls, cfg: dict) -> "Geometry":
        """From a TSEConfig.to_dict()."""
        return cls.of(TSEConfig.from_dict(cfg))

    @property
    def groups(self) -> int:
        """Beats per pixel (C / P)."""
        return self.channels // self.lanes

    def locate(self, beat: int) -> dict:
        """Where beat number `beat` of a stream lies: frame, row, column, and the channel of
        its lane 0."""
        frame, b = divmod(int(beat), self.beats_per_frame)
        pixel, group = divmod(b, self.groups)
        row, col = divmod(pixel, self.width)
        return {"frame": frame, "row": row, "column": col, "channel": group * self.lanes}

    def tile_of(self, row: int, col: int) -> tuple[int, int]:
        return row // self.tile_rows, col // self.tile_cols

    def tiles_complete_within(self, n: int) -> np.ndarray:
        """bool [tiles_y, tiles_x]: tiles whose every input beat is among a frame's first n."""
        g = self.groups
        last_row = np.minimum(np.arange(1, self.tiles_y + 1) * self.tile_rows, self.height) - 1
        last_col = np.minimum(np.arange(1, self.tiles_x + 1) * self.tile_cols, self.width) - 1
        last_beat = (last_row[:, None] * self.width + last_col[None, :]) * g + g - 1
        return last_beat < n

    def tiles_defined_within(self, n: int, lookahead: int = 0) -> np.ndarray:
        """bool [tiles_y, tiles_x]: tiles whose gates a frame cut after its first n beats
        still defines: the tile complete, and with `lookahead` strips (the 3x1 excite's
        gates read the strips below: TSEConfig.lookahead_strips) the tile of its column that
        many strips on (or the frame's last) complete too."""
        complete = self.tiles_complete_within(n)
        return complete[np.minimum(np.arange(self.tiles_y) + lookahead, self.tiles_y - 1)]

    def beats_of_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """bool [beats_per_frame]: the beats of a frame that lie in the given tiles."""
        rows = np.arange(self.height) // self.tile_rows
        cols = np.arange(self.width) // self.tile_cols
        return np.repeat(tiles[rows][:, cols].reshape(-1), self.groups)
