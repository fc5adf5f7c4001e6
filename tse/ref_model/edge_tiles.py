"""The edge-tile kind: the one definition every model, kernel and the unit plan use.

A frame of H x W cut into tiles of th x tw has, at its bottom and right edges, tiles cut
short when th does not divide H or tw does not divide W. The kind of tile (i, j) of a
ty x tx grid is

    kind = 2 * (i is the bottom tile row and it is cut short)
             + (j is the right tile column and it is cut short)

so 0 is a full tile, 1 cut by the right edge, 2 by the bottom edge, 3 by both; the mean's
reciprocal tables (IntParams.hw_recip, tile_counts) are indexed by it, and the RTL's line
accumulator hands it to the excite MAC with each tile's sums. edge_tile_kind takes plain
ints and is jitted, so numba kernels call it too (its callers list this module in their
JIT_SOURCES, jit_cache).
"""
from __future__ import annotations

import sys

import numpy as np
from numba import njit

from .jit_cache import flush_module


@njit(cache=True)
def edge_tile_kind(i: int, j: int, tiles_y: int, tiles_x: int, bottom_short: bool,
                   right_short: bool) -> int:
    """Kind of tile (i, j) (see the module docstring)."""
    return (2 * (1 if (i == tiles_y - 1 and bottom_short) else 0)
            + (1 if (j == tiles_x - 1 and right_short) else 0))


def kind_table(height: int, width: int, tile_rows: int, tile_cols: int) -> np.ndarray:
    """int64 [tiles_y, tiles_x]: the kind of every tile of the frame."""
    ty, tx = -(-height // tile_rows), -(-width // tile_cols)
    bottom, right = height % tile_rows != 0, width % tile_cols != 0
    return np.array([[edge_tile_kind(i, j, ty, tx, bottom, right) for j in range(tx)]
                     for i in range(ty)], np.int64).reshape(ty, tx)


JIT_SOURCES = (sys.modules[__name__],)
"""This module alone: its jitted function calls no other module's."""
flush_module(globals(), JIT_SOURCES)
