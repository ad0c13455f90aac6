"""Which change is certain: each year's confidence and its distance to the edge of the raster it
was segmented from.

Each year's *margin* says how far its run was from deciding otherwise: for a binary model, how far
the probability (from ``<stem>_confidence.tif`` beside the class raster: the probability of the
assigned class, percent) lies from the model's threshold (``TM_THRESHOLD``), as a share of the way
from the threshold to certainty (a model with threshold 0.3 that says 0.44 is 20 % of the way to
tailings; one that says 0.03 is 90 % of the way to background); for other models, how far the
assigned class's probability is above one half.  A raw probability would not do: a model whose
threshold is 0.3 is rarely 70 % sure of the tailings it finds, and every pond it saw disappear
would be doubted.

A change is doubtful by confidence when either year is on the fence (margin below
:data:`MARGIN_MIN`, 5 %) or both are unsure together (margins adding up to less than
:data:`MARGIN_SUM`, 50 %): two runs of the same imagery that disagree are each close to their
threshold, one just above, one just below.

A pixel of one year is also *doubtful* when

- it lies within :data:`EDGE_PX` (32) pixels of the edge of the raster the model segmented, or of
  that raster's no data (outside the scene, outside an area of interest), and that edge is not the
  other year's raster's too (none of the other's edges within :data:`EDGE_TOLERANCE` pixels,
  :func:`own_edges`): there one run saw the ground on one side only and the other saw more, and two
  runs of the same imagery disagree.  Two years segmented over the same window (a
  batch's facility areas) saw the same ground around each pixel: their edges are comparable.

A change (a pixel whose class in the first year differs from the last) is *uncertain* when it is
doubtful by confidence or the pixel is doubtful (near an edge) in either of the two years, else
certain.  A pond that appears or disappears
between the years is seen with high confidence in both, away from the edges: certain.  Where a
polygon layer (as the analyst edited it) differs from its run's class raster, the polygons are
the analyst's judgement and that year is not doubtful there (its margin counts as whole).

A class raster that no model made (no ``TM_MODEL`` in its metadata: drawn by hand, another tool)
has no model edges (the other year's near its own edges is doubtful); a polygon layer without its
class raster has unknown edges (not compared); one without a confidence raster (older runs, ``--no-confidence``) has no
known confidence: its change counts as certain unless near an edge, with a warning.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Optional

import numpy as np
from osgeo import gdal

from .. import provenance

MARGIN_MIN = 5       # percent of the way from the threshold to certainty: below it, a year is on the fence
MARGIN_SUM = 50      # the two years' margins together: below it, both were unsure
EDGE_PX = 32
EDGE_TOLERANCE = 2
FAR = EDGE_PX + 1
WHOLE = 100          # a doubt raster (uint16): the margin (percent) x 256 + the distance to an edge (FAR: beyond EDGE_PX)
_NO_DIST = 65535
ROWS = 512


@dataclass(frozen=True)
class Evidence:
    class_raster: Optional[str]     # the run's class raster (the input, or the one beside a polygon layer)
    confidence: Optional[str]       # its confidence raster, when there
    model_edges: bool               # whether a model made it (its edges lack context)
    threshold: Optional[float] = None   # a binary model's threshold (TM_THRESHOLD), else None


def margin(conf: np.ndarray, cls: np.ndarray, threshold: Optional[float]) -> np.ndarray:
    """Percent of the way from deciding otherwise to certainty (0-100, uint8) of a run's pixels:
    ``conf`` its confidence (percent), ``cls`` its classes; ``threshold`` a binary model's."""
    c = conf.astype(np.float32) / 100.0
    if threshold is not None and 0.0 < threshold < 1.0:
        p = np.where(cls == 1, c, 1.0 - c)          # the probability of tailings
        m = np.where(cls == 1, (p - threshold) / (1.0 - threshold), (threshold - p) / threshold)
    else:
        m = (c - 0.5) / 0.5
    return np.rint(np.clip(m, 0.0, 1.0) * 100).astype(np.uint8)


def _binary_threshold(made: provenance.Provenance) -> Optional[float]:
    t = made.threshold
    if len(made.classes) != 2 or made.layout or t is None:
        return None
    return t if 0.0 < t < 1.0 else None


def confidence_beside(class_raster: str) -> Optional[str]:
    """The confidence raster of a run's class raster: the one its report (``<stem>_report.json``)
    names, else ``<stem>_confidence.tif`` beside it; None when there is none."""
    folder, name = os.path.split(class_raster)
    stem = name[:-len("_classes.tif")] if name.endswith("_classes.tif") else os.path.splitext(name)[0]
    report = os.path.join(folder, stem + "_report.json")
    if os.path.isfile(report):
        try:
            with open(report, encoding="utf-8") as fh:
                named = (json.load(fh).get("outputs") or {}).get("confidence")
        except (OSError, ValueError, AttributeError):
            named = None
        if isinstance(named, str):
            for p in (named, os.path.join(folder, os.path.basename(named))):
                if os.path.isfile(p):
                    return p
    p = os.path.join(folder, stem + "_confidence.tif")
    return p if os.path.isfile(p) else None


