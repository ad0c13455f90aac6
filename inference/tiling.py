"""Tile layout and blending weights."""
from __future__ import annotations

from typing import List, Optional, Tuple

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
    return [_flip(*v) for v in _VIEWS[:check_passes(passes)]]


def check_passes(passes) -> int:
    """``passes`` if it is a number of test-time augmentation passes (TTA_PASSES), else ValueError."""
    if passes not in TTA_PASSES:
        raise ValueError("test-time augmentation takes %s passes, got %r"
                         % (", ".join(str(p) for p in TTA_PASSES), passes))
    return int(passes)


# Multi-scale inference: the network also sees each tile at half (or quarter) resolution, with
# twice (four times) the ground in its receptive field, and its output, brought back to the
# tile's grid, is averaged with the others.
TTA_SCALES = (1.0, 0.5, 0.25)


def check_scales(scales, tile: Optional[int] = None) -> Tuple[float, ...]:
    """The scales as a tuple of distinct values from TTA_SCALES (that divide ``tile`` evenly,
    when it is given), else ValueError."""
    out = []
    for s in scales:
        s = float(s)
        if s not in TTA_SCALES:
            raise ValueError("scales must be among %s, got %g" % (", ".join("%g" % v for v in TTA_SCALES), s))
        if tile is not None and (tile * s) != int(tile * s):
            raise ValueError("scale %g needs a tile size divisible by %d, got %d" % (s, round(1 / s), tile))
        if s not in out:
            out.append(s)
    if not out:
        raise ValueError("at least one scale is needed")
    return tuple(out)


def downsample2(a: np.ndarray) -> np.ndarray:
    """Halve the last two axes (even sizes) by 2 x 2 means."""
    h, w = a.shape[-2:]
    b = a.reshape(a.shape[:-2] + (h // 2, 2, w // 2, 2))
    return b.mean(axis=(-3, -1), dtype=np.float32)


def _up2_axis(a: np.ndarray, axis: int) -> np.ndarray:
    a = np.moveaxis(a, axis, -1)
    before = np.concatenate([a[..., :1], a[..., :-1]], axis=-1)
    after = np.concatenate([a[..., 1:], a[..., -1:]], axis=-1)
    out = np.empty(a.shape[:-1] + (a.shape[-1], 2), np.float32)
    out[..., 0] = 0.75 * a + 0.25 * before      # output pixel 2k sits a quarter pixel before k
    out[..., 1] = 0.75 * a + 0.25 * after
    return np.moveaxis(out.reshape(a.shape[:-1] + (2 * a.shape[-1],)), -1, axis)


def upsample2(a: np.ndarray) -> np.ndarray:
    """Double the last two axes by bilinear interpolation (pixel centres aligned, edges held)."""
    return _up2_axis(_up2_axis(a, -1), -2)


def rescale(a: np.ndarray, scale: float, up: bool = False) -> np.ndarray:
    """Bring (..., H, W) to ``scale`` (down) or back from it (``up``), by factors of two."""
    steps = int(round(np.log2(1.0 / scale)))
    for _ in range(steps):
        a = upsample2(a) if up else downsample2(a)
    return a


class Blender:
    """The strip accumulator: tile probabilities weighted by ``blend_weights`` (neighbours
    cross-fade across the overlap), rows handed out once no later tile reaches them."""

    def __init__(self, channels: int, tile: int, overlap: int, width: int, th: int, tw: int):
        self.th, self.tw = th, tw
        self.weights = blend_weights(tile, overlap)[:th, :tw]
        self.acc = np.zeros((channels, tile, width), np.float32)
        self.wsum = np.zeros((tile, width), np.float32)
        self._tmp = np.empty((channels, th, tw), np.float32)

    def add(self, probs: np.ndarray, x: int) -> None:
        th, tw = self.th, self.tw
        np.multiply(probs[:, :th, :tw], self.weights, out=self._tmp)
        self.acc[:, :th, x:x + tw] += self._tmp
        self.wsum[:th, x:x + tw] += self.weights

    def rows(self, n: int) -> Tuple[np.ndarray, np.ndarray]:
        return self.acc[:, :n], self.wsum[:n]

    def shift(self, n: int, last: bool) -> None:
        """Drop the first ``n`` rows (handed out): the rows not yet final move to the top."""
        keep = self.th - n
        if keep > 0 and not last:
            self.acc[:, :keep] = self.acc[:, n:self.th]
            self.wsum[:keep] = self.wsum[n:self.th]
        self.acc[:, keep:] = 0.0
        self.wsum[keep:] = 0.0
