"""Does each flagged region look like the tailings the model learnt from?  Regions marked for review.

A scene unlike the training data makes false alarms that the scene-wide check and the unreliable
tiles do not point at (bare fields, beaches, flats in tiles that score as usual).  Here each
stride-32 location of the scene (the encoder's deepest features and their 7 x 7 mean, as the veto
reads them: ``training/veto.py``) is compared with the model's training locations that hold
tailings (the ``replay`` sample in its metadata): projected on the replay's principal axes, each
axis divided by its spread over the replay, the mean distance to the ``k`` nearest
tailings-holding training locations.  A region's distance is that of its most tailings-like
location (a real facility has some ground like the facilities the model learnt from, a field that
only resembles one has none), divided by the ``threshold`` that the ``likeness`` metadata holds:
the distance beyond which lie 2 % of the training sites' true tailings area (measured on the
regions the shipped model flags on its training tiles: ``python -m training likeness``).  A
region beyond 1 is marked for review (``for_review`` = 1 in the polygon layer).

Memory: a float per 32 x 32 pixels of the working grid (the distances), accumulated tile by tile
while the stream runs; the regions are read from the polygon layer afterwards, burnt once on a
grid of 8 x 8 working pixels.
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import numpy as np

from ..errors import ModelError
from ..grid import Grid

STRIDE = 32        # the encoder's deepest level: a location is 32 x 32 working pixels
CONTEXT = 7        # its surroundings: the mean of 7 x 7 locations (training/veto.CONTEXT)
POSITIVE = 0.05    # a training location "holds tailings" from this share of its pixels (veto.POSITIVE_LOCATION)
SUB = 4            # regions are burnt on a grid of STRIDE / SUB working pixels

# The polygon layer's review fields: ``for_review`` (written here) and the analyst's decision
# (``review``: written by the plugin's review queue, read by training's "improve from my review").
FOR_REVIEW = "for_review"
REVIEW = "review"
ACCEPTED, REJECTED, UNREVIEWED = "accepted", "rejected", "unreviewed"


def unpack(s: str, shape) -> np.ndarray:
    """A float16 array of a model's metadata (base64), as float32 (``training.veto.pack`` writes them)."""
    return np.frombuffer(base64.b64decode(s), np.float16).astype(np.float32).reshape(shape)


@dataclass(frozen=True)
class Likeness:
    feature: str                 # the graph tensor (N, C, h, w) of the encoder's deepest level
    mu: np.ndarray               # (2C,) the replay's standardisation
    sd: np.ndarray
    comps: np.ndarray            # (k, 2C) its principal axes
    spread: np.ndarray           # (k + 1,) each projected axis's (and the residual's) spread over the replay
    positives: np.ndarray        # (m, k + 1) the tailings-holding replay locations, divided by ``spread``
    k: int
    threshold: float

    @classmethod
    def from_metadata(cls, extra: Dict, label: str = "the model") -> Optional["Likeness"]:
        """From a model's metadata (``replay``, ``likeness`` and the ``ood`` feature's name); None
        when it has not all three.  Nonsense (NaN, a threshold <= 0) is a :class:`ModelError`."""
        rep, lk, ood = extra.get("replay"), extra.get("likeness"), extra.get("ood") or {}
        if not rep or not lk or not ood.get("feature"):   # (the ``ood`` feature: a fine-tuned copy renames it)
            return None
        try:
            c, k, n = int(rep["channels"]), int(rep["components_n"]), int(rep["samples_n"])
            mu, sd = unpack(rep["mean"], (c,)), unpack(rep["std"], (c,))
            comps = unpack(rep["components"], (k, c))
            samples = unpack(rep["samples"], (n, k + 1))
            share = unpack(rep["positive_share"], (n,))
            kn, thr = int(lk["k"]), float(lk["threshold"])
            feature = str(ood["feature"])
        except (KeyError, TypeError, ValueError) as e:
            raise ModelError("%s: its replay or likeness metadata cannot be read (%s)" % (label, e)) from None
        arrays = (mu, sd, comps, samples, share)
        if not all(np.isfinite(a).all() for a in arrays) or not np.isfinite(thr) or thr <= 0 or kn < 1:
            raise ModelError("%s: its likeness metadata holds NaN, infinite or non-positive values "
                             "(threshold %r, k %r)" % (label, thr, kn))
        spread = np.maximum(samples.std(axis=0), 1e-6)
        pos = samples[share >= POSITIVE] / spread
        if len(pos) < kn:
            raise ModelError("%s: its replay holds %d tailings locations, fewer than k = %d" % (label, len(pos), kn))
        return cls(feature, mu, np.maximum(sd, 1e-6), comps, spread, pos.astype(np.float32), kn, thr)

    def distances(self, maps: np.ndarray) -> np.ndarray:
        """(n, h, w) distances of tiles' deepest features (n, C, h, w), each divided by the threshold."""
        n, c, h, w = maps.shape
        f = np.concatenate([maps, context(maps)], axis=1).transpose(0, 2, 3, 1).reshape(-1, 2 * c)
        z = (f - self.mu) / self.sd
        t = z @ self.comps.T
        r = np.linalg.norm(z - t @ self.comps, axis=1, keepdims=True) / np.sqrt(z.shape[1])
        p = np.concatenate([t, r], axis=1) / self.spread
        q = self.positives
        d2 = (p * p).sum(1)[:, None] + (q * q).sum(1)[None] - 2.0 * (p @ q.T)
        d = np.sqrt(np.maximum(d2, 0.0))
        near = np.partition(d, self.k - 1, axis=1)[:, :self.k]
        return (near.mean(axis=1) / self.threshold).reshape(n, h, w).astype(np.float32)