def evidence(class_raster: Optional[str]) -> Evidence:
    """What a year's class raster tells of its doubt (None: a polygon layer without one)."""
    if not class_raster:
        return Evidence(None, None, False)
    ds = gdal.Open(class_raster)
    made, size = provenance.read(ds.GetMetadata()), (ds.RasterXSize, ds.RasterYSize)
    ds = None
    conf = confidence_beside(class_raster)
    if conf is not None:
        cds = gdal.Open(conf)
        if (cds.RasterXSize, cds.RasterYSize) != size:
            conf = None   # (not this raster's: a renamed or replaced file)
        cds = None
    return Evidence(class_raster, conf, bool(made.model), _binary_threshold(made))


def doubt_raster(ev: Evidence, path: str) -> Optional[str]:
    """On the class raster's own grid, per pixel: its :func:`margin` x 256 (:data:`WHOLE` when its
    confidence is unknown) + its distance to an edge in pixels (``FAR`` beyond :data:`EDGE_PX`), a
    uint16 GeoTIFF at ``path``; None when nothing there can be doubted (no class raster: a polygon
    layer without one)."""
    if ev.class_raster is None:
        return None
    src = gdal.Open(ev.class_raster)
    W, H = src.RasterXSize, src.RasterYSize
    drv = gdal.GetDriverByName("GTiff")
    opts = ["TILED=YES", "COMPRESS=DEFLATE"]
    prox = None
    if ev.model_edges:
        edge = drv.Create(path + ".edge.tif", W, H, 1, gdal.GDT_Byte, options=opts)
        for y in range(0, H, ROWS):
            h = min(ROWS, H - y)
            a = src.GetRasterBand(1).ReadAsArray(0, y, W, h) == 255
            a[:, 0] = a[:, -1] = True
            if y == 0:
                a[0] = True
            if y + h == H:
                a[-1] = True
            edge.GetRasterBand(1).WriteArray(a.astype(np.uint8), 0, y)
        prox = drv.Create(path + ".prox.tif", W, H, 1, gdal.GDT_UInt16, options=opts)
        gdal.ComputeProximity(edge.GetRasterBand(1), prox.GetRasterBand(1),
                              ["VALUES=1", "DISTUNITS=PIXEL", "MAXDIST=%d" % EDGE_PX, "NODATA=%d" % _NO_DIST])
        edge = None
    conf = gdal.Open(ev.confidence) if ev.confidence else None
    out = drv.Create(path, W, H, 1, gdal.GDT_UInt16, options=opts)
    out.SetGeoTransform(src.GetGeoTransform())
    out.SetProjection(src.GetProjection())
    for y in range(0, H, ROWS):
        h = min(ROWS, H - y)
        m = np.full((h, W), WHOLE, np.uint16)
        if conf is not None:
            m = margin(conf.GetRasterBand(1).ReadAsArray(0, y, W, h), src.GetRasterBand(1).ReadAsArray(0, y, W, h),
                       ev.threshold).astype(np.uint16)
        dist = np.full((h, W), FAR, np.uint16)
        if prox is not None:
            p = prox.GetRasterBand(1).ReadAsArray(0, y, W, h)
            dist = np.where(p != _NO_DIST, np.minimum(p, EDGE_PX), FAR).astype(np.uint16)
        out.GetRasterBand(1).WriteArray(m * 256 + dist, 0, y)
    out = prox = conf = src = None
    for extra in (path + ".edge.tif", path + ".prox.tif"):
        if os.path.exists(extra):
            os.remove(extra)
    return path


