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


# Test-time augmentation: the network also sees each tile flipped (and rotated), and the
# probabilities, mapped back, are averaged.  Views of the dihedral group of the square, in the
# order they are added: 2 = + left-right flip; 4 = + up-down flip and both (a half turn);
# 8 = + the four views that swap rows and columns (quarter turns and the two diagonal mirrors).
TTA_PASSES = (1, 2, 4, 8)


def _flip(lr: bool, ud: bool, tr: bool):
    def fwd(a):
        if tr:
            a = a.swapaxes(-1, -2)
        if lr:
            a = a[..., ::-1]
        if ud:
            a = a[..., ::-1, :]
        return a

    def inv(a):
        if ud:
            a = a[..., ::-1, :]
        if lr:
            a = a[..., ::-1]
        if tr:
            a = a.swapaxes(-1, -2)
        return a
    return fwd, inv


_VIEWS = [(False, False, False), (True, False, False), (False, True, False), (True, True, False),
          (False, False, True), (True, False, True), (False, True, True), (True, True, True)]


def tta_views(passes: int):
    """``passes`` pairs (forward, inverse) of functions on (..., H, W) arrays (square tiles
    for passes 8): forward makes the view fed to the network, inverse maps its output back.
    Both return views, not copies; the first pair is the identity."""
    if passes not in TTA_PASSES:
        raise ValueError("test-time augmentation takes %s passes, got %r"
                         % (", ".join(str(p) for p in TTA_PASSES), passes))
    return [_flip(*v) for v in _VIEWS[:passes]]