def context(maps: np.ndarray) -> np.ndarray:
    """The 7 x 7 mean of each location (padding not counted: torch's avg_pool2d with
    ``count_include_pad=False``), (n, C, h, w)."""
    r = CONTEXT // 2
    n, c, h, w = maps.shape
    pad = np.zeros((n, c, h + 2 * r + 1, w + 2 * r + 1), np.float64)
    pad[:, :, r + 1:r + 1 + h, r + 1:r + 1 + w] = maps
    s = pad.cumsum(2).cumsum(3)
    box = s[:, :, CONTEXT:, CONTEXT:] - s[:, :, :-CONTEXT, CONTEXT:] - s[:, :, CONTEXT:, :-CONTEXT] + s[:, :, :-CONTEXT, :-CONTEXT]
    ones = np.zeros((h + 2 * r + 1, w + 2 * r + 1))
    ones[r + 1:r + 1 + h, r + 1:r + 1 + w] = 1
    so = ones.cumsum(0).cumsum(1)
    cnt = so[CONTEXT:, CONTEXT:] - so[:-CONTEXT, CONTEXT:] - so[CONTEXT:, :-CONTEXT] + so[:-CONTEXT, :-CONTEXT]
    return (box / cnt).astype(np.float32)


class DistanceGrid:
    """The distances of a run's locations on the working grid (one float per 32 x 32 pixels; where
    tiles overlap, their mean)."""

    def __init__(self, likeness: Likeness, width: int, height: int, output: int = 0):
        self.likeness, self.width, self.height = likeness, width, height
        self.shape = ((height + STRIDE - 1) // STRIDE, (width + STRIDE - 1) // STRIDE)
        self.sums = np.zeros(self.shape, np.float64)
        self.counts = np.zeros(self.shape, np.int32)
        self.seen = np.full(self.shape, -(1 << 30), np.int32)   # how much of each location's surroundings its tiles saw
        self.output = output   # which of the session's extra outputs holds the features

    def add(self, maps: np.ndarray, boxes) -> None:
        """Tiles' deepest features (n, C, h, w) and their boxes (x, y, w, h) on the working grid.
        Where tiles overlap, a location's distance is that of the tile that sees the most of its
        7 x 7 surroundings (the others' are a tile edge's), the mean of those that see as much."""
        d = self.likeness.distances(maps)
        for k, (x, y, tw, th) in enumerate(boxes):
            hh, ww = (th + STRIDE - 1) // STRIDE, (tw + STRIDE - 1) // STRIDE   # (beyond: the batch's zeros)
            cy = np.minimum((y + STRIDE * np.arange(hh) + STRIDE // 2) // STRIDE, self.shape[0] - 1)
            cx = np.minimum((x + STRIDE * np.arange(ww) + STRIDE // 2) // STRIDE, self.shape[1] - 1)
            seen = np.add.outer(_seen(cy, hh, self.shape[0]), _seen(cx, ww, self.shape[1]))
            iy, ix = np.meshgrid(cy, cx, indexing="ij")
            best = self.seen[iy, ix]
            more, same = seen > best, seen == best
            self.sums[iy[more], ix[more]] = 0.0
            self.counts[iy[more], ix[more]] = 0
            keep = more | same
            self.sums[iy[keep], ix[keep]] += d[k, :hh, :ww][keep]   # (one tile: no location twice)
            self.counts[iy[keep], ix[keep]] += 1
            self.seen[iy, ix] = np.maximum(best, seen)

    def values(self) -> np.ndarray:
        """(rows, cols) mean distance per location; +inf where no tile saw it."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.sums / np.maximum(self.counts, 1), np.inf)


def _seen(cells: np.ndarray, n: int, total: int) -> np.ndarray:
    """Per location of a tile's row (or column) ``cells`` (its n grid indices): how many of its
    surroundings' rows (columns) that exist in the scene lie in the tile."""
    r = CONTEXT // 2
    i = np.arange(n)
    inside = np.minimum(i + r, n - 1) - np.maximum(i - r, 0) + 1
    scene = np.minimum(cells + r, total - 1) - np.maximum(cells - r, 0) + 1
    return (inside - scene).astype(np.int32)   # 0 at best: all of the scene's surroundings seen


def region_distances(layer, grid: DistanceGrid, gt: Tuple[float, ...], wkt: str) -> Dict[int, float]:
    """fid -> the distance of each polygon's most tailings-like location (``gt``, ``wkt``: the
    working grid's georeferencing).  The polygons are burnt once on a grid of 8 x 8 working pixels
    (a polygon no sub-cell centre falls in: the location under a point on its surface)."""
    from osgeo import gdal
    from ..output.region_stats import _burn_fids
    vals = grid.values().astype(np.float32)
    rows, cols = grid.shape
    step = STRIDE // SUB
    work = Grid(tuple(gt), cols * STRIDE, rows * STRIDE)
    mem = gdal.GetDriverByName("MEM").Create("", cols * SUB, rows * SUB, 1, gdal.GDT_Int32)
    mem.SetGeoTransform(work.at_resolution(step).gt)
    mem.SetProjection(wkt)
    layer.ResetReading()
    _burn_fids(mem, layer)
    fids = mem.GetRasterBand(1).ReadAsArray()
    mem = None
    cells = np.repeat(np.repeat(vals, SUB, axis=0), SUB, axis=1)
    hit = fids > 0
    out: Dict[int, float] = {}
    if hit.any():
        f, v = fids[hit], cells[hit]
        m = np.full(int(f.max()) + 1, np.inf)
        np.minimum.at(m, f, v)
        out = {int(i): float(m[i]) for i in np.unique(f)}
    layer.ResetReading()
    for feat in layer:
        fid = feat.GetFID()
        if fid in out:
            continue
        g = feat.GetGeometryRef()
        if g is None or g.IsEmpty():
            continue
        pt = g.PointOnSurface()
        c, r = (int(v) for v in work.at_resolution(STRIDE).pixel_of(pt.GetX(), pt.GetY()))
        out[fid] = float(vals[min(max(r, 0), rows - 1), min(max(c, 0), cols - 1)])
    return out


def mark_layer(gpkg_path: str, layer_name: str, grid: DistanceGrid, gt, wkt) -> Dict[str, object]:
    """Add ``for_review`` (1: unlike the training tailings) and ``tailings_distance`` (the region's
    distance / the threshold; beyond 1 marked) to the polygon layer; the summary for the report."""
    from osgeo import ogr
    ds = ogr.Open(gpkg_path, 1)
    layer = ds.GetLayerByName(layer_name)
    dist = region_distances(layer, grid, gt, wkt)
    layer.CreateField(ogr.FieldDefn(FOR_REVIEW, ogr.OFTInteger))
    layer.CreateField(ogr.FieldDefn("tailings_distance", ogr.OFTReal))
    marked = total = 0
    marked_ha = total_ha = 0.0
    ds.StartTransaction()
    layer.ResetReading()
    for feat in layer:
        d = dist.get(feat.GetFID())
        ha = feat.GetFieldAsDouble("area_ha")
        total += 1
        total_ha += ha
        if d is None or not np.isfinite(d):
            continue
        review = d > 1.0
        feat.SetField(FOR_REVIEW, int(review))
        feat.SetField("tailings_distance", round(d, 3))
        layer.SetFeature(feat)
        if review:
            marked += 1
            marked_ha += ha
    ds.CommitTransaction()
    layer = ds = None
    return {"regions": marked, "regions_total": total, "area_ha": round(marked_ha, 2),
            "flagged_ha": round(total_ha, 2)}
