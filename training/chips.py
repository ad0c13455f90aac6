"""Chips for training from a user's rasters and labels, cut on the fly.

Each raster is read as the engine reads it for the model (``inference.plan``: band mapping,
radiometry, the model's GSD, normalisation; ``strips.StripReader.window``), over the window that
holds the known ground (labels and area), and its labels are burnt on that same grid
(``labels.burn``).  Memory: one chip at a time, whatever the rasters' size.

Validation is spatially separate: the known ground is cut into blocks of ``block`` pixels, and a
share of the blocks (at least one holding labels, when two or more do) is held back; training
chips see those blocks' pixels as ignored, validation reads only them.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from typing import List, Optional, Sequence, Tuple

import numpy as np
from osgeo import gdal

from .engine import SegmentOptions, plan, strips, work_grid
from .engine import InputError

from . import corrections as K
from . import labels as L

SAMPLE_POINTS = 200_000   # labelled pixels remembered per raster, to centre chips on


@dataclass
class Scene:
    """One raster on the model's grid, with its labels."""
    name: str
    reader: strips.StripReader
    grid: work_grid.WorkGrid
    labels: gdal.Dataset          # uint8: class ids (or one band per label class), IGNORE elsewhere
    width: int
    height: int
    val_blocks: np.ndarray        # (rows, cols) bool, of ``block`` px blocks
    block: int
    positives: np.ndarray         # (n, 2) row, col of labelled pixels (a sample), training blocks
    known: np.ndarray             # (n, 2) of known pixels (a sample), training blocks
    pixels: np.ndarray            # (bands, 256): pixels per label value
    untouched: Optional[np.ndarray] = None    # (rows, cols): unlabelled pixels per block (ground not corrected)
    base_found: Optional[np.ndarray] = None   # (rows, cols): of them, flagged by the run (corrections only)
    corrections_of: Optional[str] = None      # the run's map the labels were compared with

    def read(self, x: int, y: int, s: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(normalised image (C, s, s), labels (s, s) or (K, s, s))`` of a window; pixels without
        data are ignored."""
        w, h = min(s, self.width - x), min(s, self.height - y)
        img, valid, _ = self.reader.window(x, y, w, h)
        lab = self.labels.ReadAsArray(x, y, w, h)
        lab = lab.reshape((-1, h, w))
        lab[:, ~valid] = L.IGNORE
        if (w, h) != (s, s):   # at the grid's edge: padded, ignored
            img = np.pad(img, ((0, 0), (0, s - h), (0, s - w)))
            lab = np.pad(lab, ((0, 0), (0, s - h), (0, s - w)), constant_values=L.IGNORE)
        return img, lab

    def in_val(self, x: int, y: int, s: int) -> np.ndarray:
        """(s, s) bool: which pixels of a window lie in validation blocks."""
        yy = (np.arange(y, y + s) // self.block).clip(0, self.val_blocks.shape[0] - 1)
        xx = (np.arange(x, x + s) // self.block).clip(0, self.val_blocks.shape[1] - 1)
        return self.val_blocks[yy[:, None], xx[None, :]]

    def close(self) -> None:
        self.labels = None
        self.grid.ds = None


def open_scene(raster: str, model, label_polys: L.Polygons, area: Optional[L.Polygons], workdir: str,
               multilabel_ids: Optional[Sequence[int]], block: int, val_fraction: float, seed: int,
               index: int, original: Optional[str] = None) -> Scene:
    """A raster with its labels on the model's grid (see the module's text); ``original``: the
    classes raster of the run the labels correct (``corrections``: only what changed counts)."""
    opts = SegmentOptions(device="cpu", cloud_mask="off", ood_check=False, tta=1, scales=(1.0,))
    p0 = plan(raster, model, opts)
    wkt = p0.raster.wkt
    lab, ar = label_polys.to(wkt), area.to(wkt) if area is not None else None
    unit_px = p0.raster.grid.pixel_size[0] * p0.work_gsd_m / p0.src_gsd_m
    known = L.known_ground(lab, ar, L.NEAR_PX * unit_px)
    if original is not None:   # the run's whole ground: deletions anywhere in it count
        fp = K.footprint(original, wkt)
        known = fp if known is None or known.IsEmpty() else known.Union(fp)
    if known is None or known.IsEmpty():
        raise InputError("%s: the label layer holds no polygons and no area was given: draw labels, or give an area "
                         "in which everything is background" % raster)
    rx0, ry0, rx1, ry1 = p0.raster.grid.bounds
    x0, y0, x1, y1 = L.bbox(known)
    ext = (max(x0, rx0), max(y0, ry0), min(x1, rx1), min(y1, ry1))
    if ext[0] >= ext[2] or ext[1] >= ext[3]:
        raise InputError("the labels%s do not overlap %s" % (" and the area" if area is not None else "", raster))
    p = plan(raster, model, replace(opts, extent=ext))
    grid = work_grid.open_grid(p, workdir)
    path = os.path.join(workdir, "labels_%d.tif" % index)
    if original is None:
        L.burn(path, grid.gt, grid.wkt, grid.width, grid.height, lab, known, multilabel_ids)
    else:
        _corrections(path, grid, lab, ar, original)
    ds = gdal.Open(path)
    counts = L.class_pixels(path)
    if original is not None and counts[:, :L.IGNORE].sum() == 0:
        raise InputError("%s: the polygons are as the run left them (nothing deleted, reshaped or added) and no "
                         "area was given: correct the layer first, or give an area in which it is right" % raster)
    if counts[:, :L.IGNORE].sum() == 0:
        raise InputError("the labels%s do not overlap the pixels of %s" % (" and the area" if area is not None else "",
                                                                           raster))
    rng = np.random.default_rng(seed + index)
    rows, cols = math.ceil(grid.height / block), math.ceil(grid.width / block)
    val = split_blocks(ds, block, rows, cols, val_fraction, rng)
    positives, known_px = _points(ds, block, val, rng)
    untouched, found = _untouched(ds, block, rows, cols, K.on_grid(original, grid.gt, grid.wkt, grid.width,
                                                                   grid.height) if original else None)
    return Scene(os.path.basename(raster), strips.StripReader(p, grid), grid, ds, grid.width, grid.height, val,
                 block, positives, known_px, counts, untouched, found, original)


def _corrections(path: str, grid, lab: L.Polygons, area: Optional[L.Polygons], original: str) -> None:
    """The labels of corrections (``training.corrections``) at ``path``."""
    now = path[:-4] + "_now.tif"
    L.burn(now, grid.gt, grid.wkt, grid.width, grid.height, lab, None)
    inside = None
    if area is not None:
        inside = path[:-4] + "_area.tif"
        L.burn(inside, grid.gt, grid.wkt, grid.width, grid.height, L.Polygons([], lab.srs), area.union())
    L.burn(path, grid.gt, grid.wkt, grid.width, grid.height, L.Polygons([], lab.srs), None)
    K.relabel(path, now, inside, K.on_grid(original, grid.gt, grid.wkt, grid.width, grid.height))
    for p in (now, inside):
        if p:
            L.remove(p)


def _untouched(ds, block: int, rows: int, cols: int, original) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """Per block: the unlabelled pixels (of the run's ground, with ``original``), and of them those
    the run flagged."""
    n = np.zeros((rows, cols), np.int64)
    found = np.zeros((rows, cols), np.int64) if original is not None else None
    for r in range(rows):
        for c in range(cols):
            x, y = c * block, r * block
            w, h = min(block, ds.RasterXSize - x), min(block, ds.RasterYSize - y)
            free = (ds.ReadAsArray(x, y, w, h).reshape((-1, h, w)) == L.IGNORE).all(axis=0)
            if original is not None:
                o = original.ReadAsArray(x, y, w, h)
                free &= o != K.NODATA
                found[r, c] = int((free & (o > 0)).sum())
            n[r, c] = int(free.sum())
    return n, found


def split_blocks(ds, block: int, rows: int, cols: int, fraction: float, rng) -> np.ndarray:
    """Validation blocks: ``fraction`` of the blocks holding known ground, at least one with labels
    when two or more blocks hold labels (none when the raster has a single block)."""
    known = np.zeros((rows, cols), bool)
    labelled = np.zeros((rows, cols), bool)
    for r in range(rows):
        for c in range(cols):
            a = ds.ReadAsArray(c * block, r * block, min(block, ds.RasterXSize - c * block),
                               min(block, ds.RasterYSize - r * block))
            known[r, c] = (a != L.IGNORE).any()
            labelled[r, c] = ((a != L.IGNORE) & (a > 0)).any()
    val = np.zeros((rows, cols), bool)
    cand = np.argwhere(known)
    if len(cand) < 2 or fraction <= 0:
        return val
    n = max(1, int(round(fraction * len(cand))))
    lab = np.argwhere(labelled)
    chosen = []
    if len(lab) >= 2:
        chosen.append(tuple(lab[rng.integers(len(lab))]))
    for i in rng.permutation(len(cand)):
        if len(chosen) >= n:
            break
        t = tuple(cand[i])
        if t not in chosen:
            chosen.append(t)
    for r, c in chosen:
        val[r, c] = True
    return val


def _points(ds, block: int, val: np.ndarray, rng) -> Tuple[np.ndarray, np.ndarray]:
    """Samples of the labelled and of the known pixels of the training blocks, to centre chips on."""
    pos, known = [], []
    W, H = ds.RasterXSize, ds.RasterYSize
    step = max(1, int(math.sqrt(W * H / (4 * SAMPLE_POINTS))))
    for y in range(0, H, 512):
        n = min(512, H - y)
        a = ds.ReadAsArray(0, y, W, n).reshape((-1, n, W))
        k = (a != L.IGNORE).any(axis=0)
        lab = ((a != L.IGNORE) & (a > 0)).any(axis=0)
        yy, xx = np.mgrid[y:y + n, 0:W]
        inval = val[(yy // block).clip(0, val.shape[0] - 1), (xx // block).clip(0, val.shape[1] - 1)]
        sub = (slice(None, None, step), slice(None, None, step))
        pts = np.stack([yy[sub], xx[sub]], -1)
        known.append(pts[(k & ~inval)[sub]])
        here = np.stack([yy, xx], -1)[lab & ~inval]
        cap = max(1, SAMPLE_POINTS * n // H)
        pos.append(here[rng.choice(len(here), cap, replace=False)] if len(here) > cap else here)
    pos = np.concatenate(pos) if pos else np.zeros((0, 2), int)
    if len(pos) > SAMPLE_POINTS:
        pos = pos[rng.choice(len(pos), SAMPLE_POINTS, replace=False)]
    known = np.concatenate(known) if known else np.zeros((0, 2), int)
    return pos, known


class ChipSampler:
    """Random training chips over the scenes: centred on a labelled pixel with probability
    ``pos_p``, else on any known pixel; flipped and rotated; validation blocks ignored."""

    def __init__(self, scenes: List[Scene], size: int, pos_p: float, seed: int):
        self.scenes, self.size, self.pos_p = [s for s in scenes if len(s.known)], size, pos_p
        if not self.scenes:
            raise InputError("no known ground is left for training once the validation blocks are held back: "
                             "label more, or give a larger area")
        self.rng = np.random.default_rng(seed)

    def chip(self) -> Tuple[np.ndarray, np.ndarray]:
        sc = self.scenes[int(self.rng.integers(len(self.scenes)))]
        pts = sc.positives if len(sc.positives) and self.rng.random() < self.pos_p else sc.known
        cy, cx = pts[int(self.rng.integers(len(pts)))]
        s = self.size
        jitter = int(self.rng.integers(-s // 4, s // 4 + 1)), int(self.rng.integers(-s // 4, s // 4 + 1))
        y = int(np.clip(cy - s // 2 + jitter[0], 0, max(0, sc.height - s)))
        x = int(np.clip(cx - s // 2 + jitter[1], 0, max(0, sc.width - s)))
        img, lab = sc.read(x, y, s)
        lab[:, sc.in_val(x, y, s)] = L.IGNORE
        k = int(self.rng.integers(4))
        img, lab = np.rot90(img, k, (1, 2)), np.rot90(lab, k, (1, 2))
        if self.rng.random() < 0.5:
            img, lab = img[:, :, ::-1], lab[:, :, ::-1]
        return np.ascontiguousarray(img, np.float32), np.ascontiguousarray(lab)

    def batch(self, n: int) -> Tuple[np.ndarray, np.ndarray]:
        items = [self.chip() for _ in range(n)]
        return np.stack([a for a, _ in items]), np.stack([b for _, b in items])


def val_windows(scene: Scene) -> List[Tuple[int, int, int, int]]:
    """The validation blocks as windows ``(x, y, w, h)`` of the scene's grid."""
    out = []
    for r, c in np.argwhere(scene.val_blocks):
        x, y = int(c) * scene.block, int(r) * scene.block
        out.append((x, y, min(scene.block, scene.width - x), min(scene.block, scene.height - y)))
    return out