def own_edges(first: str, last: str, size, path: str) -> str:
    """Which pixels of the grid lie within :data:`EDGE_PX` of the edge of the raster one year was
    segmented from and not of the other's: ``first`` and ``last`` the years' doubt rasters on the
    grid; a uint8 raster at ``path`` (bit 1: near the first year's own edge, bit 2: the last's).
    An edge is the other's too where the other's lies within :data:`EDGE_TOLERANCE` pixels; pixels
    between two edges that are each one year's own (the strip where two tiles overlap) are near
    both, whatever their distances."""
    W, H = size
    drv = gdal.GetDriverByName("GTiff")
    opts = ["TILED=YES", "COMPRESS=DEFLATE"]
    names = [path + ".%s.tif" % k for k in ("ea", "eb", "pa", "pb", "oa", "ob", "na", "nb")]
    ea, eb, pa, pb, oa, ob, na, nb = [drv.Create(n, W, H, 1, gdal.GDT_Byte if k < 2 or k in (4, 5) else
                                                 gdal.GDT_UInt16, options=opts) for k, n in enumerate(names)]
    srcs = [gdal.Open(first), gdal.Open(last)]
    for y in range(0, H, ROWS):
        h = min(ROWS, H - y)
        for src, e in zip(srcs, (ea, eb)):
            d = src.GetRasterBand(1).ReadAsArray(0, y, W, h) & 255
            e.GetRasterBand(1).WriteArray((d <= EDGE_TOLERANCE).astype(np.uint8), 0, y)
    prox = "VALUES=1 DISTUNITS=PIXEL NODATA=%d MAXDIST=%%d" % _NO_DIST
    gdal.ComputeProximity(ea.GetRasterBand(1), pa.GetRasterBand(1), (prox % (EDGE_TOLERANCE + 1)).split())
    gdal.ComputeProximity(eb.GetRasterBand(1), pb.GetRasterBand(1), (prox % (EDGE_TOLERANCE + 1)).split())
    for y in range(0, H, ROWS):
        h = min(ROWS, H - y)
        for e, other, o in ((ea, pb, oa), (eb, pa, ob)):
            own = (e.GetRasterBand(1).ReadAsArray(0, y, W, h) == 1) & \
                  (other.GetRasterBand(1).ReadAsArray(0, y, W, h) > EDGE_TOLERANCE)
            o.GetRasterBand(1).WriteArray(own.astype(np.uint8), 0, y)
    gdal.ComputeProximity(oa.GetRasterBand(1), na.GetRasterBand(1), (prox % EDGE_PX).split())
    gdal.ComputeProximity(ob.GetRasterBand(1), nb.GetRasterBand(1), (prox % EDGE_PX).split())
    out = drv.Create(path, W, H, 1, gdal.GDT_Byte, options=opts)
    out.SetGeoTransform(srcs[0].GetGeoTransform())
    out.SetProjection(srcs[0].GetProjection())
    for y in range(0, H, ROWS):
        h = min(ROWS, H - y)
        bits = np.zeros((h, W), np.uint8)
        for bit, n in ((1, na), (2, nb)):
            bits |= np.where(n.GetRasterBand(1).ReadAsArray(0, y, W, h) <= EDGE_PX, bit, 0).astype(np.uint8)
        out.GetRasterBand(1).WriteArray(bits, 0, y)
    out = ea = eb = pa = pb = oa = ob = na = nb = srcs = None
    for n in names:
        os.remove(n)
    return path


def uncertain(first, last, near_own: Optional[np.ndarray] = None) -> np.ndarray:
    """Which rows of pixels of the first and the last year are doubtful; each year ``(doubt rows or
    None, its run's classes or None, its classes)``: for a polygon layer (its run's classes given),
    only where the polygons agree with the run; ``near_own``: the rows of :func:`own_edges` (None:
    the edges are not compared)."""
    margins, agree = [], []
    for d, run, cls in (first, last):
        agree.append((run == cls) if run is not None else np.ones(cls.shape, bool))
        if d is None:     # (unknown: a polygon layer without its class raster)
            margins.append(np.full(cls.shape, WHOLE, np.int16))
            continue
        margins.append(np.where(agree[-1], np.minimum(d >> 8, WHOLE), WHOLE).astype(np.int16))
    out = (np.minimum(margins[0], margins[1]) < MARGIN_MIN) | (margins[0] + margins[1] < MARGIN_SUM)
    if near_own is None:
        return out
    return out | (((near_own & 1) != 0) & agree[0]) | (((near_own & 2) != 0) & agree[1])


RULE = ("a change is uncertain where either year's run was on the fence (less than %d %% of the way from its "
        "model's threshold to certainty) or both were unsure (their margins add up to less than %d %%), or the "
        "pixel is within %d px of the edge (or no data) of the raster one year was segmented from and not of the "
        "other's" % (MARGIN_MIN, MARGIN_SUM, EDGE_PX))


def warnings_for(label: str, ev: Evidence) -> Optional[str]:
    if ev.class_raster is None:
        return ("%s has no class raster beside it: its confidence and its raster's edges are unknown, its change "
                "counts as certain" % label)
    if ev.confidence is None:
        return ("%s has no confidence raster (%s): its confidence is unknown, its change counts as certain%s"
                % (label, os.path.basename(ev.class_raster)[:-len("_classes.tif")] + "_confidence.tif"
                   if ev.class_raster.endswith("_classes.tif") else "<stem>_confidence.tif",
                   " unless near its raster's edge" if ev.model_edges else ""))
    return None
