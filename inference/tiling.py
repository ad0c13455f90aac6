"""Tile layout and blending weights."""
from __future__ import annotations

from typing import List

import numpy as np


def positions(length: int, tile: int, overlap: int) -> List[int]:
    """Tile origins along one axis: stride ``tile - overlap``, the last tile flush with
    the end.  A raster shorter than a tile gets one (padded) tile at 0."""
    if length <= tile:
        return [0]
    stride = max(1, tile - overlap)
    out = list(range(0, length - tile + 1, stride))
    if out[-1] != length - tile:
        out.append(length - tile)
    return out


def blend_weights(tile: int, overlap: int, floor: float = 1e-3) -> np.ndarray:
    """2-D weight of a tile's pixels: 1 in the middle, a linear ramp across the
    ``overlap`` pixels at each edge (so two neighbours cross-fade and their weights add
    up to about one), never below ``floor`` (pixels at the raster's border are covered by
    one tile only and still need a weight)."""
    d = np.minimum(np.arange(tile), np.arange(tile)[::-1]).astype(np.float32)
    ramp = max(1, overlap)
    w = np.clip((d + 0.5) / ramp, floor, 1.0).astype(np.float32)
    return np.outer(w, w)
